"""A ``Report`` as plain-text tables with headings, for a terminal or a printed audit file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hindsight.audit.common import iso_or_none, shown
from hindsight.audit.report import Access, Figures, PurposeRetention, Report, Retention
from hindsight.clock import iso
from hindsight.retention import Deletion

# ---------------------------------------------------------------------------------------------
# rendering


def _fmt_seconds(value: float) -> str:
    return f"{value:.1f}"


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


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([title, "-" * len(title), *lines])


def _summary(report: Report) -> str:
    rows = [
        ("log entries", str(report.entries)),
        ("first entry", report.first_time or "-"),
        ("last entry", report.last_time or "-"),
        ("retention as of", iso(report.retention.as_of)),
    ]
    return _section("Hindsight audit report", _table(("", ""), rows, "ll")[1:])


def _totals_table(f: Figures) -> list[str]:
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
    return _table(("figure", "value"), rows, "lr")


def _count_table(what: str, counts: Mapping[str, int]) -> list[str]:
    return _table((what, "commits"), [(k, str(v)) for k, v in counts.items()], "lr")


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
    purposes = " ".join(f"{p}={n}" for p, n in f.by_purpose.items()) or "-"
    counts = (f.started, f.committed, f.by_reason["sampled"], f.by_reason["marked"], f.wiped)
    return (
        name,
        *(str(n) for n in counts),
        *(str(n) for n in (f.lost_in_crash, f.deleted, f.open)),
        *(_fmt_seconds(s) for s in (f.seconds_kept, f.seconds_wiped, f.rolled_seconds)),
        purposes,
    )


def _group_table(what: str, groups: Mapping[str, Figures]) -> list[str]:
    rows = [_group_row(name, figures) for name, figures in groups.items()]
    return _table((what, *_GROUP_HEADER), rows, "l" + "r" * 11 + "l")


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


def _purpose_table(purposes: Mapping[str, PurposeRetention]) -> list[str]:
    rows = [_purpose_row(name, p) for name, p in purposes.items()]
    return _table(_PURPOSE_HEADER, rows, "lrrrrrll")


def _retention_table(r: Retention) -> list[str]:
    rows = [
        ("recordings now", str(r.recordings)),
        ("  held", str(r.held)),
        ("  due now", str(r.due_now)),
        ("  overdue (over a day)", str(r.overdue)),
        *((f"deleted: {why}", str(n)) for why, n in r.deleted.items()),
    ]
    return _table(("figure", "value"), rows, "lr")


def _deletion_row(d: Deletion) -> tuple[str, ...]:
    why = f"{d.why} (premature)" if d.premature else d.why
    by = ["-" if text is None else shown(text) for text in (d.actor, d.reason)]
    return (str(d.seq), shown(d.call_id), why, iso(d.time), *by)


def _deletion_table(deletions: Sequence[Deletion]) -> list[str]:
    header = ("log line", "call", "why", "when", "actor", "reason")
    return _table(header, [_deletion_row(d) for d in deletions], "rlllll")


def _access_table(accesses: Sequence[Access]) -> list[str]:
    """Each recording's accesses together (recordings in the order first opened), each
    recording's in log order."""
    first: dict[str, int] = {}
    for access in accesses:
        first.setdefault(access.call_id, access.log_line)
    rows = [
        (shown(a.call_id), str(a.log_line), a.time, shown(a.actor), shown(a.reason))
        for a in sorted(accesses, key=lambda a: (first[a.call_id], a.log_line))
    ]
    return _table(("call", "log line", "when", "actor", "reason"), rows, "lrlll")


def render(report: Report) -> str:
    """Plain-text tables with headings, for a terminal or a printed audit file."""
    sections = [
        _summary(report),
        _section("Totals", _totals_table(report.totals)),
        _section("Commits by reason", _count_table("reason", report.totals.by_reason)),
        _section("Commits by purpose", _count_table("purpose", report.totals.by_purpose)),
        _section("Per line", _group_table("line", report.per_line)),
        _section("Per agent", _group_table("agent", report.per_agent)),
        _section("Retention by purpose", _purpose_table(report.retention.by_purpose)),
        _section("Retention totals", _retention_table(report.retention)),
        _section("Deletions", _deletion_table(report.retention.deletions)),
        _section("Accesses", _access_table(report.accesses)),
    ]
    return "\n\n".join(sections) + "\n"
