"""The auditor's view of a state dir: ``verify`` the log and recordings, ``report`` on them.

Rules:

- Pure reads: nothing under the state dir is created, changed or locked, and no daemon is needed.
- Integrity before meaning: the whole hash chain is checked first, because the contents of a
  tampered log cannot be trusted; then the call rules and the retention events (read exactly
  as the daemon reads them, with ``hindsight.retention``); then the files under recordings/;
  last the one check that depends on the time, ``now``: nothing is overdue.
- ``verify`` stops at the FIRST problem and states it in one sentence naming the log line, or
  the file when no line names it. Once the chain holds, a line's number equals its ``seq``.
- The log accounts for every file under recordings/: the recording and sidecar of each
  committed call not deleted since, and the files of a call still open, which a live daemon
  may be writing right now. Anything else is reported, a leftover temp file included.
- Recordings are hashed in 1 MiB blocks, never read whole.
- ``report`` refuses a log whose chain is broken: figures from a tampered log would mislead.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from hindsight.clock import iso, utcnow
from hindsight.commitlog import LOG_NAME, OUTCOME_EVENTS, read_chain
from hindsight.durable import file_sha256
from hindsight.errors import CommitLogError
from hindsight.layout import RECORDINGS, sidecar_path
from hindsight.retention import Deletion, Ledger, Recording

REASONS = ("sampled", "marked")
NO_AGENT = "(none)"
UNKNOWN = "(unknown)"
DELETION_WHYS = ("expired", "erased")


# ---------------------------------------------------------------------------------------------
# verify


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` with ``problem`` None, or the first problem found; ``recordings`` were checked."""

    ok: bool
    problem: str | None
    entries: int
    recordings: int


@dataclass
class _Call:
    started: int
    run: int
    outcome: int | None = None


@dataclass(frozen=True)
class _Commit:
    seq: int
    call_id: str
    path: str
    sha256: str


def _at(entry: Mapping[str, Any]) -> str:
    return f"{LOG_NAME} line {entry['seq']}"


def _inside(path: object) -> bool:
    """True for a relative path that stays inside the state dir."""
    if not isinstance(path, str) or not path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts


_Rule = Callable[[Mapping[str, Any]], "str | None"]


