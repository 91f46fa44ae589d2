"""``verify``: the log and the recordings under a state dir, checked against each other.

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
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pyrage

from hindsight import chaincheck
from hindsight.audit.callbook import CallBook, OpenCall
from hindsight.audit.common import DELETION_WHYS, Span, shown
from hindsight.audit.draws import DRAWN_EVENTS, Draws
from hindsight.checkpoint import SignedCheckpoint
from hindsight.clock import iso, utcnow
from hindsight.commitlog import LOG_NAME, RESERVED_FIELDS, LineHook
from hindsight.daemon.repaired import EVENT as LOG_REPAIRED
from hindsight.daemon.repaired import Repair
from hindsight.durable import file_sha256
from hindsight.errors import CommitLogError
from hindsight.layout import RECORDINGS, sidecar_path
from hindsight.objectstore import SCHEME, bucket_and_key
from hindsight.record import COMMITTED_FIELDS, Committed
from hindsight.retention import RETENTION_EVENTS, Deletion, Ledger, Recording

# ---------------------------------------------------------------------------------------------
# verify


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` with ``problem`` None, or the first problem found; ``recordings`` were checked."""

    ok: bool
    problem: str | None
    entries: int
    recordings: int
    draws: int = 0  # calls whose sampling draw was recomputed
    unverified_epochs: tuple[int, ...] = ()  # sampling epochs whose seed is not known


@dataclass(frozen=True)
class _Commit:
    seq: int
    call_id: str
    path: str
    sha256: str
    fields: Mapping[str, Any]  # the whole call_committed line, which its sidecar must match
    marks: tuple[object, ...]  # the purposes the call was marked for, in the log's order


def _at(entry: Mapping[str, Any]) -> str:
    return f"{LOG_NAME} line {entry['seq']}"


def _inside(path: object) -> bool:
    """True for a relative path that stays inside the state dir (as ``PurePosixPath`` sees
    it: not absolute, no ``..`` part; split by hand, as this is asked of every commit)."""
    if not isinstance(path, str) or not path:
        return False
    return not path.startswith("/") and ".." not in path.split("/")


_Rule = Callable[[Mapping[str, Any]], "str | None"]


