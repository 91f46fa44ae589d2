"""The retention state of every recording, rebuilt from the commit log: the log is the truth.

A ``Ledger`` is fed every log entry in order through ``apply`` (``rebuild`` does that for a
whole log); the daemon uses it to answer ``recordings``, ``resolve``, ``extend``, ``hold``,
``release``, ``erase`` and ``purge``, the auditor to find overdue recordings and to report
deletions.

Rules:

- State changes only in ``apply``, and only from the retention events (``call_committed`` and
  ``recording_*``); every other event is ignored. The decisions (``resolve``, ``extend``,
  ``check_*``) never change anything: the daemon logs the event they allow, then applies the
  logged entry, so the ledger holds exactly what the log says.
- A recording has a ``retain_until`` per purpose: a time, or None for a purpose kept until it
  is resolved that has no ``max_retention_days``. It is due at ``now`` when it is not held and
  every purpose's ``retain_until`` is a time no later than ``now``.
- Limits count from the call's end (``ended`` in ``call_committed``; the commit's ``time`` in
  logs written before that field).
- ``resolve`` ends a purpose ``grace_days`` from now, never later than the call's limit
  (end + ``max_retention_days``) and never later than the purpose's current ``retain_until``:
  a purpose that is served can only end sooner. A purpose no longer configured has no grace.
- ``extend`` makes ``retain_until`` at least now + ``days`` (never shorter); past the limit is
  ``not_allowed``. A purpose that is no longer configured cannot be extended
  (``unknown_purpose``), and neither can one kept until resolved without an end
  (``not_allowed``: it already has no end; resolve it first).
- A legal hold beats every rule: a held recording is never due and never erasable. Holds do
  not stack: holding a held recording, or releasing one that is not held, is ``not_allowed``,
  so one release always ends the one hold there is.
- A deleted recording is gone: every decision on it is ``unknown_call``, like a call that was
  never kept; its deletion (who, why, when, and its state then) stays in ``deletions``.
- ``Recording`` and ``Deletion`` are snapshots: they never change as the ledger goes on.
- No I/O but reading the log in ``rebuild``, which does not check the chain (whoever opened
  the log did); a retention event that cannot be read is a ``CommitLogError`` naming its line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hindsight.clock import iso, parse_iso
from hindsight.commitlog import LOG_NAME, read_entries
from hindsight.config import PurposeConfig
from hindsight.errors import CommitLogError, ProtocolError
from hindsight.replies import PurposeRetention, RecordingRow

OVERDUE_SLACK = timedelta(days=1)
# The events ``Ledger.apply`` takes into account; it ignores every other.
RETENTION_EVENTS = frozenset(
    {
        "call_committed",
        "recording_resolved",
        "recording_extended",
        "recording_held",
        "recording_released",
        "recording_deleted",
    }
)


@dataclass(frozen=True)
class Terms:
    """A purpose's retention terms, as configured."""

    name: str
    retention_days: float | None
    until_resolved: bool
    grace_days: float
    max_retention_days: float | None

    @classmethod
    def of(cls, purpose: PurposeConfig) -> Terms:
        return cls(
            purpose.name,
            purpose.retention_days,
            purpose.until_resolved,
            purpose.grace_days,
            purpose.max_retention_days,
        )

    def limit(self, ended: datetime) -> datetime | None:
        """The latest a recording of a call that ended at ``ended`` may be kept, or None."""
        if self.max_retention_days is None:
            return None
        return ended + timedelta(days=self.max_retention_days)

    def first_retain_until(self, ended: datetime) -> datetime | None:
        """``retain_until`` at commit: the limit for ``until_resolved``, else the term."""
        limit = self.limit(ended)
        if self.until_resolved or self.retention_days is None:
            return limit
        return _earliest(ended + timedelta(days=self.retention_days), limit)


@dataclass(frozen=True, slots=True)
class PurposeState:
    retain_until: datetime | None
    resolved: bool = False


