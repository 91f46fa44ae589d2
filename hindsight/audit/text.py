"""A ``Report`` as plain-text tables with headings, for a terminal or a printed audit file.

The tables' cells are made here once, as ``Table``s, for this text and for the HTML page
(``hindsight.audit.html``); a name from the log is ``shown`` (quoted when it would not print
on one line), never escaped here: the page escapes every cell itself.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hindsight.audit.common import iso_or_none, shown
from hindsight.audit.fairness import CONFIDENCE, Band, Fairness, flagged
from hindsight.audit.report import Access, Figures, PurposeRetention, Report, Retention
from hindsight.clock import iso
from hindsight.retention import Deletion

# ---------------------------------------------------------------------------------------------
# rendering


def _fmt_seconds(value: float) -> str:
    return f"{value:.1f}"


@dataclass(frozen=True)
class Table:
    """Cells by row under a header; ``align`` holds one ``l`` or ``r`` per column."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    align: str


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    """Columns padded to their widest cell; ``align`` holds one ``l`` or ``r`` per column."""
    body = [list(row) for row in rows]
    if not body:
        return ["(none)"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def fmt(row: Sequence[str]) -> str:
        cells = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header), *(fmt(row) for row in body)]


def _lines(table: Table) -> list[str]:
    return _table(table.header, table.rows, table.align)


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([title, "-" * len(title), *lines])


def span_rows(report: Report) -> list[tuple[str, str]]:
    """The span asked about, when it is not the whole log."""
    rows = [("since", report.since), ("until", report.until)]
    return [(name, iso(moment)) for name, moment in rows if moment is not None]


def _summary(report: Report) -> str:
    rows = [
        *span_rows(report),
        ("log entries", str(report.entries)),
        ("first entry", shown(report.first_time or "-")),
        ("last entry", shown(report.last_time or "-")),
        ("retention as of", iso(report.retention.as_of)),
    ]
    return _section("Hindsight audit report", _table(("", ""), rows, "ll")[1:])


def totals_table(f: Figures) -> Table:
    rows = [
        ("calls started", str(f.started)),
        ("committed", str(f.committed)),
        ("wiped", str(f.wiped)),
        ("  of which lost in crash", str(f.lost_in_crash)),
        ("recordings deleted", str(f.deleted)),
        ("still open", str(f.open)),
        ("seconds kept", _fmt_seconds(f.seconds_kept)),
        ("seconds wiped", _fmt_seconds(f.seconds_wiped)),
        ("seconds rolled away", _fmt_seconds(f.rolled_seconds)),
    ]
    return Table(("figure", "value"), rows, "lr")


def count_table(what: str, counts: Mapping[str, int]) -> Table:
    return Table((what, "commits"), [(shown(k), str(v)) for k, v in counts.items()], "lr")


_GROUP_HEADER = (
    "started",
    "committed",
    "sampled",
    "marked",
    "wiped",
    "lost",
    "deleted",
    "open",
    "kept s",
    "wiped s",
    "rolled s",
    "purposes",
)


def _group_row(name: str, f: Figures) -> tuple[str, ...]:
    purposes = " ".join(f"{shown(p)}={n}" for p, n in f.by_purpose.items()) or "-"
    counts = (f.started, f.committed, f.by_reason["sampled"], f.by_reason["marked"], f.wiped)
    return (
        name,
        *(str(n) for n in counts),
        *(str(n) for n in (f.lost_in_crash, f.deleted, f.open)),
        *(_fmt_seconds(s) for s in (f.seconds_kept, f.seconds_wiped, f.rolled_seconds)),
        purposes,
    )


def group_table(what: str, groups: Mapping[str, Figures]) -> Table:
    rows = [_group_row(shown(name), figures) for name, figures in groups.items()]
    return Table((what, *_GROUP_HEADER), rows, "l" + "r" * 11 + "l")


_PURPOSE_HEADER = (
    "purpose",
    "recordings",
    "held",
    "resolved",
    "due now",
    "no end",
    "earliest retain_until",
    "latest retain_until",
)


def _purpose_row(name: str, p: PurposeRetention) -> tuple[str, ...]:
    counts = (p.recordings, p.held, p.resolved, p.due_now, p.no_end)
    return (
        name,
        *(str(n) for n in counts),
        iso_or_none(p.earliest) or "-",
        iso_or_none(p.latest) or "-",
    )


def purpose_table(purposes: Mapping[str, PurposeRetention]) -> Table:
    rows = [_purpose_row(shown(name), p) for name, p in purposes.items()]
    return Table(_PURPOSE_HEADER, rows, "lrrrrrll")


def retention_table(r: Retention) -> Table:
    rows = [
        ("recordings now", str(r.recordings)),
        ("  held", str(r.held)),
        ("  due now", str(r.due_now)),
        ("  overdue (over a day)", str(r.overdue)),
        *((f"deleted: {shown(why)}", str(n)) for why, n in r.deleted.items()),
    ]
    return Table(("figure", "value"), rows, "lr")


