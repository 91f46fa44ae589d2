"""What the auditor's modules share: the names of outcomes, reasons and deletions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hindsight.clock import iso, parse_iso
from hindsight.commitlog import LOG_NAME
from hindsight.errors import CommitLogError

REASONS = ("sampled", "marked")
NO_AGENT = "(none)"
UNKNOWN = "(unknown)"
DELETION_WHYS = ("expired", "erased")


def shown(value: object) -> str:
    """A name from the disk or the log, quoted when it would not print on one line as is."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def iso_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


@dataclass(frozen=True)
class Span:
    """The time range ``[since, until)`` an auditor asked about; an open end is None.

    Only what is counted or checked is limited: every line is still read and its chain
    checked, because that is the proof that nothing in the range was altered, and the rules
    need the history before it (which calls are open, which recordings exist)."""

    since: datetime | None = None
    until: datetime | None = None

    @property
    def whole(self) -> bool:
        return self.since is None and self.until is None

    def place(self, entry: Mapping[str, Any]) -> int:
        """-1 for a line before the range, 0 inside, 1 after, by its ``time``."""
        if self.whole:
            return 0
        try:
            moment = parse_iso(entry["time"])
        except ValueError as exc:
            raise CommitLogError(
                f"{LOG_NAME} line {entry['seq']}: time {entry['time']!r} cannot be read"
            ) from exc
        if self.since is not None and moment < self.since:
            return -1
        if self.until is not None and moment >= self.until:
            return 1
        return 0

    def describe(self) -> str:
        """``since … until …`` for a person; empty for the whole log."""
        since = f"since {iso(self.since)}" if self.since else ""
        until = f"until {iso(self.until)}" if self.until else ""
        return " ".join(part for part in (since, until) if part)