@dataclass(frozen=True, slots=True)
class Hold:
    actor: str
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording that exists; ``seq`` is the log line of its ``call_committed``, ``sha256``
    the hash it logged of the stored file (lowercase hex). ``sha256`` is empty for a commit
    that logged none, and in a ``Deletion``'s recording: the file is gone, and the hashes of
    years of deleted recordings would be most of what the ledger adds for them."""

    call_id: str
    line: str
    agent: str | None
    path: str
    purposes: Mapping[str, PurposeState]
    ended: datetime
    caller_ref: str | None
    hold: Hold | None
    seq: int
    sha256: str

    @property
    def held(self) -> bool:
        return self.hold is not None

    @property
    def retain_until(self) -> datetime | None:
        """When the last purpose ends; None while one has no end (or there is none)."""
        return _last({name: state.retain_until for name, state in self.purposes.items()})

    def due(self, now: datetime) -> bool:
        until = self.retain_until
        return self.hold is None and until is not None and until <= now

    def row(self) -> RecordingRow:
        """This recording as a row of the ``recordings`` reply."""
        return RecordingRow(
            call_id=self.call_id,
            line=self.line,
            agent=self.agent,
            path=self.path,
            purposes={
                name: PurposeRetention(_iso(state.retain_until), state.resolved)
                for name, state in self.purposes.items()
            },
            retain_until=_iso(self.retain_until),
            held=self.held,
        )


@dataclass(frozen=True, slots=True)
class Deletion:
    """A logged ``recording_deleted``; ``recording`` is its state just before (None when the
    log never committed that call, or had deleted it already, or a reader dropped it to
    keep less: ``premature`` is decided when the deletion is made, and stays)."""

    call_id: str
    path: str
    why: str
    time: datetime
    actor: str | None
    reason: str | None
    seq: int
    recording: Recording | None
    premature: bool  # deleted as ``expired`` while it was held or not yet due

    @staticmethod
    def came_early(why: str, time: datetime, recording: Recording | None) -> bool:
        """A purge (``expired``) of a recording that was held or not yet due at ``time``."""
        return why == "expired" and recording is not None and not recording.due(time)


# The ledger keeps compact mutable rows and makes the frozen objects above only when asked:
# building them for every commit and rebuilding them for every change cost a rebuild more
# than the JSON parsing it does (most recordings are deleted before anyone looks at them).


@dataclass(slots=True, eq=False)
class _Row:
    """A recording as the log has made it so far; only the ledger's ``apply`` changes it."""

    call_id: str
    line: str
    agent: str | None
    path: str
    ended: datetime
    caller_ref: str | None
    seq: int
    ends: dict[str, datetime | None]
    digest: bytes  # the logged sha256, as 32 bytes: half the memory of its hex text
    resolved: frozenset[str] = frozenset()
    hold: Hold | None = None
    snapshot: Recording | None = None

    def recording(self) -> Recording:
        if self.snapshot is None:
            purposes = {
                name: PurposeState(until, name in self.resolved)
                for name, until in self.ends.items()
            }
            self.snapshot = Recording(
                self.call_id, self.line, self.agent, self.path, purposes, self.ended,
                self.caller_ref, self.hold, self.seq, self.digest.hex(),
            )  # fmt: skip
        return self.snapshot

    def due(self, now: datetime) -> bool:
        until = _last(self.ends)
        return self.hold is None and until is not None and until <= now


@dataclass(slots=True, eq=False)
class _Gone:
    call_id: str
    path: str
    why: str
    time: datetime
    actor: str | None
    reason: str | None
    seq: int
    row: _Row | None

    def deletion(self) -> Deletion:
        recording = None if self.row is None else self.row.recording()
        return Deletion(
            self.call_id, self.path, self.why, self.time, self.actor, self.reason, self.seq,
            recording, Deletion.came_early(self.why, self.time, recording),
        )  # fmt: skip


_Handler = Callable[[Mapping[str, Any]], None]


