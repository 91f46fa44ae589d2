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

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, NoReturn, Self

from hindsight import clock
from hindsight.durable import fsync_dir, make_dirs
from hindsight.errors import CommitLogError, TornTailError
from hindsight.logindex import Head, LogIndex
from hindsight.logline import NOT_AN_OBJECT, decode_line, dumps, parse_line
from hindsight.logline import canonical as canonical  # the hashing rule, for whoever reads logs
from hindsight.logline import entry_hash as entry_hash

log = logging.getLogger(__name__)

LOG_NAME = "commit.log"
INDEX_SUFFIX = ".index"  # commit.index, beside commit.log: see hindsight.logindex
INDEX_SAVE_SECONDS = 1.0  # the index's updates are saved this often while lines come
GENESIS = "0" * 64
OUTCOME_EVENTS = frozenset({"call_committed", "call_wiped"})
CALL_EVENTS = OUTCOME_EVENTS | {"call_started", "call_marked"}
RESERVED_FIELDS = frozenset({"seq", "time", "event", "prev", "hash"})
FILE_MODE = 0o640


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _RawLine:
    number: int
    offset: int
    data: bytes
    last: bool


def _raw_lines(handle: BinaryIO, offset: int = 0, number: int = 0) -> Iterator[_RawLine]:
    """Every line from ``offset`` (where line ``number`` + 1 starts) with its 1-based number and
    byte offset; one line of look-ahead marks the last."""
    previous: bytes | None = None
    handle.seek(offset)
    for data in handle:
        if previous is not None:
            yield _RawLine(number, offset, previous, last=False)
            offset += len(previous)
        number += 1
        previous = data
    if previous is not None:
        yield _RawLine(number, offset, previous, last=True)


def _torn(name: str, raw: _RawLine, why: str) -> TornTailError:
    return TornTailError(
        f"{name} line {raw.number}: the tail is torn at byte offset {raw.offset} ({why}; "
        "an append was cut short, probably by a crash)",
        raw.offset,
    )


def _parse(name: str, raw: _RawLine) -> tuple[dict[str, Any], str | None]:
    """The line's object, and the hash its content has (None: it has none, see
    ``hindsight.logline``)."""
    if raw.last and not raw.data.endswith(b"\n"):
        raise _torn(name, raw, "the last line has no line end")
    try:
        return parse_line(raw.data)
    except ValueError as exc:
        if str(exc) == NOT_AN_OBJECT:
            raise CommitLogError(f"{name} line {raw.number}: not a JSON object") from exc
        if raw.last:
            raise _torn(name, raw, "the last line is not valid JSON") from exc
        raise CommitLogError(f"{name} line {raw.number}: not valid JSON ({exc})") from exc


def parse_whole_line(name: str, number: int, data: bytes) -> tuple[dict[str, Any], str | None]:
    """Line ``number`` of log ``name``, ``data`` with its line end, as ``read_chain`` parses
    it: its object and the hash its content has (for ``Chain.check``); CommitLogError naming
    the line if it is no JSON object."""
    return _parse(name, _RawLine(number, 0, data, last=False))


# Called with (lines read, bytes read) as the reading goes (after each block of lines is parsed,
# before its lines are yielded, when read in blocks): a progress bar.
LineHook = Callable[[int, int], None]

BLOCK = 1 << 15  # the log is read in blocks of this many bytes, and split into lines


def _block_lines(
    read: Callable[[int], bytes], name: str, on_line: LineHook | None
) -> Iterator[tuple[list[bytes], int, int, Callable[[int], bool]]]:
    """The log's whole lines, a block at a time, without their line ends: each block's lines,
    the number of the line before them, the byte offset where they start, and a test of
    whether the line at an index of that block is the log's last (to be asked only on the
    way out: it may read on). A last line without a line end is a torn tail."""
    number = offset = 0
    rest = b""
    while block := read(BLOCK):
        lines = (rest + block if rest else block).split(b"\n")
        rest = lines.pop()  # after the last line end: the start of a line, or nothing

        def last(index: int, lines: list[bytes] = lines, rest: bytes = rest) -> bool:
            return index == len(lines) - 1 and not rest and not read(1)

        size = sum(map(len, lines)) + len(lines)
        if on_line is not None and lines:
            on_line(number + len(lines), offset + size)
        yield lines, number, offset, last
        number += len(lines)
        offset += size
    if rest:
        raise _torn(
            name, _RawLine(number + 1, offset, rest, last=True), "the last line has no line end"
        )


