"""``hindsight audit report --html FILE``: the report as one self-contained HTML page.

Rules:

- Nothing on the page needs the network: the charts are SVG drawn by matplotlib and put
  inline, the style sheet is inline, and there is no script, font, image or link to fetch.
- Every string from the log is escaped: table cells and labels with ``html.escape``; in the
  charts matplotlib's SVG writer escapes text, and mathtext is off, so a ``$`` in a name is a
  dollar sign and never TeX.
- The tables' cells are those of the text report (``hindsight.audit.text``); this module only
  lays them out and draws the charts.
- The file is written whole or not at all: a temp file beside it, flushed, then renamed.
"""

from __future__ import annotations

import html
import io
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, PercentFormatter

from hindsight.audit import text
from hindsight.audit.common import shown
from hindsight.audit.fairness import CONFIDENCE, Band
from hindsight.audit.report import Day, Report, Retention
from hindsight.clock import iso
from hindsight.durable import fsync_dir
from hindsight.errors import ClientError

INK = "#222222"
MUTED = "#777777"
BAND = "#c9d9ec"
FAIR = "#1f5fa8"
FLAGGED = "#c0392b"
STARTED, COMMITTED, WIPED = "#1f5fa8", "#2e8b57", "#999999"
KEPT, HELD, DUE = "#2e8b57", "#d08c00", "#c0392b"
WHY_COLORS = {"expired": "#777777", "erased": "#c0392b"}
OTHER_WHY = "#7b4fa0"

LABEL_CHARS = 32  # a longer name is cut in a chart; its table shows it whole
WIDTH = 9.0  # inches; the page scales the charts down to its width

_RC: Any = {  # Any: matplotlib types the keys as a Literal of every rc name
    "svg.fonttype": "none",  # text stays text: selectable, and small
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "xtick.color": INK,
    "ytick.color": INK,
}
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_ID = re.compile(r'\bid="|url\(#|href="#')

# ---------------------------------------------------------------------------------------------
# charts


def _svg(draw: Callable[[], Figure], name: str, title: str) -> str:
    """The chart ``draw`` makes, as inline SVG markup: no XML prolog, no metadata, labelled
    for readers, its ids (and the references to them) prefixed with ``name``: matplotlib
    numbers each chart's ids from 1, and they must not collide in one page."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_RC):  # axes take some settings when made, some when saved
        draw().savefig(buffer, format="svg", metadata={"Date": None})
    markup = buffer.getvalue()
    markup = _METADATA.sub("", markup[markup.index("<svg") :], count=1)
    # Only inside tags: text from the log is in element content, where < and > are escaped.
    markup = _TAG.sub(lambda tag: _ID.sub(rf"\g<0>{name}-", tag.group(0)), markup)
    return markup.replace("<svg ", f'<svg role="img" aria-label="{_e(title)}" ', 1)


def _label(name: str) -> str:
    name = shown(name)
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "…"


def _integer_ticks(axis: Axis) -> None:
    axis.set_major_locator(MaxNLocator(nbins=4, integer=True))


def _rows(ax: Axes, names: Sequence[str]) -> None:
    """One row per name, the first at the top."""
    ax.set_yticks(range(len(names)), [_label(name) for name in names])
    ax.set_ylim(len(names) - 0.5, -0.5)


def _daily_chart(days: Mapping[date, Day]) -> Figure:
    figure = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    series = (
        ("calls started", [d.started for d in days.values()], STARTED),
        ("committed", [d.committed for d in days.values()], COMMITTED),
        ("wiped", [d.wiped for d in days.values()], WIPED),
    )
    at = _numbers(list(days))
    for ax, (label, counts, color) in zip(axes, series, strict=True):
        ax.bar(at, counts, width=0.8, color=color)
        ax.set_ylabel(label)
        _integer_ticks(ax.yaxis)
    axes[-1].set_xlim(at[0] - 1, at[-1] + 1)  # a day either side: days, not hours, on the axis
    _dates(axes[-1].xaxis)
    return figure


def _numbers(moments: Sequence[date]) -> list[float]:
    """Dates (or datetimes) as matplotlib plots them: days since its epoch."""
    return [float(day) for day in date2num(moments)]  # type: ignore[no-untyped-call]


def _dates(axis: Axis) -> None:
    """Tick ``axis`` (in matplotlib's float days) with dates, as concisely as they allow."""
    locator = AutoDateLocator(minticks=3, maxticks=10)  # type: ignore[no-untyped-call]
    axis.set_major_locator(locator)
    axis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]