def _deletion_row(d: Deletion) -> tuple[str, ...]:
    why = f"{shown(d.why)} (premature)" if d.premature else shown(d.why)
    by = ["-" if text is None else shown(text) for text in (d.actor, d.reason)]
    return (str(d.seq), shown(d.call_id), why, iso(d.time), *by)


def deletion_table(deletions: Sequence[Deletion]) -> Table:
    header = ("log line", "call", "why", "when", "actor", "reason")
    return Table(header, [_deletion_row(d) for d in deletions], "rlllll")


def access_table(accesses: Sequence[Access]) -> Table:
    """Each recording's accesses together (recordings in the order first opened), each
    recording's in log order."""
    first: dict[str, int] = {}
    for access in accesses:
        first.setdefault(access.call_id, access.log_line)
    rows = [
        (shown(a.call_id), str(a.log_line), shown(a.time), shown(a.actor), shown(a.reason))
        for a in sorted(accesses, key=lambda a: (first[a.call_id], a.log_line))
    ]
    return Table(("call", "log line", "when", "actor", "reason"), rows, "lrlll")


_FAIRNESS_HEADER = (
    "calls",
    "sampled",
    "expected",
    "share %",
    "band",
    "band %",
    "one_in",
    "flag",
    "no epoch",
    "no-epoch sampled",
)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _fairness_row(name: str, b: Band) -> tuple[str, ...]:
    band_share = "-" if not b.calls else f"{_percent(b.share(b.low))}-{_percent(b.share(b.high))}"
    return (
        name,
        *(str(n) for n in (b.calls, b.sampled)),
        f"{b.expected:.1f}",
        _percent(b.share(b.sampled)),
        f"{b.low}-{b.high}" if b.calls else "-",
        band_share,
        ",".join(map(str, b.one_in)) or "-",
        _flag(b, "-"),
        *(str(n) for n in (b.without_epoch, b.sampled_without_epoch)),
    )


def _flag(band: Band, within: str) -> str:
    """The flag in capitals, to stand out in a column of dashes."""
    return within if band.flag is None else band.flag.upper()


def fairness_table(what: str, groups: Mapping[str, Band]) -> Table:
    rows = [_fairness_row(shown(name), band) for name, band in groups.items()]
    return Table((what, *_FAIRNESS_HEADER), rows, "l" + "r" * 7 + "l" + "rr")


def fairness_note(fairness: Fairness) -> list[str]:
    """What the fairness tables hold, and what they flag: a few paragraphs of prose."""
    totals, agents, lines = fairness.totals, fairness.per_agent, fairness.per_line
    outside = [
        f"{len(flagged(groups))} of {len(groups)} {what}"
        for what, groups in (("agents", agents), ("lines", lines))
    ]
    return [
        f"Each agent's and line's sampled calls against the {100 * CONFIDENCE:g}% band that a "
        "fair draw of 1 call in one_in keeps them in (exact binomial; Poisson-binomial over "
        "epochs with different one_in). calls: settled calls that announced their epoch's "
        "sampling purpose, not lost in a crash. Calls whose start names no sampling epoch "
        "are counted apart (no epoch), in no band.",
        f"All calls: {_overall(totals)}; {totals.without_epoch} without an epoch. "
        f"Outside their band: {', '.join(outside)}.",
    ]


def _overall(totals: Band) -> str:
    if not totals.calls:
        return "none in a sampling epoch"
    band = f"band {totals.low}-{totals.high}: {_flag(totals, 'within')}"
    return f"{totals.sampled} of {totals.calls} sampled, {band}"


def _fairness(fairness: Fairness) -> list[str]:
    paragraphs = [textwrap.fill(text, width=_NOTE_WIDTH) for text in fairness_note(fairness)]
    return [
        "\n\n".join(paragraphs),
        "",
        *_lines(fairness_table("agent", fairness.per_agent)),
        "",
        *_lines(fairness_table("line", fairness.per_line)),
    ]


_NOTE_WIDTH = 92


def render(report: Report) -> str:
    """Plain-text tables with headings, for a terminal or a printed audit file.

    Sampling fairness comes last, below the retention and access tables."""
    sections = [
        _summary(report),
        _section("Totals", _lines(totals_table(report.totals))),
        _section("Commits by reason", _lines(count_table("reason", report.totals.by_reason))),
        _section("Commits by purpose", _lines(count_table("purpose", report.totals.by_purpose))),
        _section("Per line", _lines(group_table("line", report.per_line))),
        _section("Per agent", _lines(group_table("agent", report.per_agent))),
        _section("Retention by purpose", _lines(purpose_table(report.retention.by_purpose))),
        _section("Retention totals", _lines(retention_table(report.retention))),
        _section("Deletions", _lines(deletion_table(report.retention.deletions))),
        _section("Accesses", _lines(access_table(report.accesses))),
        _section("Sampling fairness", _fairness(report.fairness)),
    ]
    return "\n\n".join(sections) + "\n"
