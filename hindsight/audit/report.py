"""``report``: figures over the whole log (what was committed, wiped, deleted and opened,
and why, per day, and how fairly each agent and line was sampled), as JSON;
``hindsight.audit.text`` renders them as text, ``hindsight.audit.html`` as a page.

``report`` refuses a log whose chain is broken: figures from a tampered log would mislead.
It reads the log once, in order, and keeps per call only what the figures need; a call's
sampling details are dropped once it has its outcome.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from hindsight import chaincheck
from hindsight.audit.common import (
    DELETION_WHYS,
    NO_AGENT,
    REASONS,
    UNKNOWN,
    Span,
    iso_or_none,
)
from hindsight.audit.fairness import BandTally, Fairness
from hindsight.clock import iso, utcnow
from hindsight.commitlog import LOG_NAME, OUTCOME_EVENTS, LineHook
from hindsight.errors import CommitLogError
from hindsight.retention import Deletion, Ledger, Recording
from hindsight.sampling import eligible, kept_as_sampled

# ---------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class Figures:
    """What happened to the calls of one group (all, one line, one agent).

    ``lost_in_crash`` is the part of ``wiped`` closed by a restarted daemon; ``open`` counts
    calls still without outcome; ``by_purpose`` counts a commit once for each of its purposes;
    ``seconds_kept`` sums committed calls, also those whose recording was deleted since;
    ``rolled_seconds`` is the audio lost to rolling in committed calls.
    """

    started: int
    committed: int
    wiped: int
    lost_in_crash: int
    deleted: int
    open: int
    by_reason: Mapping[str, int]
    by_purpose: Mapping[str, int]
    seconds_kept: float
    seconds_wiped: float
    rolled_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "committed": self.committed,
            "wiped": self.wiped,
            "lost_in_crash": self.lost_in_crash,
            "deleted": self.deleted,
            "open": self.open,
            "by_reason": dict(self.by_reason),
            "by_purpose": dict(self.by_purpose),
            "seconds_kept": self.seconds_kept,
            "seconds_wiped": self.seconds_wiped,
            "rolled_seconds": self.rolled_seconds,
        }


def _seconds(value: object) -> float:
    """A logged duration; absent or null (a call lost in a crash may not know it) counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _names(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


class _Sum:
    """A sum of many floats, in bounded memory, within a rounding of ``math.fsum``'s."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[float] = []

    def add(self, value: float) -> None:
        self.parts.append(value)
        if len(self.parts) >= 256:
            self.parts = [math.fsum(self.parts)]

    def total(self) -> float:
        return math.fsum(self.parts)


class _Outcome(NamedTuple):
    """What the report counts of a ``call_committed`` or ``call_wiped`` line."""

    wiped: bool
    lost: bool  # lost_in_crash
    seconds: float
    rolled: float
    reasons: tuple[str, ...]  # of REASONS only
    purposes: tuple[str, ...]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> _Outcome:
        if entry["event"] == "call_wiped":
            lost = entry.get("why") == "lost_in_crash"
            return cls(True, lost, _seconds(entry.get("seconds")), 0.0, (), ())
        reasons = tuple(r for r in _names(entry.get("reasons")) if r in REASONS)
        return cls(
            False,
            False,
            _seconds(entry.get("seconds")),
            _seconds(entry.get("rolled_seconds")),
            reasons,
            tuple(_names(entry.get("purposes"))),
        )


@dataclass
class _Tally:
    started: int = 0
    committed: int = 0
    wiped: int = 0
    lost_in_crash: int = 0
    deleted: int = 0
    open: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_purpose: Counter[str] = field(default_factory=Counter)
    kept: _Sum = field(default_factory=_Sum)
    gone: _Sum = field(default_factory=_Sum)
    rolled: _Sum = field(default_factory=_Sum)

    def add(self, event: str, was_open: bool, outcome: _Outcome | None) -> None:
        """Count one line (``outcome``: what an outcome line says, read once for the three
        tallies it goes to)."""
        if event == "call_started":
            self.started += 1
            self.open += 1
        elif event == "recording_deleted":
            self.deleted += 1
        elif outcome is not None:
            self.open -= was_open
            if outcome.wiped:
                self.wiped += 1
                self.lost_in_crash += outcome.lost
                self.gone.add(outcome.seconds)
                return
            self.committed += 1
            self.by_reason.update(outcome.reasons)
            self.by_purpose.update(outcome.purposes)
            self.kept.add(outcome.seconds)
            self.rolled.add(outcome.rolled)

    def merge(self, other: _Tally) -> None:
        """Add ``other``'s counts to these (a group made of several)."""
        for name in ("started", "committed", "wiped", "lost_in_crash", "deleted", "open"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.by_reason.update(other.by_reason)
        self.by_purpose.update(other.by_purpose)
        for name in ("kept", "gone", "rolled"):
            mine = getattr(self, name)
            for part in getattr(other, name).parts:
                mine.add(part)

    def freeze(self) -> Figures:
        return Figures(
            started=self.started,
            committed=self.committed,
            wiped=self.wiped,
            lost_in_crash=self.lost_in_crash,
            deleted=self.deleted,
            open=self.open,
            by_reason={reason: self.by_reason[reason] for reason in REASONS},
            by_purpose=dict(sorted(self.by_purpose.items())),
            seconds_kept=round(self.kept.total(), 3),
            seconds_wiped=round(self.gone.total(), 3),
            rolled_seconds=round(self.rolled.total(), 3),
        )


# After these, a call's line and agent are asked for no more: its owner is forgotten, so the
# census holds the owners of open calls and existing recordings only.
_LAST_OWNED = frozenset({"call_wiped", "recording_deleted"})
# The events the figures count; every other line only counts as an entry.
_COUNTED = OUTCOME_EVENTS | {"call_started", "recording_deleted"}


_Pair = tuple[str, str]  # a call's line and agent
_G = TypeVar("_G", "_Tally", BandTally)


def _pivot(
    pairs: Mapping[_Pair, _G], make: Callable[[], _G], alone: _G | None = None
) -> tuple[_G, dict[str, _G], dict[str, _G]]:
    """The totals, per line and per agent, of what was tallied once per line and agent
    (once, not three times, as each line comes: the pairs are few, the lines many); with
    ``alone``, what belongs to no call, in the totals only."""
    totals, lines, agents = make(), dict[str, _G](), dict[str, _G]()
    if alone is not None:
        totals.merge(alone)
    for (line, agent), tally in pairs.items():
        totals.merge(tally)
        _group(lines, line, make).merge(tally)
        _group(agents, agent, make).merge(tally)
    return totals, lines, agents


@dataclass
class _Census:
    """Tallies every entry once, by its call's line and agent (``pairs``; ``unowned``: no
    call), for the totals, per line and per agent (``totals``, ``lines``, ``agents``)."""

    entries: int = 0
    first_time: str | None = None
    last_time: str | None = None
    pairs: dict[_Pair, _Tally] = field(default_factory=dict)
    unowned: _Tally = field(default_factory=_Tally)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_ids: set[str] = field(default_factory=set)
    days: Counter[tuple[str, str]] = field(default_factory=Counter)
    deletions: list[Deletion] = field(default_factory=list)  # in the span, in log order
    # A span that starts after the log does: the outcome of a call not started in it is not
    # counted (in the whole log, such an outcome counts for agent "(unknown)").
    spanned: bool = False

    def deleted_in(self, span: Span) -> Callable[[Deletion], None]:
        """What the ledger hands each deletion to: kept when it falls in ``span``."""

        def keep(deletion: Deletion) -> None:
            if span.since is None or deletion.time >= span.since:
                # Without the recording it took: the report lists deletions, not recordings
                # (and a long log has many).
                self.deletions.append(dataclasses.replace(deletion, recording=None))

        return keep

    def add(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        self.first_time = self.first_time or entry["time"]
        self.last_time = entry["time"]
        event = entry["event"]
        if event not in _COUNTED:
            return
        call_id = entry.get("call_id")
        was_open = isinstance(call_id, str) and self._track(entry, call_id)
        if self.spanned and event in OUTCOME_EVENTS and not was_open:
            return  # a call started before the span: not this report's to count
        if event in _DAY_EVENTS:
            self.days[str(entry["time"])[:10], event] += 1
        outcome = _Outcome.of(entry) if event in OUTCOME_EVENTS else None
        if not isinstance(call_id, str):
            self.unowned.add(event, False, outcome)
            return
        owner = self.owners.get(call_id) or (str(entry.get("line", UNKNOWN)), UNKNOWN)
        _group(self.pairs, owner, _Tally).add(event, was_open, outcome)
        if event in _LAST_OWNED:  # nothing later is told by line or agent
            self.owners.pop(call_id, None)

    def _track(self, entry: Mapping[str, Any], call_id: str) -> bool:
        """Note a start's owner; True when ``entry`` is the outcome of a call still open."""
        if entry["event"] == "call_started":
            self.owners.setdefault(call_id, _owner(entry))
            self.open_ids.add(call_id)
            return False
        if entry["event"] in OUTCOME_EVENTS and call_id in self.open_ids:
            self.open_ids.discard(call_id)
            return True
        return False

    def groups(self) -> tuple[_Tally, dict[str, _Tally], dict[str, _Tally]]:
        """The totals, per line and per agent."""
        return _pivot(self.pairs, _Tally, self.unowned)

    def freeze(
        self, retention: Retention, accesses: Sequence[Access], fairness: Fairness, span: Span
    ) -> Report:
        totals, lines, agents = self.groups()
        return Report(
            since=span.since,
            until=span.until,
            entries=self.entries,
            first_time=self.first_time,
            last_time=self.last_time,
            totals=totals.freeze(),
            per_line=_freeze_groups(lines),
            per_agent=_freeze_groups(agents),
            retention=retention,
            accesses=accesses,
            per_day=self._per_day(),
            fairness=fairness,
        )

    def _per_day(self) -> dict[date, Day]:
        """The days with a call event, in order; a line whose time does not start with a
        date (no daemon writes one) is in no day."""
        days: dict[date, Day] = {}
        for day in sorted({day for day, _ in self.days}):
            try:
                when = date.fromisoformat(day)
            except ValueError:
                continue
            days[when] = Day(*(self.days[day, event] for event in _DAY_EVENTS))
        return days


_DAY_EVENTS = ("call_started", "call_committed", "call_wiped")


@dataclass(frozen=True)
class Day:
    """One UTC day's call events, by the date of their lines' ``time``."""

    started: int
    committed: int
    wiped: int

    def to_json(self) -> dict[str, int]:
        return {"started": self.started, "committed": self.committed, "wiped": self.wiped}


_T = TypeVar("_T")
_K = TypeVar("_K")


def _group(groups: dict[_K, _T], name: _K, make: Callable[[], _T]) -> _T:
    """``groups[name]``, made on first use (``setdefault`` would make one for every call)."""
    found = groups.get(name)
    if found is None:
        found = groups[name] = make()
    return found


def _owner(entry: Mapping[str, Any]) -> tuple[str, str]:
    agent = entry.get("agent")
    return str(entry.get("line", UNKNOWN)), NO_AGENT if agent is None else str(agent)


def _freeze_groups(groups: Mapping[str, _Tally]) -> dict[str, Figures]:
    return {name: tally.freeze() for name, tally in sorted(groups.items())}


# ---------------------------------------------------------------------------------------------
# fairness


class _Start(NamedTuple):  # a tuple: one is made for every call, and a tuple is quick to make
    """What a call's outcome needs from its start: whose it is and how it was drawn.

    ``one_in`` is None when the start named no declared epoch: such a call is counted apart,
    so it is ``eligible`` whatever it announced (its sampling purpose is not in the log).
    """

    line: str
    agent: str
    one_in: int | None
    eligible: bool


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class _Draws:
    """Follows each call from its start to its outcome for the fairness bands (see
    ``hindsight.audit.fairness``), holding only the calls still open and each epoch's
    ``one_in`` and purpose."""

    epochs: dict[int, tuple[int, str]] = field(default_factory=dict)
    open: dict[str, _Start] = field(default_factory=dict)
    pairs: dict[_Pair, BandTally] = field(default_factory=dict)  # by line and agent

    def add(self, entry: Mapping[str, Any]) -> None:
        event, call_id = entry["event"], entry.get("call_id")
        if event == "sampling_epoch":
            self._declare(entry)
        elif not isinstance(call_id, str):
            return
        elif event == "call_started":
            self.open.setdefault(call_id, self._start(entry))
        elif event in OUTCOME_EVENTS:
            self._settle(self.open.pop(call_id, None), entry)

    def declare(self, entry: Mapping[str, Any]) -> None:
        """Only take in an epoch's declaration (a line before the span asked about)."""
        if entry["event"] == "sampling_epoch":
            self._declare(entry)

    def _declare(self, entry: Mapping[str, Any]) -> None:
        """An epoch counts from its first declaration, when it says how calls were drawn."""
        epoch, one_in = _whole(entry.get("epoch")), _whole(entry.get("one_in"))
        purpose = entry.get("purpose")
        if epoch is not None and one_in is not None and one_in >= 0 and isinstance(purpose, str):
            self.epochs.setdefault(epoch, (one_in, purpose))

    def _start(self, entry: Mapping[str, Any]) -> _Start:
        line, agent = _owner(entry)
        epoch = _whole(entry.get("epoch"))
        if epoch is None or epoch not in self.epochs:
            return _Start(line, agent, None, eligible=True)
        one_in, purpose = self.epochs[epoch]
        announced = entry.get("announced")
        return _Start(line, agent, one_in, eligible(announced, purpose))

    def _settle(self, start: _Start | None, outcome: Mapping[str, Any]) -> None:
        """Count an eligible call's outcome; a lost call's draw was never acted on."""
        if start is None or not start.eligible or outcome.get("why") == "lost_in_crash":
            return
        owner = start.line, start.agent
        _group(self.pairs, owner, BandTally).add(start.one_in, kept_as_sampled(outcome))

    def groups(self) -> tuple[BandTally, dict[str, BandTally], dict[str, BandTally]]:
        """The totals, per line and per agent."""
        return _pivot(self.pairs, BandTally)

    def freeze(self) -> Fairness:
        totals, lines, agents = self.groups()
        return Fairness(
            totals=totals.freeze(),
            per_line={name: t.freeze() for name, t in sorted(lines.items())},
            per_agent={name: t.freeze() for name, t in sorted(agents.items())},
        )


@dataclass(frozen=True)
class PurposeRetention:
    """The recordings kept for one purpose at the report's ``as_of``.

    ``due_now`` counts those a purge would delete now (every purpose of theirs ended, not
    held); ``no_end`` those whose end for this purpose waits for it to be resolved; the
    earliest and latest ``retain_until`` are of this purpose, among those that have one.
    """

    recordings: int
    held: int
    resolved: int
    due_now: int
    no_end: int
    earliest: datetime | None
    latest: datetime | None

    @classmethod
    def of(cls, purpose: str, kept: Sequence[Recording], now: datetime) -> PurposeRetention:
        ends = [recording.purposes[purpose].retain_until for recording in kept]
        times = [end for end in ends if end is not None]
        return cls(
            recordings=len(kept),
            held=sum(recording.held for recording in kept),
            resolved=sum(recording.purposes[purpose].resolved for recording in kept),
            due_now=sum(recording.due(now) for recording in kept),
            no_end=len(ends) - len(times),
            earliest=min(times, default=None),
            latest=max(times, default=None),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "recordings": self.recordings,
            "held": self.held,
            "resolved": self.resolved,
            "due_now": self.due_now,
            "no_end": self.no_end,
            "earliest_retain_until": iso_or_none(self.earliest),
            "latest_retain_until": iso_or_none(self.latest),
        }


@dataclass(frozen=True)
class Retention:
    """The recordings that exist at ``as_of``, by purpose, and every deletion logged."""

    as_of: datetime
    recordings: int
    held: int
    due_now: int
    overdue: int
    by_purpose: Mapping[str, PurposeRetention]
    deletions: Sequence[Deletion]

    @classmethod
    def of(cls, ledger: Ledger, now: datetime, deletions: Sequence[Deletion]) -> Retention:
        recordings = ledger.recordings()
        purposes = sorted({name for recording in recordings for name in recording.purposes})
        return cls(
            as_of=now,
            recordings=len(recordings),
            held=sum(recording.held for recording in recordings),
            due_now=len(ledger.due(now)),
            overdue=len(ledger.overdue(now)),
            by_purpose={
                name: PurposeRetention.of(name, ledger.recordings(purpose=name), now)
                for name in purposes
            },
            deletions=deletions,
        )

    @property
    def deleted(self) -> dict[str, int]:
        """Deletions by ``why``: ``expired`` and ``erased`` always, then any other, sorted."""
        counts = Counter(str(deletion.why) for deletion in self.deletions)
        others = sorted(why for why in counts if why not in DELETION_WHYS)
        return {why: counts[why] for why in (*DELETION_WHYS, *others)}

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of": iso(self.as_of),
            "totals": {
                "recordings": self.recordings,
                "held": self.held,
                "due_now": self.due_now,
                "overdue": self.overdue,
                "deleted": self.deleted,
            },
            "by_purpose": {name: p.to_json() for name, p in self.by_purpose.items()},
        }


def _deletion_json(deletion: Deletion) -> dict[str, Any]:
    return {
        "log_line": deletion.seq,
        "call_id": deletion.call_id,
        "why": deletion.why,
        "time": iso(deletion.time),
        "actor": deletion.actor,
        "reason": deletion.reason,
        "premature": deletion.premature,
    }


@dataclass(frozen=True)
class Access:
    """A logged ``recording_accessed``: who opened a recording, when and why."""

    log_line: int
    call_id: str
    time: str
    actor: str
    reason: str

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Access:
        return cls(
            entry["seq"],
            str(entry.get("call_id")),
            entry["time"],
            str(entry.get("actor")),
            str(entry.get("reason")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "log_line": self.log_line,
            "call_id": self.call_id,
            "time": self.time,
            "actor": self.actor,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Report:
    """What was committed, wiped and deleted, and why; see ``to_json`` for the figures."""

    since: datetime | None  # the span asked about (None: from the log's start)
    until: datetime | None  # (None: to its end)
    entries: int
    first_time: str | None
    last_time: str | None
    totals: Figures
    per_line: Mapping[str, Figures]
    per_agent: Mapping[str, Figures]
    retention: Retention
    accesses: Sequence[Access]
    per_day: Mapping[date, Day]
    fairness: Fairness

    def to_json(self) -> dict[str, Any]:
        """The report as JSON; keys are stable and always present.

        ``entries`` (int), ``first_time`` and ``last_time`` (ISO 8601 or null), ``totals`` (a
        figures object), ``per_line`` and ``per_agent`` (name -> figures object, sorted by
        name; agent ``(none)`` when the call had none, ``(unknown)`` for a call without
        ``call_started``). A figures object holds ``started``, ``committed``, ``wiped``,
        ``lost_in_crash`` (part of ``wiped``), ``deleted``, ``open`` (ints), ``by_reason``
        (``sampled`` and ``marked``, always both), ``by_purpose`` (purpose -> commits, sorted),
        ``seconds_kept``, ``seconds_wiped`` and ``rolled_seconds`` (floats, rounded to ms).

        ``retention``: ``as_of`` (when the report was made), ``totals`` (``recordings``,
        ``held``, ``due_now``, ``overdue`` among the recordings that exist; ``deleted``: why ->
        deletions, ``expired`` and ``erased`` always) and ``by_purpose`` (purpose -> a
        ``PurposeRetention`` object, sorted). ``deletions``: every ``recording_deleted`` in log
        order, as ``log_line``, ``call_id``, ``why``, ``time``, ``actor`` and ``reason`` (null
        unless erased) and ``premature`` (an ``expired`` one that was not due). ``accesses``:
        every ``recording_accessed`` in log order, as ``log_line``, ``call_id``, ``time``,
        ``actor`` and ``reason``.

        ``per_day``: ``YYYY-MM-DD`` (UTC) -> ``started``, ``committed``, ``wiped`` (the call
        events of that day), only days with one, in order. ``fairness``: ``confidence``
        (0.999), then ``totals``, ``per_line`` and ``per_agent`` (name -> band object, sorted,
        only groups with a settled call); see ``hindsight.audit.fairness.Band.to_json``.

        ``since`` and ``until`` (ISO 8601, or null for an open end): the span asked about;
        the figures count the calls started in it, and the lines, deletions and accesses
        logged in it; retention is as of its end when that is sooner than the report.
        """
        return {
            "entries": self.entries,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "totals": self.totals.to_json(),
            "per_line": {name: f.to_json() for name, f in self.per_line.items()},
            "per_agent": {name: f.to_json() for name, f in self.per_agent.items()},
            "retention": self.retention.to_json(),
            "deletions": [_deletion_json(deletion) for deletion in self.retention.deletions],
            "accesses": [access.to_json() for access in self.accesses],
            "per_day": {
                day.isoformat(): figures.to_json() for day, figures in self.per_day.items()
            },
            "fairness": self.fairness.to_json(),
            "since": iso_or_none(self.since),
            "until": iso_or_none(self.until),
        }


WHOLE = Span()


def report(
    state_dir: Path,
    now: datetime | None = None,
    on_line: LineHook | None = None,
    span: Span = WHOLE,
) -> Report:
    """Figures over the whole log, or over the calls started in ``span``; retention as of
    ``now`` (by default the current time), or as of the span's end when that is sooner.
    Raises CommitLogError when the log is missing, its chain breaks, or a retention event
    cannot be read. ``on_line`` is told how far the reading has come (a progress bar).
    The chain is checked over the whole log whatever the span."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CommitLogError(f"{LOG_NAME} is missing in {state_dir}")
    reading = Reading(span)
    for entry in chaincheck.entries(path, on_line):
        reading.feed(entry)
    return reading.finish(now)


class Reading:
    """One log's figures as its entries come, in order, from a chain-checking source
    (``read_chain``, or a bucket's shipped segments): ``feed`` each, then ``finish``."""

    def __init__(self, span: Span = WHOLE) -> None:
        self.span = span
        self.census = _Census(spanned=span.since is not None)
        self.draws = _Draws()
        self.accesses: list[Access] = []
        self.ledger = Ledger(on_deleted=self.census.deleted_in(span))

    def feed(self, entry: Mapping[str, Any]) -> None:
        place = self.span.place(entry)
        if place > 0:
            return  # only the chain, which the source checks, goes on to the end
        self.ledger.apply(entry)
        if place < 0:
            self.draws.declare(entry)  # an epoch declared before still draws the calls in it
            return
        self.census.add(entry)
        self.draws.add(entry)
        if entry["event"] == "recording_accessed":
            self.accesses.append(Access.of(entry))

    def as_of(self, now: datetime | None = None) -> datetime:
        """When retention is reckoned: ``now`` (by default the current time), or the span's
        end when that is sooner."""
        as_of = utcnow() if now is None else now
        return as_of if self.span.until is None else min(as_of, self.span.until)

    def finish(self, now: datetime | None = None) -> Report:
        retention = Retention.of(self.ledger, self.as_of(now), self.census.deletions)
        return self.census.freeze(retention, self.accesses, self.draws.freeze(), self.span)
