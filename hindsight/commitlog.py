"""The tamper-evident commit log: the daemon appends to it, the auditor reads and verifies it.

``<state_dir>/commit.log`` is JSON Lines, one object per line, each holding ``seq`` (1, 2, 3…
without gaps), ``time``, ``event``, the event's fields, ``prev`` (the ``hash`` of the line
before, ``GENESIS`` on the first) and ``hash`` (see ``entry_hash``).

Rules:

- Append-only: a whole line once written is never rewritten, truncated or removed, not even
  a torn tail left by a crash. A log whose chain is broken or whose tail is torn is reported
  and refused; it is never silently extended or repaired. Only a person moves a torn tail
  aside, with ``hindsight audit repair`` (``hindsight.audit.repair``), and the daemon logs
  that repair at its next start.
- Every append is written and fsynced before it returns. An append that fails part-way (a
  full disk) is cut back to the end of the last whole line: those bytes were never
  acknowledged, and leaving them would tear the log for good. Only when that cut fails too
  does this ``CommitLog`` refuse all further appends.
- One appender at a time: ``open`` takes an exclusive ``flock`` on the file.
- Any event kind is accepted; the chain never depends on the event. The call events are the
  exception that keeps invariant 4: a ``call_started`` may not reuse a call id, and a
  ``call_marked`` or outcome must name a call that is open.
- Lines are split on ``\\n`` only and parsed as UTF-8 JSON; ``NaN`` and ``Infinity`` are not JSON.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn, Self

from hindsight import clock
from hindsight.durable import fsync_dir, make_dirs
from hindsight.errors import CommitLogError, TornTailError

log = logging.getLogger(__name__)

LOG_NAME = "commit.log"
GENESIS = "0" * 64
OUTCOME_EVENTS = frozenset({"call_committed", "call_wiped"})
CALL_EVENTS = OUTCOME_EVENTS | {"call_started", "call_marked"}
RESERVED_FIELDS = frozenset({"seq", "time", "event", "prev", "hash"})
FILE_MODE = 0o640


def _dumps(obj: Mapping[str, Any], *, sort_keys: bool = False) -> str:
    return json.dumps(
        obj, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical(obj: Mapping[str, Any]) -> bytes:
    """``obj`` in the contract's canonical form: compact JSON, keys sorted, UTF-8."""
    return _dumps(obj, sort_keys=True).encode("utf-8")