@dataclass
class _CallRules:
    """Walks the entries in order, applying the call rules and feeding the retention ledger;
    keeps the first problem."""

    state_dir: Path | None = None  # where deleted files are looked for (None: nowhere)
    # Where a logged recording may lie (a relative path inside the state dir; from a bucket,
    # also its s3:// URL), and how a problem says so.
    path_ok: Callable[[object], bool] = field(default=_inside)
    path_rule: str = "a relative path inside the state dir"
    # Told of every deletion with the commit it took (None: none known), as it comes.
    on_gone: Callable[[Deletion, _Commit | None], None] | None = None
    entries: int = 0
    problem: str | None = None
    calls: CallBook = field(default_factory=CallBook)
    run_starts: list[int] = field(default_factory=lambda: [0])
    stopped_at: int | None = None
    commits: dict[str, _Commit] = field(default_factory=dict)  # of recordings that exist
    repairs: list[tuple[int, Repair]] = field(default_factory=list)  # log_repaired, by line
    draws: Draws = field(default_factory=Draws)
    witnessed: Mapping[int, SignedCheckpoint] = field(default_factory=dict)
    checkpoint_keys: set[str] = field(default_factory=set)  # named by daemon_started lines
    premature: str | None = None  # the first purge of a recording that was not due
    lingering: list[tuple[Deletion, str, str]] = field(default_factory=list)  # files still there

    rules: dict[str, _Rule] = field(init=False, repr=False, compare=False)
    retention: Ledger = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Deletions are looked at as they come, not kept: memory stays bounded.
        self.retention = Ledger(on_deleted=self._deleted)
        self.rules = {
            "daemon_started": self._daemon_started,
            "daemon_stopped": self._daemon_stopped,
            "call_started": self._call_started,
            "call_marked": self._call_marked,
            "call_committed": self._call_committed,
            "call_wiped": self._call_wiped,
            "recording_deleted": self._recording_deleted,
            "recording_accessed": self._recording_accessed,
            LOG_REPAIRED: self._log_repaired,
        }

    def feed(self, entry: Mapping[str, Any]) -> None:
        self.entries += 1
        if self.problem is not None:
            return
        event = entry["event"]
        rule = self.rules.get(event)
        self.problem = (
            (self._as_witnessed(entry) if self.witnessed else None)
            or (rule(entry) if rule is not None else None)
            or (self._retain(entry) if event in RETENTION_EVENTS else None)
            or (self.draws.feed(entry) if event in DRAWN_EVENTS else None)
        )

    def _retain(self, entry: Mapping[str, Any]) -> str | None:
        try:
            self.retention.apply(entry)
        except CommitLogError as exc:
            return str(exc)
        return None

    def _as_witnessed(self, entry: Mapping[str, Any]) -> str | None:
        seen = self.witnessed.get(entry["seq"])
        if seen is None or seen.hash == entry["hash"]:
            return None
        return (
            f"{_at(entry)} has hash {entry['hash'][:16]}…, but a witness saw hash "
            f"{seen.hash[:16]}… there on {seen.time}: the log was rewritten"
        )

    def foreign_key(self) -> str | None:
        """A witnessed checkpoint signed by a key no ``daemon_started`` of the log named (logs
        from before the key was logged name none, and are not held to this)."""
        if not self.checkpoint_keys:
            return None
        for seen in self.witnessed.values():
            if seen.public_key not in self.checkpoint_keys:
                return (
                    f"a witness's checkpoint of line {seen.seq} is signed by key "
                    f"{seen.public_key[:16]}…, which no daemon_started in {LOG_NAME} names"
                )
        return None

    def cut_short(self) -> str | None:
        """The log ends before a line a witness saw."""
        last = max(self.witnessed, default=0)
        if last <= self.entries:
            return None
        seen = self.witnessed[last]
        return (
            f"{LOG_NAME} ends at line {self.entries}, but a witness saw line {last} on "
            f"{seen.time}: the log was cut short"
        )

    @property
    def run(self) -> int:
        return len(self.run_starts) - 1

    def _daemon_started(self, entry: Mapping[str, Any]) -> None:
        self.run_starts.append(entry["seq"])
        if isinstance(entry.get("checkpoint_key"), str):
            self.checkpoint_keys.add(entry["checkpoint_key"])
        self.stopped_at = None

    def _daemon_stopped(self, entry: Mapping[str, Any]) -> None:
        self.stopped_at = entry["seq"]

    def _call_started(self, entry: Mapping[str, Any]) -> str | None:
        call_id = entry.get("call_id")
        if not isinstance(call_id, str):
            return f"{_at(entry)}: call_started has no call_id"
        first = self.calls.started_line(call_id)
        if first is not None:
            return f"{_at(entry)}: call_started reuses call id {call_id!r} of line {first}"
        self.calls.start(call_id, entry["seq"], self.run)
        return None

    def _open_call(self, entry: Mapping[str, Any]) -> tuple[OpenCall | None, str | None]:
        """The open call ``entry`` names, or why there is none: never started, or settled."""
        call_id = entry.get("call_id")
        call = self.calls.open.get(call_id) if isinstance(call_id, str) else None
        if call is not None:
            return call, None
        event = entry["event"]
        settled = self.calls.settled(call_id) if isinstance(call_id, str) else None
        if settled is None:
            return None, f"{_at(entry)}: {event} for call {call_id!r}, which was never started"
        if event == "call_marked":
            return None, (
                f"{_at(entry)}: call {call_id!r} is marked after its outcome on line "
                f"{settled.outcome}"
            )
        return None, (
            f"{_at(entry)}: call {call_id!r} has a second outcome ({event}); "
            f"its first was on line {settled.outcome}"
        )

    def _call_marked(self, entry: Mapping[str, Any]) -> str | None:
        call, problem = self._open_call(entry)
        if call is not None and entry.get("purpose") not in call.marks:
            call.marks.append(entry.get("purpose"))
        return problem

    def _call_wiped(self, entry: Mapping[str, Any]) -> str | None:
        call, problem = self._open_call(entry)
        if call is not None:
            self.calls.settle(entry["call_id"], entry["seq"])
        return problem

    def _call_committed(self, entry: Mapping[str, Any]) -> str | None:
        call, problem = self._open_call(entry)
        if call is None:
            return problem
        call_id = entry["call_id"]
        self.calls.settle(call_id, entry["seq"])
        path, digest = entry.get("path"), entry.get("sha256")
        local = self.path_ok is _inside  # (a bucket's verify takes s3:// paths)
        if local and isinstance(path, str) and path.startswith(SCHEME):
            bucket = bucket_and_key(path)[0]
            return (
                f"{_at(entry)}: this recording is in an object store (bucket {bucket!r}): a "
                f'host with storage.backend = "s3" is verified from the bucket, with '
                f"`hindsight audit verify --s3 s3://{bucket}/PREFIX`"
            )
        if not self.path_ok(path):
            return f"{_at(entry)}: path {path!r} is not {self.path_rule}"
        if not isinstance(digest, str):
            return f"{_at(entry)}: call_committed has no sha256"
        assert isinstance(path, str)
        marks = tuple(call.marks)
        self.commits[call_id] = _Commit(entry["seq"], call_id, path, digest, entry, marks)
        return None

    def _deleted(self, deletion: Deletion) -> None:
        """A recording's deletion, applied by the ledger: its commit is no longer checked;
        a purge of one that was not due is a problem; its files must be gone (those still
        there are checked at the end, when it is known which of them a later commit owns)."""
        self.calls.deleted(deletion.call_id, deletion.seq)
        commit = self.commits.get(deletion.call_id)
        if commit is not None and commit.seq < deletion.seq:
            del self.commits[deletion.call_id]
        else:
            commit = None
        if self.on_gone is not None:
            self.on_gone(deletion, commit)
        if self.premature is None and deletion.premature and deletion.recording is not None:
            self.premature = (
                f"{LOG_NAME} line {deletion.seq}: call {deletion.call_id!r} was purged as expired "
                f"at {iso(deletion.time)} while {_not_due(deletion.recording)}: a premature purge"
            )
        if self.state_dir is not None:
            for kind, path in _deleted_files(deletion):
                if os.path.lexists(self.state_dir / path):
                    self.lingering.append((deletion, kind, path))

    def _log_repaired(self, entry: Mapping[str, Any]) -> str | None:
        """``hindsight audit repair`` moved a torn tail aside; its copy is checked later."""
        names = [field.name for field in dataclasses.fields(Repair)]
        if not all(name in entry for name in names):
            return f"{_at(entry)}: log_repaired must give {', '.join(names)}"
        repair = Repair(*(entry[name] for name in names))
        problem = repair.problem()
        if problem is None and repair.after_seq >= entry["seq"]:
            problem = "after_seq must be a line before it"
        if problem is not None:
            return f"{_at(entry)}: log_repaired: {problem}"
        self.repairs.append((entry["seq"], repair))
        return None

    def _recording_deleted(self, entry: Mapping[str, Any]) -> str | None:
        path, why = entry.get("path"), entry.get("why")
        if not self.path_ok(path):
            return f"{_at(entry)}: path {path!r} is not {self.path_rule}"
        if why not in DELETION_WHYS:
            return f"{_at(entry)}: recording_deleted has why {why!r}, not expired or erased"
        if why == "erased" and not all(_named(entry.get(key)) for key in ("actor", "reason")):
            return f"{_at(entry)}: an erasure must say who asked (actor) and why (reason)"
        return None

    def _recording_accessed(self, entry: Mapping[str, Any]) -> str | None:
        """Someone opened a recording: it must exist at that point, and they must be named."""
        call_id = entry.get("call_id")
        if not isinstance(call_id, str) or self.retention.get(call_id) is None:
            gone = self.calls.settled(call_id) if isinstance(call_id, str) else None
            deleted = None if gone is None else gone.deleted
            why = "never committed" if deleted is None else f"deleted on line {deleted}"
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
        for call_id, call in self.calls.open.items():
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
        return list(self.calls.open)

    def live_commits(self) -> list[_Commit]:
        """The commits whose recording exists by the log: not deleted since, in log order."""
        return sorted(
            (
                commit
                for commit in self.commits.values()
                if (recording := self.retention.get(commit.call_id)) is not None
                and recording.seq == commit.seq
            ),
            key=lambda commit: commit.seq,
        )