def _fairness_chart(groups: Mapping[str, Band]) -> Figure:
    """Each group's band as a bar, its expected share as a tick and its sampled share as a
    dot, red with its name when outside the band."""
    bands = list(groups.values())
    rows = range(len(bands))
    figure = Figure(figsize=(WIDTH, 1.4 + 0.3 * len(bands)), layout="constrained")
    ax = figure.subplots()
    low = [b.low / b.calls for b in bands]
    high = [b.high / b.calls for b in bands]
    shares = [b.sampled / b.calls for b in bands]
    ax.barh(
        rows, [h - lo for lo, h in zip(low, high, strict=True)], left=low, height=0.6, color=BAND
    )
    ax.scatter([b.expected / b.calls for b in bands], rows, marker="|", s=220, color=INK)
    colors = [FAIR if b.flag is None else FLAGGED for b in bands]
    ax.scatter(shares, rows, s=40, color=colors, zorder=3)
    _rows(ax, list(groups))
    for tick, row, band in zip(ax.get_yticklabels(), rows, bands, strict=True):
        if band.flag is not None:
            tick.set_color(FLAGGED)
            tick.set_fontweight("bold")
            ax.annotate(
                band.flag,
                (shares[row], row),
                xytext=(7, 0),
                textcoords="offset points",
                va="center",
                color=FLAGGED,
            )
    ax.set_xlim(0, min(1.0, 1.15 * max(*high, *shares)) or 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of calls sampled")
    figure.legend(handles=_fairness_legend(), loc="outside upper left", ncols=4, frameon=False)
    return figure


def _fairness_legend() -> list[Patch | Line2D]:
    def dot(color: str, label: str) -> Line2D:
        return Line2D([], [], marker="o", linestyle="none", color=color, label=label)

    return [
        Patch(color=BAND, label=f"{100 * CONFIDENCE:g}% band"),
        Line2D([], [], marker="|", linestyle="none", markersize=12, color=INK, label="expected"),
        dot(FAIR, "sampled"),
        dot(FLAGGED, "outside its band"),
    ]


def _purpose_chart(retention: Retention) -> Figure:
    """Per purpose: its recordings (kept, held, due now) and the span of their retain_until."""
    purposes = retention.by_purpose
    figure = Figure(figsize=(WIDTH, 1.6 + 0.4 * len(purposes)), layout="constrained")
    counts, ends = figure.subplots(1, 2, sharey=True, width_ratios=(1, 1.4))
    held = [p.held for p in purposes.values()]
    due = [p.due_now for p in purposes.values()]
    kept = [p.recordings - h - d for p, h, d in zip(purposes.values(), held, due, strict=True)]
    left = [0] * len(purposes)
    for label, values, color in (("kept", kept, KEPT), ("held", held, HELD), ("due now", due, DUE)):
        bars = counts.barh(
            range(len(purposes)), values, left=left, height=0.6, color=color, label=label
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    counts.bar_label(bars, labels=[str(n) for n in left], padding=3)
    _rows(counts, list(purposes))
    counts.set_xlim(0, 1.15 * max(left))
    _integer_ticks(counts.xaxis)
    counts.set_xlabel("recordings")
    _retention_spans(ends, retention)
    figure.legend(loc="outside upper left", ncols=4, frameon=False)
    return figure


def _retention_spans(ax: Axes, retention: Retention) -> None:
    as_of = _numbers([retention.as_of])[0]
    ax.axvline(as_of, color=MUTED, linestyle="--", linewidth=1, label="report time")
    for row, p in enumerate(retention.by_purpose.values()):
        if p.earliest is not None and p.latest is not None:
            ax.plot(
                _numbers([p.earliest, p.latest]),
                [row, row],
                color=KEPT,
                linewidth=6,
                solid_capstyle="butt",
                marker="|",
                markersize=14,
            )
        if p.no_end:
            ax.annotate(
                f"{p.no_end} without an end",
                (as_of, row),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                color=INK,
            )
    _dates(ax.xaxis)
    ax.set_xlabel("retain_until, earliest to latest")


def _deletion_chart(deleted: Mapping[str, int]) -> Figure:
    whys = list(deleted)
    figure = Figure(figsize=(WIDTH, 1.2 + 0.35 * len(whys)), layout="constrained")
    ax = figure.subplots()
    colors = [WHY_COLORS.get(why, OTHER_WHY) for why in whys]
    bars = ax.barh(range(len(whys)), list(deleted.values()), height=0.6, color=colors)
    ax.bar_label(bars, padding=3)
    _rows(ax, whys)
    ax.set_xlim(0, 1.1 * max(deleted.values()))
    _integer_ticks(ax.xaxis)
    ax.set_xlabel("recordings deleted")
    return figure


# ---------------------------------------------------------------------------------------------
# the page


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(table: text.Table, flagged: Sequence[bool] = ()) -> str:
    """An HTML table; every cell escaped; ``flagged[i]`` marks row i."""
    if not table.rows:
        return '<p class="none">(none)</p>'
    classes = [' class="num"' if a == "r" else "" for a in table.align]
    head = "".join(f"<th{c}>{_e(h)}</th>" for c, h in zip(classes, table.header, strict=True))
    body = []
    for i, row in enumerate(table.rows):
        mark = ' class="flagged"' if i < len(flagged) and flagged[i] else ""
        cells = "".join(f"<td{c}>{_e(v)}</td>" for c, v in zip(classes, row, strict=True))
        body.append(f"<tr{mark}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _chart(name: str, title: str, draw: Callable[[], Figure] | None, empty: str) -> str:
    """The chart ``draw`` makes, in its ``<figure>``; without ``draw``, a line saying why
    there is none."""
    if draw is None:
        return f'<p class="none">{_e(empty)}</p>'
    caption = f"<figcaption>{_e(title)}</figcaption>"
    return f'<figure class="chart" id="chart-{name}">{caption}{_svg(draw, name, title)}</figure>'


def _section(name: str, title: str, *parts: str) -> str:
    return f'<section id="{name}"><h2>{_e(title)}</h2>{"".join(parts)}</section>'


def _summary(report: Report) -> str:
    facts = (
        *text.span_rows(report),
        ("log entries", str(report.entries)),
        ("first entry", report.first_time or "-"),
        ("last entry", report.last_time or "-"),
        ("retention as of", iso(report.retention.as_of)),
    )
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(shown(v))}</dd>" for k, v in facts)
    return f"<dl class=summary>{items}</dl>"


def _totals(report: Report) -> str:
    return _section(
        "totals",
        "Totals",
        _table(text.totals_table(report.totals)),
        _table(text.count_table("reason", report.totals.by_reason)),
        _table(text.count_table("purpose", report.totals.by_purpose)),
    )


def _daily(report: Report) -> str:
    days = report.per_day
    draw = (lambda: _daily_chart(days)) if days else None
    title = "Calls started, committed and wiped per day (UTC)"
    return _section("per-day", "Calls per day", _chart("per-day", title, draw, "No calls."))


def _fairness_group(what: str, groups: Mapping[str, Band]) -> str:
    banded = {name: band for name, band in groups.items() if band.calls}
    draw = (lambda: _fairness_chart(banded)) if banded else None
    title = f"Sampled share per {what}, against its {100 * CONFIDENCE:g}% band"
    flagged = [band.flag is not None for band in groups.values()]
    return (
        f"<h3>Per {_e(what)}</h3>"
        + _chart(f"fairness-{what}", title, draw, f"No {what} has a call in a sampling epoch.")
        + _table(text.fairness_table(what, groups), flagged)
    )


def _fairness(report: Report) -> str:
    note = "".join(
        f'<p class="note">{_e(line)}</p>' for line in text.fairness_note(report.fairness)
    )
    return _section(
        "fairness",
        "Sampling fairness",
        note,
        _fairness_group("agent", report.fairness.per_agent),
        _fairness_group("line", report.fairness.per_line),
    )


def _retention(report: Report) -> str:
    retention = report.retention
    draw = (lambda: _purpose_chart(retention)) if retention.by_purpose else None
    title = "Recordings by purpose, and when they may be kept until"
    return _section(
        "retention",
        "Recordings by purpose",
        _chart("purposes", title, draw, "No recordings exist."),
        _table(text.purpose_table(retention.by_purpose)),
        _table(text.retention_table(retention)),
    )


def _deletions(report: Report) -> str:
    deleted = report.retention.deleted
    draw = (lambda: _deletion_chart(deleted)) if sum(deleted.values()) else None
    return _section(
        "deletions",
        "Deletions by reason",
        _chart("deletions", "Recordings deleted, by why", draw, "No recording was deleted."),
        _table(text.deletion_table(report.retention.deletions)),
    )


def _groups(report: Report) -> str:
    return _section(
        "groups",
        "Per line and per agent",
        _table(text.group_table("line", report.per_line)),
        _table(text.group_table("agent", report.per_agent)),
    )


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 2em auto; max-width: 70em;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dt { color: #555; } dd { margin: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { padding: .25em .6em; border-bottom: 1px solid #e3e3e3; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.flagged td { background: #fbe3e0; color: #8e1f14; font-weight: bold; }
figure.chart { margin: 1em 0; } figcaption { color: #555; margin-bottom: .3em; }
figure.chart svg { max-width: 100%; height: auto; display: block; }
p.none, p.note { color: #555; }
"""


def render(report: Report) -> str:
    """The whole page: the totals, calls per day, sampling fairness, recordings by purpose,
    deletions by reason, then the figures per line and agent and the accesses."""
    body = "".join(
        (
            "<h1>Hindsight audit report</h1>",
            _summary(report),
            _totals(report),
            _daily(report),
            _fairness(report),
            _retention(report),
            _deletions(report),
            _groups(report),
            _section("accesses", "Accesses", _table(text.access_table(report.accesses))),
        )
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Hindsight audit report</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write(report: Report, path: Path) -> None:
    """Write the page to ``path`` whole or not at all; ClientError when it cannot be."""
    page = render(report).encode("utf-8")
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ClientError(f"cannot write {path}: {exc.strerror or exc}", 1) from exc
