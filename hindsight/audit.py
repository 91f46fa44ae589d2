"""The auditor's view of a state dir: ``verify`` the log and recordings, ``report`` on them.

Rules:

- Pure reads: nothing under the state dir is created, changed or locked, and no daemon is needed.
- Integrity before meaning: the whole hash chain is checked first, because the contents of a
  tampered log cannot be trusted; then the call rules; then the recording files.
- ``verify`` stops at the FIRST problem and states it in one sentence naming the log line.
  Once the chain holds, a line's number equals its ``seq``.
- Recordings are hashed in 1 MiB blocks, never read whole.
- ``report`` refuses a log whose chain is broken: figures from a tampered log would mislead.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hindsight.commitlog import LOG_NAME, OUTCOME_EVENTS, read_chain
from hindsight.durable import file_sha256
from hindsight.errors import CommitLogError
from hindsight.layout import sidecar_path

REASONS = ("sampled", "marked")
NO_AGENT = "(none)"
UNKNOWN = "(unknown)"


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
class _Ledger:
    """Walks the entries in order, applying the call rules; keeps the first problem."""

    entries: int = 0
    problem: str | None = None
    calls: dict[str, _Call] = field(default_factory=dict)
    run_starts: list[int] = field(default_factory=lambda: [0])
    stopped_at: int | None = None
    commits: list[_Commit] = field(default_factory=list)
    deletions: dict[str, int] = field(default_factory=dict)

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
        }

    def feed(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        if self.problem is None:
            self.problem = self.rules.get(entry["event"], _no_rule)(entry)

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
        path = entry.get("path")
        if not _inside(path):
            return f"{_at(entry)}: path {path!r} is not a relative path inside the state dir"
        assert isinstance(path, str)
        self.deletions[path] = entry["seq"]
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


def _no_rule(entry: Mapping[str, Any]) -> None:
    """Events without a call rule (daemon life cycle, future kinds) only need the chain."""


# What a recording of each kind begins with.
MAGIC = {".flac": b"fLaC"}


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


def _lingering(state_dir: Path, ledger: _Ledger) -> str | None:
    """A recording logged as deleted (and not committed again since) must be gone."""
    last_commit = {commit.path: commit.seq for commit in ledger.commits}
    for path, seq in ledger.deletions.items():
        if seq > last_commit.get(path, 0) and (state_dir / path).exists():
            return f"{LOG_NAME} line {seq}: recording {path} is logged as deleted but still exists"
    return None


def _check_recordings(state_dir: Path, ledger: _Ledger) -> tuple[int, str | None]:
    checked = 0
    for commit in ledger.commits:
        if ledger.deletions.get(commit.path, 0) > commit.seq:
            continue
        problem = _check_recording(state_dir, commit)
        if problem is not None:
            return checked, problem
        checked += 1
    return checked, _lingering(state_dir, ledger)


def _walk(path: Path) -> tuple[_Ledger, str | None]:
    """The whole chain first; a chain problem outranks any call-rule problem."""
    ledger = _Ledger()
    try:
        for entry in read_chain(path):
            ledger.feed(entry)
    except CommitLogError as exc:
        return ledger, str(exc)
    return ledger, ledger.problem or ledger.open_call_problem()


def verify(state_dir: Path) -> VerifyResult:
    """Check the log's chain, its call rules, and every committed recording and sidecar."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        return VerifyResult(False, f"{LOG_NAME} is missing or not a file in {state_dir}", 0, 0)
    ledger, problem = _walk(path)
    checked = 0
    if problem is None:
        checked, problem = _check_recordings(state_dir, ledger)
    return VerifyResult(problem is None, problem, ledger.entries, checked)


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

    def freeze(self) -> Report:
        return Report(
            entries=self.entries,
            first_time=self.first_time,
            last_time=self.last_time,
            totals=self.totals.freeze(),
            per_line=_freeze_groups(self.lines),
            per_agent=_freeze_groups(self.agents),
        )


def _owner(entry: Mapping[str, Any]) -> tuple[str, str]:
    agent = entry.get("agent")
    return str(entry.get("line", UNKNOWN)), NO_AGENT if agent is None else str(agent)


def _freeze_groups(groups: Mapping[str, _Tally]) -> dict[str, Figures]:
    return {name: tally.freeze() for name, tally in sorted(groups.items())}


@dataclass(frozen=True)
class Report:
    """What was committed, wiped and deleted, and why; see ``to_json`` for the figures."""

    entries: int
    first_time: str | None
    last_time: str | None
    totals: Figures
    per_line: Mapping[str, Figures]
    per_agent: Mapping[str, Figures]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON; keys are stable and always present.

        ``entries`` (int), ``first_time`` and ``last_time`` (ISO 8601 or null), ``totals`` (a
        figures object), ``per_line`` and ``per_agent`` (name -> figures object, sorted by
        name; agent ``(none)`` when the call had none, ``(unknown)`` for a call without
        ``call_started``). A figures object holds ``started``, ``committed``, ``wiped``,
        ``lost_in_crash`` (part of ``wiped``), ``deleted``, ``open`` (ints), ``by_reason``
        (``sampled`` and ``marked``, always both), ``by_purpose`` (purpose -> commits, sorted),
        ``seconds_kept``, ``seconds_wiped`` and ``rolled_seconds`` (floats, rounded to ms).
        """
        return {
            "entries": self.entries,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "totals": self.totals.to_json(),
            "per_line": {name: f.to_json() for name, f in self.per_line.items()},
            "per_agent": {name: f.to_json() for name, f in self.per_agent.items()},
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
        ]
        return "\n\n".join(sections) + "\n"


def report(state_dir: Path) -> Report:
    """Figures over the whole log; raises CommitLogError when it is missing or its chain breaks."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CommitLogError(f"{LOG_NAME} is missing in {state_dir}")
    census = _Census()
    for entry in read_chain(path):
        census.add(entry)
    return census.freeze()


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
