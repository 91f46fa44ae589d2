"""A log repair, told by the daemon: ``hindsight audit repair`` leaves a record, the daemon
logs it as ``log_repaired`` at its next start.

Rules:

- The repair (``hindsight.audit.repair``) runs while no daemon holds the log, so it cannot log
  what it did. It leaves one record per repair beside the log instead,
  ``commit.log.repair-<UTC time>-<line>.json``: a ``Repair`` as JSON, landed whole and
  fsynced before the log is cut back.
- At start-up, right after ``daemon_started``, the daemon logs every record, oldest first, as
  ``log_repaired`` with the record's fields, and only then removes it. A daemon that dies
  before logging it logs it at the start after; one that dies between the line and the
  removal logs it twice (the same ``kept_as``).
- A record the daemon cannot read is left where it is and reported in the journal: it never
  keeps the daemon from starting, since a daemon that refuses to start is what repair ends.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from hindsight.commitlog import LOG_NAME, CommitLog
from hindsight.durable import fsync_dir

log = logging.getLogger(__name__)

TORN_PREFIX = f"{LOG_NAME}.torn-"
RECORD_PREFIX = f"{LOG_NAME}.repair-"
RECORD_SUFFIX = ".json"
EVENT = "log_repaired"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Repair:
    """What a repair did: ``torn_bytes`` bytes, of hex SHA-256 ``torn_sha256``, moved from the
    log's end into ``kept_as`` (a file name beside the log); the log now ends at
    ``after_seq``."""

    torn_bytes: int
    torn_sha256: str
    kept_as: str
    after_seq: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> Repair:
        """ValueError unless ``data`` is a record as ``hindsight audit repair`` writes it."""
        if not isinstance(data, dict) or set(data) != {field.name for field in fields(cls)}:
            raise ValueError(f"not a repair record: {data!r}")
        repair = cls(**data)
        problem = repair.problem()
        if problem is not None:
            raise ValueError(problem)
        return repair

    def problem(self) -> str | None:
        """What is wrong with these fields, or None; the auditor checks a log line with it."""
        sizes = (self.torn_bytes, self.after_seq)
        if not all(type(value) is int for value in sizes) or self.torn_bytes < 1:
            return "torn_bytes must be a positive integer and after_seq an integer"
        if self.after_seq < 0:
            return "after_seq must not be negative"
        if not isinstance(self.torn_sha256, str) or not _SHA256.fullmatch(self.torn_sha256):
            return "torn_sha256 must be a hex SHA-256"
        if not _is_torn_name(self.kept_as):
            return f"kept_as must name a {TORN_PREFIX}* file beside the log"
        return None


def _is_torn_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(TORN_PREFIX) and not {"/", "\0"} & set(name)


def record_name(kept_as: str) -> str:
    """The record of the repair that kept its torn bytes in ``kept_as``."""
    return f"{RECORD_PREFIX}{kept_as.removeprefix(TORN_PREFIX)}{RECORD_SUFFIX}"


def pending(state_dir: Path) -> list[Path]:
    """The records not logged yet, oldest first (their names start with the UTC time)."""
    return sorted(state_dir.glob(f"{RECORD_PREFIX}*{RECORD_SUFFIX}"))


def read_record(path: Path) -> Repair:
    """OSError or ValueError when the record cannot be read or is not one."""
    return Repair.from_json(json.loads(path.read_bytes()))


def log_repairs(commit_log: CommitLog, state_dir: Path) -> None:
    """Log every pending repair as ``log_repaired``, then remove its record."""
    for path in pending(state_dir):
        try:
            repair = read_record(path)
        except (OSError, ValueError) as exc:
            log.error(
                "repair record %s cannot be read, left in place for the auditor: %s", path, exc
            )
            continue
        commit_log.append(EVENT, **repair.to_json())
        log.warning(
            "the commit log was repaired before this start: %d torn byte(s) after seq %d were "
            "moved aside into %s",
            repair.torn_bytes,
            repair.after_seq,
            repair.kept_as,
        )
        _remove(path, state_dir)


def _remove(path: Path, state_dir: Path) -> None:
    try:
        path.unlink()
        fsync_dir(state_dir)
    except OSError as exc:
        log.error(
            "repair record %s cannot be removed (%s): remove it by hand, or the next start "
            "logs the repair again",
            path,
            exc.strerror or exc,
        )
