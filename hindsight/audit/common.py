"""What the auditor's modules share: the names of outcomes, reasons and deletions."""

from __future__ import annotations

from datetime import datetime

from hindsight.clock import iso

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
