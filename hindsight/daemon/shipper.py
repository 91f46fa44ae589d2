"""Ships the commit log's closed segments to the object store, write-once.

A segment is the lines ``first``..``last`` of ``commit.log``, byte for byte, stored under the
host's prefix as ``log/{first:012d}-{last:012d}.jsonl`` with Object Lock (the store's
``lock_mode``, retain-until now + ``retention_days``) and its SHA-256 in ``x-amz-meta-sha256``
(``hindsight.segments``; ``docs/formats.md``, "Shipped log segments"). The auditor verifies
a host from these alone (``hindsight audit verify --s3``).

Rules:

- Contiguous and never overlapping: the first segment starts at line 1, each next one at the
  line after the last one shipped. What is shipped is learnt from the bucket (a listing of
  ``log/``) the first time, and again after any failure; in between it is kept in memory.
- Only what the log says: every line shipped is checked as ``read_chain`` checks it (its
  hash, ``seq``, ``prev``), carried on from the last line shipped, so a segment starts where
  the one before ended. A local log that breaks its chain, is shorter than what the bucket
  holds, or holds other bytes than a shipped segment is a ``ShipError``: nothing is
  uploaded, and a person must look (it is never retried by itself).
- Safe to call again and after a crash: before a segment is uploaded, the bucket is asked
  for one starting at the same line. One found there (an upload whose reply was lost, a
  crash after the PUT) counts as shipped when it holds exactly the log's bytes for its
  lines; with other bytes it is a ``ShipError``.
- Bounded memory: a segment is read into memory whole (it is one PutObject), and is at most
  ``max_lines`` lines and about ``max_bytes`` bytes; the log itself is never read whole.
- I/O only: it reads ``commit.log`` (never writes it, never takes its lock) and talks to the
  store. Run it in a thread of its own (``ShipperThread``) or in the worker, never in the
  control loop or the audio path: a store that hangs blocks a call for about
  ``2 * read_timeout`` per attempt.

How the daemon uses it (see /work/notes/s3-audit.md)::

    shipper = Shipper(store, state_dir / "commit.log", retention_days=cfg.s3_log_retention_days,
                      max_lines=cfg.s3_ship_lines)
    thread = ShipperThread(shipper, ShipPolicy(cfg.s3_ship_lines, cfg.s3_ship_seconds))
    log.listen(thread.noted)          # cheap: notes the seq and the time, under the log's lock
    thread.start(log.last_seq)        # ships what an earlier run left unshipped
    ...
    thread.stop(log.last_seq)         # at a clean stop, after the last line: ships the rest
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from hindsight.clock import utcnow
from hindsight.commitlog import GENESIS, whole_line
from hindsight.errors import CommitLogError, StoreError
from hindsight.objectstore import ObjectMissing, ObjectStore, StoreUnavailable, VersionInfo
from hindsight.segments import (
    LOG_FOLDER,
    SEQ_DIGITS,
    SHA256_META,
    LineChain,
    SeqRange,
    parse_segment_key,
    segment_key,
)

log = logging.getLogger(__name__)

MAX_LINES = 10_000  # storage.s3_ship_lines' default
SHIP_SECONDS = 300.0  # storage.s3_ship_seconds' default
MAX_BYTES = 8 << 20  # a segment closes at this size even before max_lines (one PutObject)
RETENTION_DAYS = 3650.0  # storage.s3_log_retention_days' default
_BLOCK = 1 << 20


class ShipError(StoreError):
    """The local log and the bucket disagree, or the local log is broken: nothing is shipped
    until a person has looked. Not transient: do not retry it by itself."""


@dataclass(frozen=True)
class Shipped:
    """A segment now in the bucket: uploaded now, or found there already (``adopted``)."""

    first: int
    last: int
    key: str
    version_id: str
    sha256: str
    size: int
    adopted: bool = False


@dataclass
class _Position:
    """The next line to ship: its seq, where it starts in the file, the chain up to it."""

    seq: int
    offset: int
    chain: LineChain


def _file_offsets(path: Path, numbers: set[int]) -> dict[int, int]:
    """The byte offset where each line of ``numbers`` (1-based) starts, for those the file
    reaches (line n starts after n - 1 line ends), counted in blocks: never whole in memory."""
    found: dict[int, int] = {}
    wanted = sorted(numbers)
    if not wanted:
        return found
    index, lines, offset = 0, 0, 0
    while index < len(wanted) and wanted[index] <= 1:
        found[wanted[index]] = 0
        index += 1
    with path.open("rb") as handle:
        while index < len(wanted):
            block = handle.read(_BLOCK)
            if not block:
                break
            start = 0
            while index < len(wanted):
                end = block.find(b"\n", start)
                if end < 0:
                    break
                lines += 1
                start = end + 1
                while index < len(wanted) and wanted[index] == lines + 1:
                    found[wanted[index]] = offset + start
                    index += 1
            offset += len(block)
    return found


def _lines_from(handle: BinaryIO, offset: int) -> Iterator[bytes]:
    handle.seek(offset)
    while line := handle.readline():
        yield line


class Shipper:
    """Ships ``commit.log``'s lines to ``store`` (one host's prefix) as closed segments."""

    def __init__(
        self,
        store: ObjectStore,
        log_path: Path,
        *,
        retention_days: float = RETENTION_DAYS,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_lines < 1 or max_bytes < 1:
            raise ValueError("max_lines and max_bytes must be positive")
        self.store = store
        self.path = log_path
        self.retention_days = retention_days
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.clock = clock
        self._at: _Position | None = None  # None: ask the bucket first
        self._lock = threading.Lock()  # one ship at a time

    @property
    def shipped_seq(self) -> int | None:
        """The last line known to be shipped (0: none); None until the bucket was asked."""
        at = self._at
        return None if at is None else at.seq - 1

    def ship(self, up_to_seq: int) -> list[Shipped]:
        """Ship every line not shipped yet up to ``up_to_seq`` (lines that are durable in the
        log: ``CommitLog.last_seq`` or less), in segments of at most ``max_lines`` lines.
        Returns what was shipped (nothing when all was). Raises ``StoreUnavailable`` when the
        store cannot be reached (call again later: nothing is lost or doubled), ``ShipError``
        when the log and the bucket disagree, other ``StoreError``s when the store refuses."""
        with self._lock:
            done: list[Shipped] = []
            try:
                if self._at is None:
                    self._at = self._sync()
                at = self._at
                while at.seq <= up_to_seq:
                    shipped, at = self._ship_one(at, up_to_seq)
                    self._at = at
                    done.append(shipped)
            except BaseException:
                self._at = None  # unsure what landed: ask the bucket again next time
                raise
            return done

    # -- what the bucket holds ------------------------------------------------------------

    def _segments(self, prefix: str = LOG_FOLDER) -> dict[SeqRange, list[VersionInfo]]:
        found: dict[SeqRange, list[VersionInfo]] = {}
        for version in self.store.versions(prefix):
            span = parse_segment_key(version.key)
            if span is None:
                if not version.delete_marker:
                    log.warning(
                        "%s: not a log segment's name; ignored", self.store.url(version.key)
                    )
                continue
            if not version.delete_marker:
                found.setdefault(span, []).append(version)
        return found

    def _sync(self) -> _Position:
        """Where shipping goes on: after the last segment in the bucket, which must be
        contiguous from line 1 and hold the log's own bytes."""
        segments = sorted(self._segments())
        expected = 1
        for span in segments:
            if span.first != expected:
                what = "overlaps the one before" if span.first < expected else "leaves a gap"
                raise ShipError(
                    f"{self.store.url(segment_key(*span))} {what} (the next segment should "
                    f"start at line {expected}): the bucket's log is not contiguous; nothing "
                    "is shipped until someone has looked"
                )
            expected = span.last + 1
        if not segments:
            return _Position(1, 0, LineChain(0, GENESIS, self.path.name))
        last = segments[-1]
        offsets = _file_offsets(self.path, {last.first, last.last, last.last + 1})
        if last.last + 1 not in offsets:
            raise ShipError(
                f"{self.path} holds fewer than {last.last} lines, yet the bucket holds "
                f"{self.store.url(segment_key(*last))}: the local log is not the one shipped"
            )
        with self.path.open("rb") as handle:
            handle.seek(offsets[last.first])
            data = handle.read(offsets[last.last + 1] - offsets[last.first])
        self._same_bytes(last, data)
        entry = whole_line(
            self.path.name, offsets[last.last], data[offsets[last.last] - offsets[last.first] :]
        )
        if entry is None or entry.get("seq") != last.last:
            raise ShipError(
                f"{self.path} line {last.last}, the last one shipped, is not a whole line with "
                "its own hash: the local log is broken there"
            )
        return _Position(
            last.last + 1,
            offsets[last.last + 1],
            LineChain(last.last, entry["hash"], self.path.name),
        )

    def _same_bytes(self, span: SeqRange, data: bytes) -> str:
        """The segment ``span`` in the bucket holds exactly ``data``: the version first
        written, and any later one too (its SHA-256 from its metadata, else its bytes)."""
        key = segment_key(*span)
        digest = hashlib.sha256(data).hexdigest()
        versions = self._segments(key).get(span, [])
        if not versions:
            raise ObjectMissing(f"{self.store.url(key)}: gone meanwhile", "NoSuchKey", 404)
        for version in versions:
            theirs = self._digest(key, version.version_id)
            if theirs != digest:
                raise ShipError(
                    f"{self.store.url(key)} (version {version.version_id}) holds other bytes "
                    f"than lines {span.first}..{span.last} of {self.path} (sha256 {theirs[:16]}…, "
                    f"the log's {digest[:16]}…): nothing is shipped until someone has looked"
                )
        return versions[-1].version_id

    def _digest(self, key: str, version_id: str) -> str:
        """The SHA-256 of a version's bytes, hashed from the bytes themselves (the metadata
        is the shipper's own word, and the auditor trusts it no more than this does)."""
        digest = hashlib.sha256()
        with self.store.get_stream(key, version_id) as reader:
            while block := reader.read(_BLOCK):
                digest.update(block)
        return digest.hexdigest()

    # -- shipping -------------------------------------------------------------------------

    def _read(self, at: _Position, up_to_seq: int, lines: int) -> tuple[bytes, LineChain]:
        """Up to ``lines`` whole lines from ``at`` (fewer at ``max_bytes``, never none),
        each checked against the chain so far; the chain after them."""
        chain = LineChain(at.chain.seq, at.chain.hash, self.path.name)
        parts: list[bytes] = []
        size = 0
        with self.path.open("rb") as handle:
            for data in _lines_from(handle, at.offset):
                try:
                    chain.check(data)
                except CommitLogError as exc:
                    if not data.endswith(b"\n"):
                        break  # a line being written: not durable, not asked for
                    raise ShipError(f"{self.path}: {exc}; nothing after it is shipped") from exc
                parts.append(data)
                size += len(data)
                if len(parts) >= lines or size >= self.max_bytes:
                    break
        if chain.seq < min(at.seq + lines - 1, up_to_seq) and size < self.max_bytes:
            raise ShipError(
                f"{self.path} holds whole lines only up to {chain.seq}; asked to ship up to "
                f"{up_to_seq}"
            )
        return b"".join(parts), chain

    def _ship_one(self, at: _Position, up_to_seq: int) -> tuple[Shipped, _Position]:
        there = self._segments(f"{LOG_FOLDER}{at.seq:0{SEQ_DIGITS}d}-")
        if there:
            return self._adopt(at, up_to_seq, sorted(there))
        data, chain = self._read(at, up_to_seq, min(self.max_lines, up_to_seq - at.seq + 1))
        first, last = at.seq, chain.seq
        key = segment_key(first, last)
        digest = hashlib.sha256(data).hexdigest()
        until = (
            self.clock() + timedelta(days=self.retention_days) if self.retention_days > 0 else None
        )
        uploaded = self.store.put_stream(
            key, io.BytesIO(data), until, metadata={SHA256_META: digest}
        )
        if uploaded.sha256 != digest:  # the bytes sent are the bytes read: a bug otherwise
            raise ShipError(f"{self.store.url(key)}: sent other bytes than read")
        log.info(
            "shipped %s (%d lines, %d bytes)", self.store.url(key), last - first + 1, len(data)
        )
        shipped = Shipped(first, last, key, uploaded.version_id, digest, len(data))
        return shipped, _Position(last + 1, at.offset + len(data), chain)

    def _adopt(
        self, at: _Position, up_to_seq: int, spans: list[SeqRange]
    ) -> tuple[Shipped, _Position]:
        """A segment starting at ``at`` is there already (a lost reply, a crash): it counts
        as shipped when it holds the log's bytes for its lines."""
        if len(spans) > 1:
            names = ", ".join(segment_key(*span) for span in spans)
            raise ShipError(f"the bucket holds several segments starting at line {at.seq}: {names}")
        span = spans[0]
        data, chain = self._read(at, span.last, span.lines)
        if chain.seq != span.last:
            raise ShipError(
                f"{self.store.url(segment_key(*span))} holds lines up to {span.last}, but "
                f"{self.path} only up to {chain.seq}"
            )
        version_id = self._same_bytes(span, data)
        log.info("found %s shipped already", self.store.url(segment_key(*span)))
        digest = hashlib.sha256(data).hexdigest()
        shipped = Shipped(
            span.first, span.last, segment_key(*span), version_id, digest, len(data), adopted=True
        )
        return shipped, _Position(span.last + 1, at.offset + len(data), chain)