def _named(value: object) -> bool:
    return isinstance(value, str) and value != ""


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
    return _sidecar_problem(data, commit, sidecar)


def _sidecar_problem(data: object, commit: _Commit, sidecar: str) -> str | None:
    """What a sidecar's parsed JSON (``data``, named ``sidecar``) says against its commit."""
    where = f"{LOG_NAME} line {commit.seq}"
    if not isinstance(data, dict) or (data.get("call_id"), data.get("sha256")) != (
        commit.call_id,
        commit.sha256,
    ):
        return f"{where}: sidecar {sidecar} disagrees with the log on call_id or sha256"
    return _fields_disagree(data, commit) or _marks_disagree(data, commit)


# Sidecar fields of before 0.2 (``ended``, ``caller_ref``): an old sidecar lacks them, and a
# call_committed recovered from it then holds their default.
_DEFAULTS = {
    field.name: field.default
    for field in dataclasses.fields(Committed)
    if field.default is not dataclasses.MISSING
}


def _canonical(value: object) -> str:
    """Equal JSON values compare equal, and only those: 0 is not false, nor 1 1.0."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _fields_disagree(data: Mapping[str, Any], commit: _Commit) -> str | None:
    """The sidecar repeats every field of its call_committed line but what only the log adds
    (its framing, ``recovered``): a field the two share must be equal, by name, and a sidecar
    field the line holds must be in the sidecar. The line is the one of the commit: a resolve
    or extension later changes the ledger's end, never the sidecar's."""
    for key, logged in commit.fields.items():
        if key in RESERVED_FIELDS:
            continue
        said = f"{LOG_NAME} line {commit.seq} says {logged!r}"
        if key in data:
            if _canonical(data[key]) != _canonical(logged):
                return f"sidecar of call {commit.call_id!r} says {key} {data[key]!r} but {said}"
        elif key in COMMITTED_FIELDS and not (
            key in _DEFAULTS and _canonical(logged) == _canonical(_DEFAULTS[key])
        ):
            return f"sidecar of call {commit.call_id!r} has no {key}, yet {said}"
    return None


def _marks_disagree(data: Mapping[str, Any], commit: _Commit) -> str | None:
    """The log holds the first mark of each purpose (call_marked), never a note: the sidecar's
    marks must name the same purposes, first seen in the same order."""
    marks = data.get("marks", [])
    if not isinstance(marks, list) or not all(isinstance(mark, dict) for mark in marks):
        return f"sidecar of call {commit.call_id!r} has marks that are not a list of objects"
    said: list[object] = []
    for mark in marks:
        if mark.get("purpose") not in said:
            said.append(mark.get("purpose"))
    if said != list(commit.marks):
        return (
            f"sidecar of call {commit.call_id!r} says marks for {said!r} but {LOG_NAME} marks "
            f"it for {list(commit.marks)!r} (its call_marked lines before line {commit.seq})"
        )
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


def _lingering(
    state_dir: Path, lingering: Iterable[tuple[Deletion, str, str]], accounted: Collection[str]
) -> str | None:
    """A recording logged as deleted, and its sidecar, must be gone."""
    for deletion, kind, path in lingering:
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


def _stray(path: str) -> str:
    name = PurePosixPath(path).name
    if name.startswith(".") and name.endswith(".tmp"):
        return (
            f"{shown(path)} is a temp file no log line accounts for: a write cut short by a "
            "crash leaves one, and the daemon's recovery removes it at its next start"
        )
    return (
        f"{shown(path)} is not accounted for by the log: it is not the recording or sidecar "
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


def _empty_beside_recordings(state_dir: Path, entries: int) -> str | None:
    """An empty log accounts for nothing: recordings beside it mean it was emptied."""
    if entries:
        return None
    try:
        files = sum(1 for _ in _files_under(state_dir))
    except OSError as exc:
        return f"{exc.filename} cannot be listed ({exc.strerror or exc})"
    if files:
        return f"{LOG_NAME} is empty, yet {RECORDINGS}/ holds {files} files"
    return None


def _torn_copies(state_dir: Path, repairs: Iterable[tuple[int, Repair]]) -> str | None:
    """Every torn tail a repair moved aside is still kept, byte for byte, beside the log."""
    for seq, repair in repairs:
        copy = state_dir / repair.kept_as
        try:
            size, digest = copy.stat().st_size, file_sha256(copy)
        except OSError as exc:
            return (
                f"{LOG_NAME} line {seq}: {repair.kept_as}, the torn tail a repair moved aside, "
                f"cannot be read ({exc.strerror or exc}); it is kept for the auditor"
            )
        if (size, digest) != (repair.torn_bytes, repair.torn_sha256):
            return (
                f"{LOG_NAME} line {seq}: {repair.kept_as} is not the torn tail the repair moved "
                f"aside ({size} bytes, sha256 {digest}; logged {repair.torn_bytes} bytes, "
                f"sha256 {repair.torn_sha256})"
            )
    return None


def _check_recordings(state_dir: Path, rules: _CallRules, span: Span) -> tuple[int, str | None]:
    """Hash the recordings (of the calls committed in ``span``), then make sure the log
    accounts for every file, whatever the span: the checks of what is not there are cheap."""
    problem = _empty_beside_recordings(state_dir, rules.entries) or _torn_copies(
        state_dir, rules.repairs
    )
    if problem is not None:
        return 0, problem
    live = rules.live_commits()
    hashed = [commit for commit in live if span.place(commit.fields) == 0]
    for checked, commit in enumerate(hashed):
        problem = _check_recording(state_dir, commit)
        if problem is not None:
            return checked, problem
    accounted = _accounted(live)
    problem = _lingering(state_dir, rules.lingering, accounted) or _unaccounted(
        state_dir, accounted, rules.open_calls()
    )
    return len(hashed), problem


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


def _walk(
    path: Path,
    identities: Sequence[pyrage.x25519.Identity],
    witnessed: Mapping[int, SignedCheckpoint],
    on_line: LineHook | None,
    state_dir: Path | None = None,
) -> tuple[_CallRules, str | None]:
    """The whole chain first; a chain problem outranks any call-rule problem. The caller
    closes ``rules.calls``."""
    rules = _CallRules(state_dir, draws=Draws(identities), witnessed=witnessed)
    return rules, _walk_entries(chaincheck.entries(path, on_line), rules)


def _walk_entries(entries: Iterable[Mapping[str, Any]], rules: _CallRules) -> str | None:
    """Feed ``rules`` every entry of a chain-checking source (``read_chain``, or the shipped
    segments of a bucket), in order; a ``CommitLogError`` it raises (a broken chain) is the
    problem, and outranks any call-rule problem. Then the checks at the log's end."""
    try:
        for entry in entries:
            rules.feed(entry)
    except CommitLogError as exc:
        return str(exc)
    return (
        rules.problem
        or rules.cut_short()
        or rules.foreign_key()
        or rules.open_call_problem()
        or rules.premature
        or rules.draws.finish()
    )


