"""The commit log's index: what the daemon needs of its log's past, so that start-up does not
depend on how long the log is.

``<state_dir>/commit.index`` is an SQLite database that only the daemon writes, derived from
``commit.log`` alone (``hindsight.commitlog`` keeps it as it appends). It holds:

- the **verified head**: the log's first ``size`` bytes were read and checked by the daemon
  (every hash, ``prev`` and ``seq``, and every call rule of ``hindsight.commitlog``), and end
  with line ``seq``, whose hash is ``hash`` and which starts at byte ``line_offset``; and
  the last sampling epoch opened (``last_epoch``);
- every call id ever started (invariant 4: an id is never used twice), and the calls still
  waiting for their outcome;
- where the retention lines (``call_committed``, ``recording_*``) of each recording that
  exists now lie in the log, so the retention ledger is rebuilt from those lines alone;
- where each ``recording_deleted`` lies, and which deletions were logged since the daemon
  last made sure their files are gone.

Rules:

- The index is never the truth: the log is. At start the daemon checks that the log still
  holds the indexed head line, byte for byte where the index says it is, with the same
  ``seq`` and ``hash`` (which chains every line before it); then it checks, line by line as
  before, only the lines after it. A log shorter than the verified head, or with another
  line there, was cut short or rewritten: the daemon refuses it, as it refuses a broken chain.
- The head only ever names a line that was durable in the log before the index learnt of it
  (the log is fsynced before the index is written), so an index is at most behind its log,
  never ahead: a crash leaves the daemon a few lines to re-check at the next start.
- An index that is missing, unreadable or of another version is rebuilt from the whole log,
  once (the first start after an upgrade, or after an operator moved it aside).
- Written in SQLite's WAL mode with ``synchronous=NORMAL``: a power loss may lose the last
  few updates, never the index's consistency. Pages of 1 KiB and a write-ahead log kept under
  64 KiB: a nearly full disk keeps its room for recordings. Mode 0600: call ids are not for
  other users.
- Not thread-safe by itself: ``hindsight.commitlog.CommitLog`` serialises every use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1
INDEX_MODE = 0o600
PAGE_SIZE = 1024
WAL_PAGES = 64  # the write-ahead log is folded into the database past this many pages
# The retention lines of a recording that exists, which the ledger is rebuilt from.
KEPT_EVENTS = frozenset(
    {
        "call_committed",
        "recording_resolved",
        "recording_extended",
        "recording_held",
        "recording_released",
    }
)
DELETED_EVENT = "recording_deleted"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS head (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    line_offset INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL,
    last_epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS calls (call_id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS open_calls (call_id TEXT PRIMARY KEY, line TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kept (
    call_id TEXT NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (call_id, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleted (
    call_id TEXT PRIMARY KEY, offset INTEGER NOT NULL, pending INTEGER NOT NULL
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Head:
    """The verified head: see the module's rules."""

    size: int
    line_offset: int
    seq: int
    hash: str
    last_epoch: int