def _scan(
    read: Callable[[int], bytes],
    name: str,
    on_line: LineHook | None,
    chained: bool,
    hashed: bool = True,
) -> Iterator[dict[str, Any]]:
    """Every line's object, each checked by a ``Chain`` when ``chained`` (raising on the
    first break); the lines as ``_raw_lines`` and ``_parse`` give them, faster: one
    generator, no object per line beyond the entry, a block's lines split at once. Not
    ``hashed``: no line's content is hashed, and ``hash`` need only be a string (for a reader
    whose hashes another process checks, ``hindsight.chaincheck``)."""
    chain = Chain(name) if chained else None
    for lines, before, offset, last in _block_lines(read, name, on_line):
        for index, data in enumerate(lines):
            try:
                if hashed:
                    entry, digest = parse_line(data)
                else:
                    entry = decode_line(data)
                    digest = entry.get("hash")
            except ValueError:  # the exact error: the line as it was, with its line end
                number = before + index + 1
                start = offset + sum(map(len, lines[:index])) + index
                _parse(name, _RawLine(number, start, data + b"\n", last(index)))
                raise  # (_parse raises on every line parse_line refuses)
            if chain is not None:
                chain.check(before + index + 1, entry, digest)
            yield entry


def _scan_file(path: Path, on_line: LineHook | None, chained: bool) -> Iterator[dict[str, Any]]:
    try:
        with path.open("rb") as handle:  # unchained, no line's hash is needed
            yield from _scan(handle.read, path.name, on_line, chained, hashed=chained)
    except OSError as exc:
        raise CommitLogError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def read_entries(path: Path, on_line: LineHook | None = None) -> Iterator[dict[str, Any]]:
    """Parse every line of the log, without checking the chain (see ``read_chain``);
    ``on_line``, if given, is told how far the reading has come (a progress bar)."""
    return _scan_file(path, on_line, chained=False)


def whole_line(name: str, offset: int, data: bytes) -> dict[str, Any] | None:
    """``data`` as one whole line whose content has the hash it states, else None."""
    if not data.endswith(b"\n") or b"\n" in data[:-1]:
        return None
    try:
        entry, digest = _parse(name, _RawLine(0, offset, data, last=False))
    except CommitLogError:
        return None
    return entry if digest is not None and entry.get("hash") == digest else None


class Chain:
    """The running state of the hash chain; ``check`` raises on the first broken link."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seq = 0
        self.hash = GENESIS

    def check(self, number: int, entry: Mapping[str, Any], digest: str | None) -> None:
        """``digest``: the hash the line's content has, which ``hash`` must state. Asked of
        every line: the link is tested at once, and ``_refuse`` says why it breaks."""
        stated, seq = entry.get("hash"), entry.get("seq")
        if (
            isinstance(stated, str)
            and stated == digest
            and type(seq) is int
            and seq == self.seq + 1
            and entry.get("prev") == self.hash
            and isinstance(entry.get("time"), str)
            and isinstance(entry.get("event"), str)
        ):
            self.seq, self.hash = seq, stated
            return
        self._refuse(number, entry, digest)

    def _refuse(self, number: int, entry: Mapping[str, Any], digest: str | None) -> NoReturn:
        """The first of the link's rules that ``entry`` breaks, raised."""
        where = f"{self.name} line {number}"
        stated = entry.get("hash")
        if not isinstance(stated, str) or stated != digest:
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
        raise AssertionError(f"{where}: refused, yet no rule is broken")  # cannot happen


def read_chain(path: Path, on_line: LineHook | None = None) -> Iterator[dict[str, Any]]:
    """``read_entries`` that also checks seq, prev and hash, raising on the first break."""
    return _scan_file(path, on_line, chained=True)


# ---------------------------------------------------------------------------------------------
# Appending


@dataclass
class _Calls:
    """Which calls still wait for their outcome, and the last sampling epoch; which call ids
    were ever started is the index's to answer (``known``)."""

    known: Callable[[str], bool]
    open: dict[str, str] = field(default_factory=dict)
    last_epoch: int = 0  # the last sampling epoch opened; 0 before any

    def note(self, entry: Mapping[str, Any]) -> None:
        event, call_id = entry["event"], entry.get("call_id")
        if event == "sampling_epoch" and isinstance(entry.get("epoch"), int):
            self.last_epoch = max(self.last_epoch, entry["epoch"])
        if not isinstance(call_id, str):
            return
        if event == "call_started":
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
        if event == "call_started" and (call_id in self.open or self.known(call_id)):
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


def index_path(path: Path) -> Path:
    """Where the index of the log at ``path`` lives: ``commit.index`` beside ``commit.log``."""
    return path.with_suffix(INDEX_SUFFIX)


