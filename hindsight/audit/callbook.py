"""Every call an audit has met, in memory bounded however long the log.

A log never reuses a call id, and an auditor must be able to see that over millions of calls.
``CallBook`` keeps the calls still waiting for their outcome in memory (a few hundred on a
floor), and the settled ones (when each started, had its outcome, had its recording deleted)
in a temporary SQLite file, written in batches: a settled call costs memory only until the
next batch. The file is the auditor's own, in the system's temp folder, removed on ``close``;
nothing under the state dir is touched.
"""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

BATCH = 20_000  # settled calls held in memory before they go to the file
_FILTER_BITS = 25  # a filter of 2**25 bits (4 MiB): about 3% false hits at 3 million calls
_MASK = (1 << _FILTER_BITS) - 1


class _Filter:
    """A Bloom filter of fixed size over the settled call ids: a call id it has never seen
    (nearly every new call's) is answered without asking the file."""

    __slots__ = ("bits",)

    def __init__(self) -> None:
        self.bits = bytearray(1 << (_FILTER_BITS - 3))

    def add(self, key: str) -> None:
        value = hash(key)  # two bit positions from the string's own 64-bit hash (salted per
        first, second = value & _MASK, (value >> _FILTER_BITS) & _MASK  # process: fine, the
        self.bits[first >> 3] |= 1 << (first & 7)  # filter lives and dies with one audit)
        self.bits[second >> 3] |= 1 << (second & 7)

    def may_hold(self, key: str) -> bool:
        value = hash(key)  # as in add: inline, as this is asked of every new call
        first, second = value & _MASK, (value >> _FILTER_BITS) & _MASK
        bits = self.bits
        return bool(
            bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))
        )


@dataclass(slots=True)
class OpenCall:
    """A call without outcome: its ``call_started`` line, its daemon run, its marks."""

    started: int
    run: int
    marks: list[object] = field(default_factory=list)  # its call_marked purposes, in order


class Settled(NamedTuple):  # a tuple: one is made for every call, and a tuple is quick
    """A call with its outcome: the lines of its start, outcome and deletion (if any)."""

    started: int
    outcome: int
    deleted: int | None = None


class CallBook:
    def __init__(self, batch: int | None = None) -> None:
        self.open: dict[str, OpenCall] = {}
        self._batch = BATCH if batch is None else batch
        self._pending: dict[str, Settled] = {}
        self._filter = _Filter()  # every call id that went to the file
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._db: sqlite3.Connection | None = None

    def started_line(self, call_id: str) -> int | None:
        """The line of ``call_id``'s ``call_started``, if it was ever started."""
        call = self.open.get(call_id)
        if call is not None:
            return call.started
        settled = self.settled(call_id)
        return None if settled is None else settled.started

    def start(self, call_id: str, line: int, run: int) -> OpenCall:
        call = self.open[call_id] = OpenCall(line, run)
        return call

    def settle(self, call_id: str, line: int) -> None:
        """``call_id`` (open) had its outcome on ``line``."""
        call = self.open.pop(call_id)
        self._put(call_id, Settled(call.started, line))

    def deleted(self, call_id: str, line: int) -> None:
        """``call_id``'s recording was deleted on ``line`` (a call never settled is ignored)."""
        settled = self.settled(call_id)
        if settled is not None:
            self._put(call_id, Settled(settled.started, settled.outcome, line))

    def settled(self, call_id: str) -> Settled | None:
        found = self._pending.get(call_id)
        if found is not None or self._db is None or not self._filter.may_hold(call_id):
            return found
        row = self._db.execute(
            "SELECT started, outcome, deleted FROM settled WHERE call_id = ?", (call_id,)
        ).fetchone()
        return None if row is None else Settled(*row)

    def _put(self, call_id: str, settled: Settled) -> None:
        self._pending[call_id] = settled
        if len(self._pending) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        db = self._db or self._create()
        with db:
            db.executemany(
                "INSERT OR REPLACE INTO settled VALUES (?, ?, ?, ?)",
                # In key order: each page of the table is then written once a batch.
                [(k, *settled) for k, settled in sorted(self._pending.items())],
            )
        for call_id in self._pending:
            self._filter.add(call_id)
        self._pending.clear()

    def _create(self) -> sqlite3.Connection:
        self._folder = tempfile.TemporaryDirectory(prefix="hindsight-audit-")
        db = sqlite3.connect(Path(self._folder.name) / "calls.sqlite")
        db.execute("PRAGMA journal_mode=OFF")  # scratch: nothing to recover after a crash
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-8192")  # 8 MiB of pages: bounded, and most lookups hit
        db.execute(
            "CREATE TABLE settled (call_id TEXT PRIMARY KEY, started INTEGER NOT NULL, "
            "outcome INTEGER NOT NULL, deleted INTEGER) WITHOUT ROWID"
        )
        self._db = db
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None