class LogIndex:
    """An open index; ``note`` each appended line, ``commit`` to make the updates stick."""

    def __init__(self, path: Path, db: sqlite3.Connection) -> None:
        self.path = path
        self._db = db
        self._writing = True  # a transaction is open; see ``abandon``

    @classmethod
    def open(cls, path: Path) -> LogIndex:
        """Open (or create) the index at ``path``; ``sqlite3.Error`` when it is unusable."""
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, INDEX_MODE))
        os.chmod(path, INDEX_MODE)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            # Small pages and a small write-ahead log: the index's few updates a second
            # must not take the room a recording needs on a nearly full disk.
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only before the database exists
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * PAGE_SIZE}")
            db.executescript(_SCHEMA)
            db.execute("BEGIN")
        except sqlite3.Error:
            db.close()
            raise
        return cls(path, db)

    def head(self) -> Head | None:
        """The verified head, or None for a new index (or one of another version)."""
        row = self._db.execute(
            "SELECT version, size, line_offset, seq, hash, last_epoch FROM head"
        ).fetchone()
        if row is None or row[0] != VERSION:
            return None
        return Head(*row[1:])

    def clear(self) -> None:
        """Forget everything, before a rebuild from the whole log."""
        for table in ("head", "calls", "open_calls", "kept", "deleted"):
            self._db.execute(f"DELETE FROM {table}")  # names from the tuple above

    # -- what the log's call rules ask ----------------------------------------------------------

    def knows(self, call_id: str) -> bool:
        """Was ``call_id`` ever started?"""
        found = self._db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,))
        return found.fetchone() is not None

    def open_calls(self) -> dict[str, str]:
        """Every call waiting for its outcome, with its line."""
        return dict(self._db.execute("SELECT call_id, line FROM open_calls ORDER BY rowid"))

    # -- learning a line ------------------------------------------------------------------------

    def note(self, entry: Mapping[str, Any], offset: int, size: int, last_epoch: int) -> None:
        """Take in the line ``entry``, found at ``offset`` and ending the log at ``size``; the
        caller has checked it (chain and call rules). Takes effect at ``commit``."""
        event, call_id = entry["event"], entry.get("call_id")
        db = self._db
        if isinstance(call_id, str):
            if event == "call_started":
                db.execute("INSERT OR IGNORE INTO calls VALUES (?)", (call_id,))
                db.execute(
                    "INSERT OR REPLACE INTO open_calls VALUES (?, ?)",
                    (call_id, str(entry.get("line"))),
                )
            elif event in ("call_committed", "call_wiped"):
                db.execute("DELETE FROM open_calls WHERE call_id = ?", (call_id,))
            if event == "call_committed":  # a new recording, or one committed again
                db.execute("DELETE FROM kept WHERE call_id = ?", (call_id,))
                db.execute("INSERT INTO kept VALUES (?, ?)", (call_id, offset))
            elif event in KEPT_EVENTS:
                if self._has_kept(call_id):
                    db.execute("INSERT OR IGNORE INTO kept VALUES (?, ?)", (call_id, offset))
            elif event == DELETED_EVENT:
                db.execute("DELETE FROM kept WHERE call_id = ?", (call_id,))
                db.execute("INSERT OR REPLACE INTO deleted VALUES (?, ?, 1)", (call_id, offset))
        db.execute(
            "INSERT OR REPLACE INTO head VALUES (1, ?, ?, ?, ?, ?, ?)",
            (VERSION, size, offset, entry["seq"], entry["hash"], last_epoch),
        )

    def _has_kept(self, call_id: str) -> bool:
        found = self._db.execute("SELECT 1 FROM kept WHERE call_id = ? LIMIT 1", (call_id,))
        return found.fetchone() is not None

    def commit(self) -> None:
        """Make every ``note`` so far stick (not fsynced: see the module's rules)."""
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")

    # -- what the retention ledger asks ----------------------------------------------------------

    def kept_offsets(self) -> list[int]:
        """Where the retention lines of every recording that exists lie, in log order."""
        return [row[0] for row in self._db.execute("SELECT offset FROM kept ORDER BY offset")]

    def deleted_offset(self, call_id: str) -> int | None:
        """Where ``call_id``'s last ``recording_deleted`` lies, if it has one."""
        found = self._db.execute("SELECT offset FROM deleted WHERE call_id = ?", (call_id,))
        row = found.fetchone()
        return None if row is None else int(row[0])

    def pending_deletions(self) -> list[int]:
        """Where each deletion logged since the last ``deletions_done`` lies, in log order."""
        rows = self._db.execute("SELECT offset FROM deleted WHERE pending = 1 ORDER BY offset")
        return [row[0] for row in rows]

    def deletions_done(self) -> None:
        """Every deletion logged so far has had its files removed (checked at start)."""
        self._db.execute("UPDATE deleted SET pending = 0 WHERE pending = 1")
        self.commit()

    def abandon(self) -> None:
        """Drop the updates not yet committed and write nothing more in this run: the head
        stays where it was. What was committed can still be read."""
        with contextlib.suppress(sqlite3.Error):  # a failed statement may have done it
            self._db.execute("ROLLBACK")
        self._writing = False

    def close(self) -> None:
        if self._writing:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                log.warning("commit index %s: the last updates were not saved (%s)", self.path, exc)
        self._writing = False
        self._db.close()