def _open_index(path: Path) -> LogIndex:
    """The log's index; one that cannot be read is removed and made anew (it is derived)."""
    where = index_path(path)
    try:
        return LogIndex.open(where)
    except sqlite3.Error as exc:
        log.warning("the commit log's index %s cannot be read (%s): it is made anew", where, exc)
    for suffix in ("", "-wal", "-shm"):
        where.with_name(where.name + suffix).unlink(missing_ok=True)
    try:
        return LogIndex.open(where)
    except sqlite3.Error as exc:
        raise CommitLogError(f"{where}: the commit log's index cannot be made ({exc})") from exc


def _check_head(path: Path, handle: BinaryIO, head: Head, index: Path) -> None:
    """The log still holds, byte for byte, the line the index says the daemon verified last."""
    size = os.fstat(handle.fileno()).st_size
    again = (
        f" (if it was restored from a backup on purpose, move {index} aside and start again: "
        "the whole log is then checked once)"
    )
    if size < head.size:
        raise CommitLogError(
            f"{path.name} is {size} bytes, but the daemon had verified {head.size} bytes of it "
            f"(up to line {head.seq}): lines were removed since{again}"
        )
    handle.seek(head.line_offset)
    entry = whole_line(path.name, head.line_offset, handle.read(head.size - head.line_offset))
    if entry is None or entry.get("seq") != head.seq or entry.get("hash") != head.hash:
        raise CommitLogError(
            f"{path.name} line {head.seq} is not the line the daemon verified at byte offset "
            f"{head.line_offset}: the log was rewritten since{again}"
        )