WHOLE = Span()


def verify(
    state_dir: Path,
    now: datetime | None = None,
    identities: Sequence[pyrage.x25519.Identity] = (),
    witnessed: Mapping[int, SignedCheckpoint] | None = None,
    on_line: LineHook | None = None,
    span: Span = WHOLE,
) -> VerifyResult:
    """Check the log's chain, its call and retention rules, every sampling draw whose seed is
    known (revealed, or sealed to one of ``identities``), every committed recording and
    sidecar, that the log accounts for every file under recordings/, and that nothing is
    overdue at ``now`` (by default, the current time). With ``witnessed`` (a witness's
    checkpoints by line), every line a witness saw must still be there with that hash.
    ``on_line`` is told how far the reading of the log has come (a progress bar). With a
    ``span``, only the recordings of the calls committed in it are hashed; every line is
    still read, its chain and rules checked, and every file accounted for."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        return VerifyResult(False, f"{LOG_NAME} is missing or not a file in {state_dir}", 0, 0)
    rules, problem = _walk(path, identities, witnessed or {}, on_line, state_dir)
    rules.calls.close()
    checked = 0
    if problem is None:
        checked, problem = _check_recordings(state_dir, rules, span)
    if problem is None:
        problem = _overdue(rules.retention, utcnow() if now is None else now)
    draws = rules.draws
    return VerifyResult(
        problem is None,
        problem,
        rules.entries,
        checked,
        draws.checked,
        tuple(draws.unverified),
    )