@dataclass
class _CallRules:
    """Walks the entries in order, applying the call rules and feeding the retention ledger;
    keeps the first problem."""

    entries: int = 0
    problem: str | None = None
    calls: dict[str, _Call] = field(default_factory=dict)
    run_starts: list[int] = field(default_factory=lambda: [0])
    stopped_at: int | None = None
    commits: list[_Commit] = field(default_factory=list)
    retention: Ledger = field(default_factory=Ledger)

    rules: dict[str, _Rule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rules = {
            "daemon_started": self._daemon_started,
            "daemon_stopped": self._daemon_stopped,
            "call_started": self._call_started,
            "call_marked": self._call_marked,
            "call_committed": self._call_committed,
            "call_wiped": self._outcome,
            "recording_deleted": self._recording_deleted,
            "recording_accessed": self._recording_accessed,
        }

    def feed(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        if self.problem is None:
            self.problem = self.rules.get(entry["event"], _no_rule)(entry) or self._retain(entry)

    def _retain(self, entry: Mapping[str, Any]) -> str | None:
        try:
            self.retention.apply(entry)
        except CommitLogError as exc:
            return str(exc)
        return None

    @property
    def run(self) -> int:
        return len(self.run_starts) - 1

    def _daemon_started(self, entry: Mapping[str, Any]) -> None:
        self.run_starts.append(entry["seq"])
        self.stopped_at = None

    def _daemon_stopped(self, entry: Mapping[str, Any]) -> None:
        self.stopped_at = entry["seq"]

    def _call_started(self, entry: Mapping[str, Any]) -> str | None:
        call_id = entry.get("call_id")
        if not isinstance(call_id, str):
            return f"{_at(entry)}: call_started has no call_id"
        if call_id in self.calls:
            first = self.calls[call_id].started
            return f"{_at(entry)}: call_started reuses call id {call_id!r} of line {first}"
        self.calls[call_id] = _Call(entry["seq"], self.run)
        return None

    def _known_call(self, entry: Mapping[str, Any]) -> tuple[_Call | None, str | None]:
        call_id = entry.get("call_id")
        call = self.calls.get(call_id) if isinstance(call_id, str) else None
        if call is None:
            event = entry["event"]
            return None, f"{_at(entry)}: {event} for call {call_id!r}, which was never started"
        return call, None

    def _call_marked(self, entry: Mapping[str, Any]) -> str | None:
        call, problem = self._known_call(entry)
        if call is not None and call.outcome is not None:
            call_id = entry["call_id"]
            return (
                f"{_at(entry)}: call {call_id!r} is marked after its outcome on line {call.outcome}"
            )
        return problem

    def _outcome(self, entry: Mapping[str, Any]) -> str | None:
        call, problem = self._known_call(entry)
        if call is None:
            return problem
        if call.outcome is not None:
            return (
                f"{_at(entry)}: call {entry['call_id']!r} has a second outcome ({entry['event']}); "
                f"its first was on line {call.outcome}"
            )
        call.outcome = entry["seq"]
        return None

    def _call_committed(self, entry: Mapping[str, Any]) -> str | None:
        problem = self._outcome(entry)
        if problem is not None:
            return problem
        path, digest = entry.get("path"), entry.get("sha256")
        if not _inside(path):
            return f"{_at(entry)}: path {path!r} is not a relative path inside the state dir"
        if not isinstance(digest, str):
            return f"{_at(entry)}: call_committed has no sha256"
        assert isinstance(path, str)
        self.commits.append(_Commit(entry["seq"], entry["call_id"], path, digest))
        return None

    def _recording_deleted(self, entry: Mapping[str, Any]) -> str | None:
        path, why = entry.get("path"), entry.get("why")
        if not _inside(path):
            return f"{_at(entry)}: path {path!r} is not a relative path inside the state dir"
        if why not in DELETION_WHYS:
            return f"{_at(entry)}: recording_deleted has why {why!r}, not expired or erased"
        if why == "erased" and not all(_named(entry.get(key)) for key in ("actor", "reason")):
            return f"{_at(entry)}: an erasure must say who asked (actor) and why (reason)"
        return None

    def _recording_accessed(self, entry: Mapping[str, Any]) -> str | None:
        """Someone opened a recording: it must exist at that point, and they must be named."""
        call_id = entry.get("call_id")
        if not isinstance(call_id, str) or self.retention.get(call_id) is None:
            gone = self.retention.deletion(call_id) if isinstance(call_id, str) else None
            why = "never committed" if gone is None else f"deleted on line {gone.seq}"
            return (
                f"{_at(entry)}: recording_accessed for call {call_id!r}, which has no "
                f"recording at that point ({why})"
            )
        if not all(_named(entry.get(key)) for key in ("actor", "reason")):
            return (
                f"{_at(entry)}: an access must say who opened the recording (actor) "
                "and why (reason)"
            )
        return None

    def open_call_problem(self) -> str | None:
        """A call without outcome is fine only in the last run while that run is live."""
        for call_id, call in self.calls.items():
            if call.outcome is not None:
                continue
            if call.run < self.run:
                ended = f"a later daemon run started on line {self.run_starts[call.run + 1]}"
            elif self.stopped_at is not None:
                ended = f"the daemon stopped on line {self.stopped_at}"
            else:
                continue
            return f"{LOG_NAME} line {call.started}: call {call_id!r} has no outcome, yet {ended}"
        return None

    def open_calls(self) -> list[str]:
        """The calls without outcome (once ``open_call_problem`` is None: of the live run)."""
        return [call_id for call_id, call in self.calls.items() if call.outcome is None]

    def live_commits(self) -> list[_Commit]:
        """The commits whose recording exists by the log: not deleted since."""
        return [
            commit
            for commit in self.commits
            if (recording := self.retention.get(commit.call_id)) is not None
            and recording.seq == commit.seq
        ]


def _named(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _no_rule(entry: Mapping[str, Any]) -> None:
    """Events without a call rule (daemon life cycle, future kinds) only need the chain."""


def _premature(retention: Ledger) -> str | None:
    """``expired`` is a purge: it may only take a recording that was due and not held."""
    for deletion in retention.deletions():
        if deletion.premature and deletion.recording is not None:
            return (
                f"{LOG_NAME} line {deletion.seq}: call {deletion.call_id!r} was purged as expired "
                f"at {iso(deletion.time)} while {_not_due(deletion.recording)}: a premature purge"
            )
    return None


def _not_due(recording: Recording) -> str:
    hold = recording.hold
    if hold is not None:
        return f"held by {hold.actor!r} since {iso(hold.since)}"
    until = recording.retain_until
    if until is None:
        return "kept until a purpose of it is resolved"
    return f"not due until {iso(until)}"


# What a recording of each kind begins with.
MAGIC = {".flac": b"fLaC", ".age": b"age-encryption.org/v1\n"}


def _check_sidecar(state_dir: Path, commit: _Commit) -> str | None:
    where = f"{LOG_NAME} line {commit.seq}"
    sidecar = sidecar_path(PurePosixPath(commit.path), commit.call_id).as_posix()
    try:
        data = json.loads((state_dir / sidecar).read_bytes())
    except FileNotFoundError:
        return f"{where}: sidecar {sidecar} of recording {commit.path} is missing"
    except (OSError, ValueError):
        return f"{where}: sidecar {sidecar} is unreadable or not JSON"
    if not isinstance(data, dict) or (data.get("call_id"), data.get("sha256")) != (
        commit.call_id,
        commit.sha256,
    ):
        return f"{where}: sidecar {sidecar} disagrees with the log on call_id or sha256"
    return None


def _check_recording(state_dir: Path, commit: _Commit) -> str | None:
    where = f"{LOG_NAME} line {commit.seq}"
    file = state_dir / commit.path
    if not file.is_file():
        return f"{where}: recording {commit.path} of call {commit.call_id!r} is missing"
    try:
        digest = file_sha256(file)
    except OSError as exc:
        return f"{where}: recording {commit.path} cannot be read ({exc.strerror or exc})"
    if digest != commit.sha256:
        return (
            f"{where}: recording {commit.path} of call {commit.call_id!r} does not match "
            "its logged sha256 (altered or replaced)"
        )
    return _check_format(file, commit) or _check_sidecar(state_dir, commit)


def _check_format(file: Path, commit: _Commit) -> str | None:
    """A recording must be what its name says: a file that hashes right can still be empty."""
    suffix = PurePosixPath(commit.path).suffix
    magic = MAGIC.get(suffix)
    if magic is None:
        return None
    with file.open("rb") as handle:
        if handle.read(len(magic)) == magic:
            return None
    return (
        f"{LOG_NAME} line {commit.seq}: recording {commit.path} of call {commit.call_id!r} "
        f"is not a {suffix[1:].upper()} file ({file.stat().st_size} bytes)"
    )


def _files_of(path: str, call_id: str) -> dict[str, str]:
    """A recording's path and its sidecar's, spelled as the walk of recordings/ spells them."""
    recording = PurePosixPath(path)
    return {
        "recording": recording.as_posix(),
        "sidecar": sidecar_path(recording, call_id).as_posix(),
    }


def _accounted(commits: Iterable[_Commit]) -> set[str]:
    return {path for commit in commits for path in _files_of(commit.path, commit.call_id).values()}


def _deleted_files(deletion: Deletion) -> Iterator[tuple[str, str]]:
    """What a deletion took away: the logged path, and the committed one should they differ."""
    paths = dict.fromkeys(
        [deletion.path, *([deletion.recording.path] if deletion.recording else [])]
    )
    for path in paths:
        yield from _files_of(path, deletion.call_id).items()


def _lingering(state_dir: Path, retention: Ledger, accounted: Collection[str]) -> str | None:
    """A recording logged as deleted, and its sidecar, must be gone."""
    for deletion in retention.deletions():
        for kind, path in _deleted_files(deletion):
            if path not in accounted and os.path.lexists(state_dir / path):
                return (
                    f"{LOG_NAME} line {deletion.seq}: {kind} {path} of call {deletion.call_id!r} "
                    f"is logged as deleted ({deletion.why}) but still exists (a deletion cut "
                    "short by a crash is finished at the daemon's next start)"
                )
    return None


def _listing_failed(exc: OSError) -> None:
    if not isinstance(exc, FileNotFoundError):  # gone meanwhile, or no recordings/ yet
        raise exc


def _files_under(state_dir: Path) -> Iterator[str]:
    """Every entry under recordings/ but its folders, sorted, relative to ``state_dir``."""
    for folder, folders, files in os.walk(state_dir / RECORDINGS, onerror=_listing_failed):
        folders.sort()
        links = [name for name in folders if os.path.islink(os.path.join(folder, name))]
        for name in sorted([*files, *links]):
            yield (Path(folder) / name).relative_to(state_dir).as_posix()


def _being_written(path: str, open_calls: Collection[str]) -> bool:
    """A file of a call without outcome yet: the live daemon may be writing it right now."""
    name = PurePosixPath(path).name.removeprefix(".")
    return any(name.startswith((f"{call_id}.", f"{call_id}-")) for call_id in open_calls)


def _shown(value: object) -> str:
    """A name from the disk or the log, quoted when it would not print on one line as is."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _stray(path: str) -> str:
    name = PurePosixPath(path).name
    if name.startswith(".") and name.endswith(".tmp"):
        return (
            f"{_shown(path)} is a temp file no log line accounts for: a write cut short by a "
            "crash leaves one, and the daemon's recovery removes it at its next start"
        )
    return (
        f"{_shown(path)} is not accounted for by the log: it is not the recording or sidecar "
        "of a committed call that was not deleted since"
    )


def _unaccounted(
    state_dir: Path, accounted: Collection[str], open_calls: Collection[str]
) -> str | None:
    """Every file under recordings/ is accounted for by the log, or being written now."""
    try:
        for path in _files_under(state_dir):
            if path not in accounted and not _being_written(path, open_calls):
                return _stray(path)
    except OSError as exc:
        return f"{exc.filename} cannot be listed ({exc.strerror or exc})"
    return None


def _check_recordings(state_dir: Path, rules: _CallRules) -> tuple[int, str | None]:
    live = rules.live_commits()
    for checked, commit in enumerate(live):
        problem = _check_recording(state_dir, commit)
        if problem is not None:
            return checked, problem
    accounted = _accounted(live)
    problem = _lingering(state_dir, rules.retention, accounted) or _unaccounted(
        state_dir, accounted, rules.open_calls()
    )
    return len(live), problem


def _overdue(retention: Ledger, now: datetime) -> str | None:
    """A purge runs at least daily: a recording a day past its retention was missed."""
    for recording in retention.overdue(now):
        until = recording.retain_until
        assert until is not None  # overdue, so due: every purpose has an end
        late = timedelta(seconds=round((now - until).total_seconds()))
        return (
            f"{LOG_NAME} line {recording.seq}: call {recording.call_id!r} is overdue by {late}: "
            f"its retain_until is {iso(until)}, it is not held, yet its recording "
            f"{recording.path} has not been deleted"
        )
    return None


def _walk(path: Path) -> tuple[_CallRules, str | None]:
    """The whole chain first; a chain problem outranks any call-rule problem."""
    rules = _CallRules()
    try:
        for entry in read_chain(path):
            rules.feed(entry)
    except CommitLogError as exc:
        return rules, str(exc)
    return rules, rules.problem or rules.open_call_problem() or _premature(rules.retention)


def verify(state_dir: Path, now: datetime | None = None) -> VerifyResult:
    """Check the log's chain, its call and retention rules, every committed recording and
    sidecar, that the log accounts for every file under recordings/, and that nothing is
    overdue at ``now`` (by default, the current time)."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        return VerifyResult(False, f"{LOG_NAME} is missing or not a file in {state_dir}", 0, 0)
    rules, problem = _walk(path)
    checked = 0
    if problem is None:
        checked, problem = _check_recordings(state_dir, rules)
    if problem is None:
        problem = _overdue(rules.retention, utcnow() if now is None else now)
    return VerifyResult(problem is None, problem, rules.entries, checked)


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
    kept: list[float] = field(default_factory=list)
    gone: list[float] = field(default_factory=list)
    rolled: list[float] = field(default_factory=list)

    def add(self, entry: Mapping[str, Any], was_open: bool) -> None:
        event = entry["event"]
        if event == "call_started":
            self.started += 1
            self.open += 1
        elif event == "recording_deleted":
            self.deleted += 1
        elif event in OUTCOME_EVENTS:
            self.open -= int(was_open)
            self._outcome(entry)

    def _outcome(self, entry: Mapping[str, Any]) -> None:
        if entry["event"] == "call_wiped":
            self.wiped += 1
            self.lost_in_crash += int(entry.get("why") == "lost_in_crash")
            self.gone.append(_seconds(entry.get("seconds")))
            return
        self.committed += 1
        self.by_reason.update(r for r in _names(entry.get("reasons")) if r in REASONS)
        self.by_purpose.update(_names(entry.get("purposes")))
        self.kept.append(_seconds(entry.get("seconds")))
        self.rolled.append(_seconds(entry.get("rolled_seconds")))

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
            seconds_kept=round(math.fsum(self.kept), 3),
            seconds_wiped=round(math.fsum(self.gone), 3),
            rolled_seconds=round(math.fsum(self.rolled), 3),
        )


@dataclass
class _Census:
    """Tallies every entry into the totals and its call's line and agent."""

    entries: int = 0
    first_time: str | None = None
    last_time: str | None = None
    totals: _Tally = field(default_factory=_Tally)
    lines: dict[str, _Tally] = field(default_factory=dict)
    agents: dict[str, _Tally] = field(default_factory=dict)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)
    open_ids: set[str] = field(default_factory=set)

    def add(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        self.first_time = self.first_time or entry["time"]
        self.last_time = entry["time"]
        call_id = entry.get("call_id")
        if not isinstance(call_id, str):
            self.totals.add(entry, was_open=False)
            return
        was_open = self._track(entry, call_id)
        line, agent = self.owners.get(call_id) or (str(entry.get("line", UNKNOWN)), UNKNOWN)
        for tally in (
            self.totals,
            self.lines.setdefault(line, _Tally()),
            self.agents.setdefault(agent, _Tally()),
        ):
            tally.add(entry, was_open)

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

    def freeze(self, retention: Retention, accesses: Sequence[Access]) -> Report:
        return Report(
            entries=self.entries,
            first_time=self.first_time,
            last_time=self.last_time,
            totals=self.totals.freeze(),
            per_line=_freeze_groups(self.lines),
            per_agent=_freeze_groups(self.agents),
            retention=retention,
            accesses=accesses,
        )


def _owner(entry: Mapping[str, Any]) -> tuple[str, str]:
    agent = entry.get("agent")
    return str(entry.get("line", UNKNOWN)), NO_AGENT if agent is None else str(agent)


def _freeze_groups(groups: Mapping[str, _Tally]) -> dict[str, Figures]:
    return {name: tally.freeze() for name, tally in sorted(groups.items())}


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
            "earliest_retain_until": _iso(self.earliest),
            "latest_retain_until": _iso(self.latest),
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
    def of(cls, ledger: Ledger, now: datetime) -> Retention:
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
            deletions=ledger.deletions(),
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


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


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

    entries: int
    first_time: str | None
    last_time: str | None
    totals: Figures
    per_line: Mapping[str, Figures]
    per_agent: Mapping[str, Figures]
    retention: Retention
    accesses: Sequence[Access]

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
        }

    def render(self) -> str:
        """Plain-text tables with headings, for a terminal or a printed audit file."""
        sections = [
            _summary(self),
            _section("Totals", _totals_table(self.totals)),
            _section("Commits by reason", _count_table("reason", self.totals.by_reason)),
            _section("Commits by purpose", _count_table("purpose", self.totals.by_purpose)),
            _section("Per line", _group_table("line", self.per_line)),
            _section("Per agent", _group_table("agent", self.per_agent)),
            _section("Retention by purpose", _purpose_table(self.retention.by_purpose)),
            _section("Retention totals", _retention_table(self.retention)),
            _section("Deletions", _deletion_table(self.retention.deletions)),
            _section("Accesses", _access_table(self.accesses)),
        ]
        return "\n\n".join(sections) + "\n"


def report(state_dir: Path, now: datetime | None = None) -> Report:
    """Figures over the whole log, retention as of ``now`` (by default the current time);
    raises CommitLogError when the log is missing, its chain breaks, or a retention event
    cannot be read."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CommitLogError(f"{LOG_NAME} is missing in {state_dir}")
    census, ledger, accesses = _Census(), Ledger(), []
    for entry in read_chain(path):
        census.add(entry)
        ledger.apply(entry)
        if entry["event"] == "recording_accessed":
            accesses.append(Access.of(entry))
    return census.freeze(Retention.of(ledger, utcnow() if now is None else now), accesses)


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
    return (name, *(str(n) for n in counts), _iso(p.earliest) or "-", _iso(p.latest) or "-")


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
    by = ["-" if text is None else _shown(text) for text in (d.actor, d.reason)]
    return (str(d.seq), _shown(d.call_id), why, iso(d.time), *by)


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
        (_shown(a.call_id), str(a.log_line), a.time, _shown(a.actor), _shown(a.reason))
        for a in sorted(accesses, key=lambda a: (first[a.call_id], a.log_line))
    ]
    return _table(("call", "log line", "when", "actor", "reason"), rows, "lrlll")
