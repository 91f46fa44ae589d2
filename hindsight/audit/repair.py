"""``repair``: a commit log whose tail a crash tore, made whole again without losing a byte.

Rules:

- Only a torn tail is repaired, exactly the one the daemon refuses to extend at start-up
  (``TornTailError``: bytes after the last line end, or a last line that is not JSON), and
  only after every line before it holds up in the chain. Any other damage (a broken chain, a
  bad line before the last) is tampering or a failing disk, not a crash: it is refused,
  never "repaired".
- No daemon may hold the log: the repair takes the exclusive ``flock`` that
  ``CommitLog.open`` takes, and refuses when it cannot have it.
- Nothing is lost, in this order: the torn bytes land in ``commit.log.torn-<UTC time>-<line>``
  beside the log, then the daemon's record of the repair (``hindsight.daemon.repaired``),
  each fsynced, mode 0640, owned as the log is, and never overwriting a file; only then is the
  log cut back to its last whole line (file and folder fsynced). A repair cut short by a
  crash is finished by running it again, which reuses its copy and record.
- The daemon logs the repair, ``log_repaired``, at its next start.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hindsight.clock import utcnow
from hindsight.commitlog import FILE_MODE, LOG_NAME, read_chain
from hindsight.daemon.repaired import TORN_PREFIX, Repair, pending, read_record, record_name
from hindsight.durable import fsync_dir, write_all
from hindsight.errors import CommitLogError, TornTailError


@dataclass(frozen=True)
class Repaired:
    """What ``repair`` did: ``repair`` as the daemon will log it; ``tear`` is how the log was
    torn, in the words the daemon refused it with; ``resumed`` when it finished a repair that a
    crash had cut short."""

    repair: Repair
    tear: str
    resumed: bool = False


@dataclass(frozen=True)
class _Tear:
    offset: int  # where the whole lines end
    after_seq: int  # the seq of the last whole line; 0 when there is none
    why: str


def repair(state_dir: Path, now: datetime | None = None) -> Repaired:
    """Move the torn tail of ``state_dir``'s log aside and cut the log back to its last whole
    line; CommitLogError, with nothing changed, when the log is whole, damaged otherwise, or
    held by a daemon."""
    path = state_dir / LOG_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise CommitLogError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    try:
        _lock(fd, path)
        tear = _find_tear(path)
        torn = _read_from(fd, tear.offset)
        done = _unfinished(state_dir, tear, torn)
        kept = done or _keep_aside(state_dir, fd, tear, torn, now or utcnow())
        _cut(fd, tear.offset, state_dir)
        return Repaired(kept, tear.why, resumed=done is not None)
    except OSError as exc:
        raise CommitLogError(f"{state_dir}: the repair failed ({exc})") from exc
    finally:
        os.close(fd)


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise CommitLogError(
            f"{path} is held by a running daemon (or another repair): stop it first; "
            "a daemon that is running has no torn tail to repair"
        ) from exc


def _find_tear(path: Path) -> _Tear:
    """The torn tail, after checking the chain of every whole line before it."""
    after_seq = 0
    try:
        for entry in read_chain(path):
            after_seq = entry["seq"]
    except TornTailError as exc:
        return _Tear(exc.offset, after_seq, str(exc))
    except CommitLogError as exc:
        raise CommitLogError(
            f"{exc}; not repaired: only a tail torn by a crash is, and this is other damage "
            "(an altered, cut or corrupted log is for an auditor to look into)"
        ) from exc
    raise CommitLogError(f"{path} is whole (it ends in a complete line): nothing to repair")


def _read_from(fd: int, offset: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks = []
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _describe(tear: _Tear, torn: bytes, kept_as: str) -> Repair:
    return Repair(len(torn), hashlib.sha256(torn).hexdigest(), kept_as, tear.after_seq)


def _unfinished(state_dir: Path, tear: _Tear, torn: bytes) -> Repair | None:
    """The record of a repair of this very tear that a crash cut short before the cut."""
    for path in pending(state_dir):
        try:
            record = read_record(path)
        except (OSError, ValueError):
            continue
        copy = state_dir / record.kept_as
        if record == _describe(tear, torn, record.kept_as) and _holds(copy, torn):
            return record
    return None


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def _keep_aside(state_dir: Path, fd: int, tear: _Tear, torn: bytes, now: datetime) -> Repair:
    """Land the torn bytes, then the record the daemon logs; both before the log is cut."""
    stamp = f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    kept = _describe(tear, torn, f"{TORN_PREFIX}{stamp}-{tear.after_seq + 1}")
    owner = os.fstat(fd)
    record = (json.dumps(kept.to_json(), indent=2, sort_keys=True) + "\n").encode()
    _land(state_dir / kept.kept_as, torn, owner)
    _land(state_dir / record_name(kept.kept_as), record, owner)
    return kept


def _land(final: Path, data: bytes, owner: os.stat_result) -> None:
    """Write ``data`` to a temp file, make it durable, then link it in: ``final`` appears
    whole or not at all, and an existing file is never overwritten."""
    temp = final.with_name(f".{final.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(temp, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # the umask must not decide who may read it
        if (owner.st_uid, owner.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, owner.st_uid, owner.st_gid)  # run as root: the daemon's, like the log
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, final)
    except FileExistsError as exc:
        raise CommitLogError(f"{final} exists already and is not overwritten") from exc
    finally:
        temp.unlink()
    fsync_dir(final.parent)


def _cut(fd: int, offset: int, state_dir: Path) -> None:
    os.ftruncate(fd, offset)
    os.fsync(fd)
    fsync_dir(state_dir)