def entry_hash(obj: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``obj`` without its ``hash`` key, in the contract's canonical form."""
    body = {key: value for key, value in obj.items() if key != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _RawLine:
    number: int
    offset: int
    data: bytes
    last: bool


def _raw_lines(handle: BinaryIO) -> Iterator[_RawLine]:
    """Every line with its 1-based number and byte offset; one line of look-ahead marks the last."""
    previous: bytes | None = None
    number = offset = 0
    for data in handle:
        if previous is not None:
            yield _RawLine(number, offset, previous, last=False)
            offset += len(previous)
        number += 1
        previous = data
    if previous is not None:
        yield _RawLine(number, offset, previous, last=True)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# One decoder for every line: json.loads would build one, and sniff the encoding, per line.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _torn(name: str, raw: _RawLine, why: str) -> TornTailError:
    return TornTailError(
        f"{name} line {raw.number}: the tail is torn at byte offset {raw.offset} ({why}; "
        "an append was cut short, probably by a crash)",
        raw.offset,
    )


def _parse(name: str, raw: _RawLine) -> dict[str, Any]:
    if raw.last and not raw.data.endswith(b"\n"):
        raise _torn(name, raw, "the last line has no line end")
    try:
        obj = _DECODER.decode(raw.data.decode("utf-8"))
    except ValueError as exc:
        if raw.last:
            raise _torn(name, raw, "the last line is not valid JSON") from exc
        raise CommitLogError(f"{name} line {raw.number}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise CommitLogError(f"{name} line {raw.number}: not a JSON object")
    return obj


# Called with (lines read, bytes read) after each line is parsed, before it is yielded.
LineHook = Callable[[int, int], None]


def read_entries(path: Path, on_line: LineHook | None = None) -> Iterator[dict[str, Any]]:
    """Parse every line of the log, without checking the chain (see ``read_chain``);
    ``on_line``, if given, is told how far the reading has come (a progress bar)."""
    try:
        with path.open("rb") as handle:
            for raw in _raw_lines(handle):
                entry = _parse(path.name, raw)
                if on_line is not None:
                    on_line(raw.number, raw.offset + len(raw.data))
                yield entry
    except OSError as exc:
        raise CommitLogError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


class _Chain:
    """The running state of the hash chain; ``check`` raises on the first broken link."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.hash = GENESIS

    def check(self, number: int, entry: Mapping[str, Any]) -> None:
        where = f"{self.name} line {number}"
        stated = entry.get("hash")
        if not isinstance(stated, str) or stated != _safe_hash(entry):
            raise CommitLogError(f"{where}: hash does not match the line's content (altered)")
        seq = entry.get("seq")
        if type(seq) is not int or seq != self.seq + 1:
            raise CommitLogError(
                f"{where}: seq is {seq!r}, expected {self.seq + 1} "
                "(a line was removed, duplicated or moved)"
            )
        if entry.get("prev") != self.hash:
            raise CommitLogError(
                f"{where}: prev does not match the hash of line {number - 1} "
                "(that line was altered, or lines were removed or reordered)"
            )
        for key in ("time", "event"):
            if not isinstance(entry.get(key), str):
                raise CommitLogError(f"{where}: {key!r} is missing or not a string")
        self.seq, self.hash = seq, stated


def _safe_hash(entry: Mapping[str, Any]) -> str | None:
    try:
        return entry_hash(entry)
    except ValueError:  # a lone surrogate cannot be UTF-8 encoded, so it cannot be hashed
        return None


def read_chain(path: Path, on_line: LineHook | None = None) -> Iterator[dict[str, Any]]:
    """``read_entries`` that also checks seq, prev and hash, raising on the first break."""
    chain = _Chain(path.name)
    for number, entry in enumerate(read_entries(path, on_line), start=1):
        chain.check(number, entry)
        yield entry


# ---------------------------------------------------------------------------------------------
# Appending


@dataclass
class _Calls:
    """Which call ids were ever started and which calls still wait for their outcome."""

    ids: set[str] = field(default_factory=set)
    open: dict[str, str] = field(default_factory=dict)
    last_epoch: int = 0  # the last sampling epoch opened; 0 before any

    def note(self, entry: Mapping[str, Any]) -> None:
        event, call_id = entry["event"], entry.get("call_id")
        if event == "sampling_epoch" and isinstance(entry.get("epoch"), int):
            self.last_epoch = max(self.last_epoch, entry["epoch"])
        if not isinstance(call_id, str):
            return
        if event == "call_started":
            self.ids.add(call_id)
            self.open[call_id] = str(entry.get("line"))
        elif event in OUTCOME_EVENTS:
            self.open.pop(call_id, None)

    def refusal(self, event: str, fields: Mapping[str, Any]) -> str | None:
        """Why appending ``event`` would break invariant 4, or None."""
        if event not in CALL_EVENTS:
            return None
        call_id = fields.get("call_id")
        if not isinstance(call_id, str):
            return f"{event} needs a string call_id"
        if event == "call_started" and call_id in self.ids:
            return f"call id {call_id!r} was used before"
        if event == "call_started" and not isinstance(fields.get("line"), str):
            return "call_started needs a string line"
        if event != "call_started" and call_id not in self.open:
            return f"{event} names call {call_id!r}, which is not open"
        return None


def _open_fd(path: Path) -> int:
    """An O_APPEND descriptor on the log; a new file gets FILE_MODE and a durable folder entry."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    make_dirs(path.parent)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask must not decide who may read the log
        os.fsync(fd)
        fsync_dir(path.parent)
    except OSError:
        os.close(fd)
        raise
    return fd


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise CommitLogError(f"{path}: another process has the commit log open") from exc


def _resume(path: Path) -> tuple[_Chain, _Calls]:
    chain, calls = _Chain(path.name), _Calls()
    try:
        for number, entry in enumerate(read_entries(path), start=1):
            chain.check(number, entry)
            calls.note(entry)
    except CommitLogError as exc:
        raise CommitLogError(
            f"{exc}; the log will not be extended{_repair_hint(exc, path)}"
        ) from exc
    return chain, calls


def _repair_hint(exc: CommitLogError, path: Path) -> str:
    """A torn tail is a crash's doing, and has a remedy; any other break is not repaired."""
    if not isinstance(exc, TornTailError):
        return ""
    return (
        f": run `hindsight audit repair --state-dir {path.parent}` to move the torn bytes "
        "aside for the auditor, then start again"
    )


class CommitLog:
    """An open, verified commit log that appends durably. Thread-safe; use ``CommitLog.open``.

    ``call_ids`` and ``open_calls`` are kept up to date by ``append``; treat them as read-only.
    """

    def __init__(self, path: Path, fd: int, chain: _Chain, calls: _Calls) -> None:
        self.path = path
        self._fd = fd
        self._chain = chain
        self._calls = calls
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []
        self._closed = False
        self._broken: str | None = None
        self.call_ids: set[str] = calls.ids
        self.open_calls: dict[str, str] = calls.open

    @classmethod
    def open(cls, path: Path) -> Self:
        """Create the log, or resume it after checking every line; raise on any break."""
        try:
            fd = _open_fd(path)
        except OSError as exc:
            raise CommitLogError(f"{path}: cannot open ({exc.strerror or exc})") from exc
        try:
            _lock(fd, path)
            chain, calls = _resume(path)
        except BaseException:
            os.close(fd)
            raise
        log.info("commit log %s open at seq %d, %d calls open", path, chain.seq, len(calls.open))
        return cls(path, fd, chain, calls)

    @property
    def last_seq(self) -> int:
        return self._chain.seq

    @property
    def last_epoch(self) -> int:
        """The number of the last sampling epoch the log opened; 0 before any."""
        return self._calls.last_epoch

    @property
    def last_hash(self) -> str:
        return self._chain.hash

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one durable line and return it as a reader will parse it."""
        with self._lock:
            self._check_writable(event, fields)
            entry, data = self._build(event, fields)
            self._write(data)
            self._chain.seq, self._chain.hash = entry["seq"], entry["hash"]
            self._calls.note(entry)
            for listener in self._listeners:
                listener(entry)
            return entry

    @contextmanager
    def still(self) -> Iterator[None]:
        """Hold the log still: no line is appended meanwhile, and every listener has seen
        every line written so far. State kept beside the log (the retention ledger) is read
        under this, so a client that has just read a line from the file finds it applied."""
        with self._lock:
            yield

    def listen(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Call ``listener`` with every entry appended from now on, in log order, under the
        log's lock: state kept beside the log (the retention ledger) never misses a line."""
        self._listeners.append(listener)

    def _check_writable(self, event: str, fields: Mapping[str, Any]) -> None:
        if self._closed:
            raise CommitLogError(f"{self.path}: the commit log is closed")
        if self._broken is not None:
            raise CommitLogError(f"{self.path}: {self._broken}; the log will not be extended")
        if not isinstance(event, str) or not event:
            raise CommitLogError(f"cannot log {event!r}: an event is a non-empty string")
        reserved = sorted(RESERVED_FIELDS & fields.keys())
        if reserved:
            raise CommitLogError(f"cannot log {event}: reserved fields {reserved}")
        refusal = self._calls.refusal(event, fields)
        if refusal is not None:
            raise CommitLogError(f"cannot log {event}: {refusal}")

    def _build(self, event: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        entry = {
            "seq": self._chain.seq + 1,
            "time": clock.iso(clock.utcnow()),
            "event": event,
            **fields,
            "prev": self._chain.hash,
        }
        try:
            # Round-trip first, so the hash is over exactly what a reader will parse
            # (tuples become lists, int-keyed dicts get string keys).
            body: dict[str, Any] = json.loads(_dumps(entry))
            body["hash"] = entry_hash(body)
            return body, (_dumps(body) + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise CommitLogError(f"cannot log {event}: {exc}") from exc

    def _write(self, data: bytes) -> None:
        size = os.fstat(self._fd).st_size
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError as exc:
            if written:
                self._roll_back(size, written, len(data), exc)
            raise CommitLogError(f"{self.path}: cannot append ({exc.strerror or exc})") from exc

    def _roll_back(self, size: int, written: int, wanted: int, exc: OSError) -> None:
        """Cut off the bytes of an append that failed (a full disk): they were never
        acknowledged, and leaving them would tear the log for good."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
        except OSError as again:
            self._broken = f"an append failed after {written} of {wanted} bytes ({exc}; {again})"
            log.error("commit log %s: %s", self.path, self._broken)
            return
        log.error(
            "commit log %s: an append failed (%s); its partial line was removed", self.path, exc
        )

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> CommitLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