class _Resume:
    """Reads what the index does not know yet: everything for a new index, else the lines
    after its verified head; checks each and teaches it to the index."""

    def __init__(self, path: Path, index: LogIndex, on_line: LineHook | None) -> None:
        self.path, self.index, self.on_line = path, index, on_line
        self.chain = Chain(path.name)
        self.calls = _Calls(index.knows)

    def run(self) -> None:
        try:
            name = self.path.name
            with self.path.open("rb") as handle:
                start, number = self._start(handle)
                for raw in _raw_lines(handle, start, number):
                    entry, digest = _parse(name, raw)
                    self.chain.check(raw.number, entry, digest)
                    self.calls.note(entry)
                    end = raw.offset + len(raw.data)
                    self.index.note(entry, raw.offset, end, self.calls.last_epoch)
                    if self.on_line is not None:
                        self.on_line(raw.number - number, end)  # bytes: where it is now
            self.index.commit()
        except OSError as exc:
            raise CommitLogError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc
        except sqlite3.Error as exc:
            raise CommitLogError(
                f"{self.index.path}: the commit log's index cannot be written ({exc})"
            ) from exc
        except CommitLogError as exc:
            with contextlib.suppress(sqlite3.Error):
                self.index.commit()  # what was checked stays checked, even before a torn tail
            raise CommitLogError(
                f"{exc}; the log will not be extended{_repair_hint(exc, self.path)}"
            ) from exc

    def _start(self, handle: BinaryIO) -> tuple[int, int]:
        head = self.index.head()
        if head is None:
            self.index.clear()
            return 0, 0
        _check_head(self.path, handle, head, self.index.path)
        self.chain.seq, self.chain.hash = head.seq, head.hash
        self.calls.open = self.index.open_calls()
        self.calls.last_epoch = head.last_epoch
        return head.size, head.seq


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

    ``open_calls`` is kept up to date by ``append``; treat it as read-only.
    """

    def __init__(self, path: Path, fd: int, resumed: _Resume) -> None:
        self.path = path
        self._fd = fd
        self._chain = resumed.chain
        self._calls = resumed.calls
        self._index = resumed.index
        self._index_lock = threading.Lock()  # never held while waiting for the log's lock
        self._unsaved: set[str] = set()  # call ids the index has not saved yet
        self._unindexed: set[str] | None = None  # once the index failed: those it never saved
        self._index_saved = time.monotonic()
        self._calls.known = self._known
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []
        self._closed = False
        self._broken: str | None = None
        self.open_calls: dict[str, str] = self._calls.open

    @classmethod
    def open(cls, path: Path, on_line: LineHook | None = None) -> Self:
        """Create the log, or resume it: check that it still holds the head its index says was
        verified, then check every line after it (every line, for a new index); raise on any
        break. ``on_line`` is told how far that reading has come."""
        try:
            fd = _open_fd(path)
        except OSError as exc:
            raise CommitLogError(f"{path}: cannot open ({exc.strerror or exc})") from exc
        index: LogIndex | None = None
        try:
            _lock(fd, path)
            index = _open_index(path)
            resumed = _Resume(path, index, on_line)
            resumed.run()
        except BaseException:
            if index is not None:
                index.close()
            os.close(fd)
            raise
        log.info(
            "commit log %s open at seq %d, %d calls open",
            path,
            resumed.chain.seq,
            len(resumed.calls.open),
        )
        return cls(path, fd, resumed)

    def knows(self, call_id: str) -> bool:
        """Was ``call_id`` ever started in this log? (A call id is never used twice.)"""
        with self._index_lock:
            return self._known(call_id)

    def _known(self, call_id: str) -> bool:
        if self._unindexed is not None and call_id in self._unindexed:
            return True
        try:
            return self._index.knows(call_id)
        except sqlite3.Error as exc:
            raise CommitLogError(f"{self._index.path}: cannot be read ({exc})") from exc

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
            offset = self._write(data)
            self._chain.seq, self._chain.hash = entry["seq"], entry["hash"]
            self._calls.note(entry)
            self._teach(entry, offset, offset + len(data))
            for listener in self._listeners:
                listener(entry)
            return entry

    # -- what the retention ledger needs of the log's past, through the index ------------------

    def kept_entries(self) -> list[dict[str, Any]]:
        """The retention lines (``call_committed`` and its later ``recording_*``) of every
        recording that exists now, in log order: the ledger is rebuilt from these alone."""
        return self._entries_at(self._index.kept_offsets)

    def deleted_entry(self, call_id: str) -> dict[str, Any] | None:
        """The ``recording_deleted`` line of ``call_id``'s recording, if it was deleted. May
        be asked while the log is held ``still``."""

        def offsets() -> list[int]:
            found = self._index.deleted_offset(call_id)
            return [] if found is None else [found]

        entries = self._entries_at(offsets)
        return entries[0] if entries else None

    def pending_deletions(self) -> list[dict[str, Any]]:
        """The ``recording_deleted`` lines logged since ``deletions_done`` was last called:
        those whose files a crash may have left behind."""
        return self._entries_at(self._index.pending_deletions)

    def deletions_done(self) -> None:
        """The files of every deletion logged so far are gone (the daemon made sure at start)."""
        with self._lock, self._index_lock:
            if self._unindexed is None:
                self._index.deletions_done()

    def _entries_at(self, offsets: Callable[[], list[int]]) -> list[dict[str, Any]]:
        """The lines at the index's ``offsets``, each checked against its own hash (a line
        once indexed is whole: the log's lock is not needed)."""
        with self._index_lock:
            try:
                where = offsets()
            except sqlite3.Error as exc:
                raise CommitLogError(f"{self._index.path}: cannot be read ({exc})") from exc
        entries = []
        try:
            with self.path.open("rb") as handle:
                for offset in where:
                    handle.seek(offset)
                    entries.append(self._line_at(offset, handle.readline()))
        except OSError as exc:
            raise CommitLogError(f"{self.path}: cannot be read ({exc.strerror or exc})") from exc
        return entries

    def _line_at(self, offset: int, data: bytes) -> dict[str, Any]:
        entry = whole_line(self.path.name, offset, data)
        if entry is None:
            raise CommitLogError(
                f"{self.path.name}: the line at byte offset {offset} is not the one the daemon "
                "verified there (altered since); the log will not be used"
            )
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
        with self._index_lock:
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
            body: dict[str, Any] = json.loads(dumps(entry))
            body["hash"] = entry_hash(body)
            return body, (dumps(body) + "\n").encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise CommitLogError(f"cannot log {event}: {exc}") from exc

    def _teach(self, entry: Mapping[str, Any], offset: int, end: int) -> None:
        """Tell the index of a line just made durable; its updates are saved at most every
        ``INDEX_SAVE_SECONDS`` (and at close): after a crash, the next start checks the lines
        since, as it must anyway for a line the index missed. An index that cannot be
        written is given up for this run, its unsaved updates dropped (the next start checks
        every line after its saved head again); the call ids it did not save are kept in
        memory meanwhile."""
        with self._index_lock:
            if entry["event"] == "call_started":
                self._unsaved.add(entry["call_id"])
            if self._unindexed is not None:
                return
            try:
                self._index.note(entry, offset, end, self._calls.last_epoch)
                now = time.monotonic()
                if now - self._index_saved >= INDEX_SAVE_SECONDS:
                    self._index.commit()
                    self._index_saved = now
                    self._unsaved = set()
            except sqlite3.Error as exc:
                log.error(
                    "the commit log's index %s cannot be written (%s): it is left behind for "
                    "this run, and the next start checks the lines since",
                    self._index.path,
                    exc,
                )
                self._index.abandon()
                self._unindexed = self._unsaved

    def _write(self, data: bytes) -> int:
        """Write one line; return the byte offset it starts at."""
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
        return size

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
                with self._index_lock:
                    self._index.close()
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