class Ledger:
    """Every recording's retention state; feed it the log with ``apply`` (or use ``rebuild``)."""

    def __init__(
        self,
        on_deleted: Callable[[Deletion], None] | None = None,
        deleted: Callable[[str], tuple[str, datetime] | None] | None = None,
    ) -> None:
        """With ``on_deleted``, each deletion is handed to it as it is applied and not kept
        (``deletion`` and ``deletions`` know none): the ledger's memory is then bounded by the
        recordings that exist, however long the log. ``deleted``, then, tells why and when a
        call's recording was deleted, for the refusals that say so."""
        self._on_deleted = on_deleted
        self._deleted_at = deleted
        self._live: dict[str, _Row] = {}
        self._gone: dict[str, _Gone] = {}
        self._deletions: list[_Gone] = []
        self._handlers: dict[str, _Handler] = {
            "call_committed": self._committed,
            "recording_resolved": self._resolved,
            "recording_extended": self._extended,
            "recording_held": self._held,
            "recording_released": self._released,
            "recording_deleted": self._deleted,
        }

    # -- applying log entries -------------------------------------------------------------------

    def apply(self, entry: Mapping[str, Any]) -> None:
        """Take one log entry into account; events without a retention meaning are ignored."""
        handler = self._handlers.get(entry.get("event", ""))
        if handler is None:
            return
        try:
            handler(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            where = f"{LOG_NAME} line {entry.get('seq')}"
            raise CommitLogError(f"{where}: {entry['event']} cannot be read ({exc!r})") from exc

    def _committed(self, entry: Mapping[str, Any]) -> None:
        call_id = entry["call_id"]
        self._live[call_id] = _Row(
            _text(call_id),
            _name(entry["line"]),
            _agent(entry.get("agent")),
            _text(entry["path"]),
            parse_iso(entry.get("ended") or entry["time"]),
            entry.get("caller_ref"),
            entry["seq"],
            _committed_ends(entry),
            _digest(entry.get("sha256")),
        )

    def _resolved(self, entry: Mapping[str, Any]) -> None:
        row = self._set_end(entry)
        if row is not None:
            row.resolved |= {_name(entry["purpose"])}

    def _extended(self, entry: Mapping[str, Any]) -> None:
        self._set_end(entry)

    def _set_end(self, entry: Mapping[str, Any]) -> _Row | None:
        row = self._live.get(entry["call_id"])
        if row is not None:
            row.ends[_name(entry["purpose"])] = _moment(entry["retain_until"])
            row.snapshot = None
        return row

    def _held(self, entry: Mapping[str, Any]) -> None:
        hold = Hold(_text(entry["actor"]), _text(entry["reason"]), parse_iso(entry["time"]))
        self._set_hold(entry["call_id"], hold)

    def _released(self, entry: Mapping[str, Any]) -> None:
        self._set_hold(entry["call_id"], None)

    def _set_hold(self, call_id: str, hold: Hold | None) -> None:
        row = self._live.get(call_id)
        if row is not None:
            row.hold, row.snapshot = hold, None

    def _deleted(self, entry: Mapping[str, Any]) -> None:
        call_id = _text(entry["call_id"])
        row = self._live.pop(call_id, None)
        path = _text(entry["path"])
        if row is not None:  # one copy of each string serves both
            call_id, path = row.call_id, row.path if row.path == path else path
            row.digest, row.snapshot = b"", None
        gone = _Gone(
            call_id,
            path,
            _name(entry["why"]),
            parse_iso(entry["time"]),
            _agent(entry.get("actor")),
            entry.get("reason"),
            entry["seq"],
            row,
        )
        if self._on_deleted is not None:
            self._on_deleted(gone.deletion())
            return
        self._gone[call_id] = gone
        self._deletions.append(gone)

    # -- queries --------------------------------------------------------------------------------

    def get(self, call_id: str) -> Recording | None:
        """The recording of ``call_id`` if it exists now."""
        row = self._live.get(call_id)
        return None if row is None else row.recording()

    def deletion(self, call_id: str) -> Deletion | None:
        """The last deletion logged for ``call_id``."""
        gone = self._gone.get(call_id)
        return None if gone is None else gone.deletion()

    def recordings(
        self, purpose: str | None = None, caller_ref: str | None = None
    ) -> list[Recording]:
        """The recordings that exist now, in commit order, optionally of one purpose or caller."""
        return [
            row.recording()
            for row in self._live.values()
            if (purpose is None or purpose in row.ends)
            and (caller_ref is None or row.caller_ref == caller_ref)
        ]

    def due(self, now: datetime) -> list[Recording]:
        """The recordings a purge at ``now`` deletes."""
        return [row.recording() for row in self._live.values() if row.due(now)]

    def overdue(self, now: datetime, slack: timedelta = OVERDUE_SLACK) -> list[Recording]:
        """The recordings still there more than ``slack`` after they fell due (held ones never)."""
        # due() includes the moment itself; "more than slack" excludes it.
        return self.due(now - slack - timedelta.resolution)

    def deletions(self) -> list[Deletion]:
        """Every logged deletion, in log order."""
        return [gone.deletion() for gone in self._deletions]

    # -- decisions (they never change the ledger) -----------------------------------------------

    def resolve(
        self, call_id: str, purpose: str, now: datetime, terms: Mapping[str, Terms]
    ) -> datetime:
        """The ``retain_until`` that resolving ``purpose`` gives; see the module's rules."""
        row, until = self._purpose(call_id, purpose)
        term = terms.get(purpose)
        grace = 0.0 if term is None else term.grace_days
        limit = None if term is None else term.limit(row.ended)
        return _earliest(_earliest(_after(now, grace), limit), until)

    def extend(
        self, call_id: str, purpose: str, days: float, now: datetime, terms: Mapping[str, Terms]
    ) -> datetime:
        """The ``retain_until`` that extending ``purpose`` by ``days`` from now gives."""
        if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
            raise ProtocolError("bad_request", "days must be a number greater than 0")
        row, until = self._purpose(call_id, purpose)
        term = terms.get(purpose)
        if term is None:
            raise ProtocolError(
                "unknown_purpose", f"purpose {purpose!r} is not configured: it cannot be extended"
            )
        if until is None:
            raise ProtocolError(
                "not_allowed",
                f"call {call_id!r} is kept for {purpose!r} until that is resolved: "
                "it has no end to extend",
            )
        wanted = _after(now, days)
        _check_limit(row, term, wanted)
        return max(until, wanted)

    def check_hold(self, call_id: str) -> Recording:
        """Refuse a hold on a recording that is missing or held already."""
        row = self._existing(call_id)
        if row.hold is not None:
            raise ProtocolError("not_allowed", f"call {call_id!r} is held already{_by(row.hold)}")
        return row.recording()

    def check_release(self, call_id: str) -> Recording:
        """Refuse a release of a recording that is missing or not held."""
        row = self._existing(call_id)
        if row.hold is None:
            raise ProtocolError("not_allowed", f"call {call_id!r} is not held")
        return row.recording()

    def check_erasable(self, call_id: str) -> Recording:
        """Refuse an erasure of a recording that is missing or held."""
        row = self._existing(call_id)
        if row.hold is not None:
            raise ProtocolError(
                "not_allowed", f"call {call_id!r} is held{_by(row.hold)}: it cannot be erased"
            )
        return row.recording()

    def _existing(self, call_id: str) -> _Row:
        row = self._live.get(call_id)
        if row is not None:
            return row
        gone = self._gone.get(call_id)
        found = (gone.why, gone.time) if gone is not None else self._deleted_before(call_id)
        if found is None:
            raise ProtocolError("unknown_call", f"call {call_id!r} has no recording")
        why, when = found
        raise ProtocolError(
            "unknown_call",
            f"call {call_id!r} has no recording: it was deleted ({why}) at {iso(when)}",
        )

    def _deleted_before(self, call_id: str) -> tuple[str, datetime] | None:
        return None if self._deleted_at is None else self._deleted_at(call_id)

    def _purpose(self, call_id: str, purpose: str) -> tuple[_Row, datetime | None]:
        row = self._existing(call_id)
        if purpose not in row.ends:
            kept_for = ", ".join(row.ends) or "nothing"
            raise ProtocolError(
                "unknown_purpose",
                f"call {call_id!r} is not kept for {purpose!r} (it is kept for {kept_for})",
            )
        return row, row.ends[purpose]


def rebuild(path: Path) -> Ledger:
    """The ledger of the log at ``path``, read without checking its chain."""
    return ledger_of(read_entries(path))


def ledger_of(
    entries: Iterable[Mapping[str, Any]],
    on_deleted: Callable[[Deletion], None] | None = None,
    deleted: Callable[[str], tuple[str, datetime] | None] | None = None,
) -> Ledger:
    """The ledger of these log entries, in order: a whole log, or (the daemon at start) only
    the retention lines of the recordings that exist, which its log's index points at."""
    ledger = Ledger(on_deleted, deleted)
    apply = ledger.apply
    for entry in entries:
        apply(entry)
    return ledger


def _committed_ends(entry: Mapping[str, Any]) -> dict[str, datetime | None]:
    """``retention`` per purpose; a log from before that field has one ``retain_until``."""
    retention = entry.get("retention")
    if retention is None:
        retention = dict.fromkeys(entry["purposes"], entry["retain_until"])
    return {_name(name): _moment(until) for name, until in retention.items()}


def _check_limit(row: _Row, term: Terms, wanted: datetime) -> None:
    limit = term.limit(row.ended)
    if limit is not None and wanted > limit:
        raise ProtocolError(
            "not_allowed",
            f"call {row.call_id!r} may be kept for {term.name!r} until {iso(limit)} "
            f"at most ({term.max_retention_days:g} days after the call ended)",
        )


def _last(ends: Mapping[str, datetime | None]) -> datetime | None:
    """The latest of ``ends``; None when one is None (no end yet) or there are none."""
    latest = None
    for end in ends.values():
        if end is None:
            return None
        latest = end if latest is None else max(latest, end)
    return latest


def _name(value: object) -> str:
    """A string that recurs in many entries (a line, a purpose): one copy serves them all,
    which is a good part of the ledger's memory after years of deletions."""
    return sys.intern(_text(value))


def _agent(value: object) -> str | None:
    """An agent or an actor: a recurring name, or None."""
    return None if value is None else _name(value)


def _text(value: object) -> str:
    """A string field of a log entry; refused (so that ``apply`` names the line) otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _digest(value: object) -> bytes:
    """A logged SHA-256, 64 hex digits; empty when the entry has none."""
    if value is None:
        return b""
    digest = bytes.fromhex(_text(value))
    if len(digest) != 32:
        raise ValueError(f"a sha256 is 64 hex digits, got {len(digest) * 2}")
    return digest


def _after(now: datetime, days: float) -> datetime:
    try:
        return now + timedelta(days=days)
    except (OverflowError, ValueError):  # beyond year 9999, or infinite
        raise ProtocolError("bad_request", f"{days:g} days is out of range") from None


def _earliest(first: datetime, second: datetime | None) -> datetime:
    return first if second is None else min(first, second)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def _by(hold: Hold) -> str:
    return f" (by {hold.actor} since {iso(hold.since)})"