class ShipPolicy:
    """When to ship: once ``lines`` lines wait, or ``seconds`` after the first line that
    waits, whichever comes first (and at a clean stop, which the caller does). Thread-safe
    and cheap: ``noted`` runs under the commit log's lock for every line."""

    def __init__(
        self,
        lines: int = MAX_LINES,
        seconds: float = SHIP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lines = lines
        self.seconds = seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._last = 0  # the last line noted
        self._shipped = 0  # the last line shipped
        self._since: float | None = None  # when the first line that waits was noted

    def noted(self, seq: int) -> None:
        """Line ``seq`` is durable in the log."""
        with self._lock:
            if seq > self._last:
                self._last = seq
            if self._since is None and self._last > self._shipped:
                self._since = self.clock()

    def shipped(self, seq: int) -> None:
        """Every line up to ``seq`` is in the bucket."""
        with self._lock:
            self._shipped = max(self._shipped, seq)
            self._last = max(self._last, seq)
            self._since = None if self._last <= self._shipped else self.clock()

    @property
    def last(self) -> int:
        return self._last

    def due(self) -> int | None:
        """The line to ship up to now, or None when nothing is due yet."""
        with self._lock:
            waiting = self._last - self._shipped
            if waiting <= 0:
                return None
            if waiting >= self.lines:
                return self._last
            if self._since is not None and self.clock() - self._since >= self.seconds:
                return self._last
            return None

    def wait(self) -> float:
        """Seconds until a ship may come due by time alone (for a thread's sleep)."""
        with self._lock:
            if self._since is None:
                return self.seconds
            return max(0.0, self._since + self.seconds - self.clock())


class ShipperThread:
    """A thread that only ships: wakes when the policy says so, backs off while the store is
    unavailable (1 s doubling to 60 s), and stops shipping on a ``ShipError`` (logged as an
    error, kept in ``error``) until restarted."""

    BACKOFF = (1.0, 60.0)

    def __init__(self, shipper: Shipper, policy: ShipPolicy) -> None:
        self.shipper = shipper
        self.policy = policy
        self.error: str | None = None  # the last failure, for status and metrics
        self.failed = False  # a ShipError: shipping stopped
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = self.BACKOFF[0]  # the next wait after a failure
        self._retry_in: float | None = None  # after a failure: when to try again

    def noted(self, entry: Mapping[str, Any]) -> None:
        """A ``CommitLog.listen`` listener: note the line; wake the thread when a ship is due."""
        seq = entry.get("seq")
        if isinstance(seq, int):
            self.policy.noted(seq)
            if self.policy.last - (self.shipper.shipped_seq or 0) >= self.policy.lines:
                self._wake.set()

    def start(self, last_seq: int) -> None:
        """Start shipping; ``last_seq``: the log's last line now (an earlier run may have left
        lines unshipped: they are shipped at once)."""
        self.policy.noted(last_seq)
        self._thread = threading.Thread(target=self._run, name="log-shipper", daemon=True)
        self._thread.start()
        self._wake.set()

    def stop(self, last_seq: int | None = None, timeout: float = 30.0) -> bool:
        """Stop the thread; with ``last_seq`` (the log's last line, after the daemon's last
        append), ship everything up to it first. True when all of it was shipped."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if last_seq is None or self.failed:
            return last_seq is None
        try:
            self.shipper.ship(last_seq)
        except StoreError as exc:
            self.error = str(exc)
            log.error("the commit log could not be shipped at stop: %s", exc)
            return False
        self.policy.shipped(last_seq)
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._sleep())
            self._wake.clear()
            if self._stopping.is_set() or self.failed:
                continue
            up_to = self.policy.due()
            if up_to is None:
                continue
            self._ship(up_to)

    def _sleep(self) -> float:
        if self._retry_in is not None:
            return self._retry_in
        return max(0.05, self.policy.wait())

    def _failed(self, message: str) -> None:
        self.error = message
        self._retry_in = self._backoff
        self._backoff = min(self._backoff * 2, self.BACKOFF[1])

    def _ship(self, up_to: int) -> None:
        try:
            self.shipper.ship(up_to)
        except StoreUnavailable as exc:
            self._failed(str(exc))
            log.warning("the commit log waits to be shipped: %s", exc)
            return
        except ShipError as exc:
            self.error, self.failed = str(exc), True
            log.error("the commit log is no longer shipped: %s", exc)
            return
        except StoreError as exc:  # refused: retried with the backoff, loudly
            self._failed(str(exc))
            log.error("the commit log could not be shipped: %s", exc)
            return
        except Exception as exc:  # never let the thread die silently
            self._failed(f"{type(exc).__name__}: {exc}")
            log.exception("the log shipper failed")
            return
        self.error, self._retry_in, self._backoff = None, None, self.BACKOFF[0]
        self.policy.shipped(up_to)
