"""The daemon's own secret keys under ``state_dir``: made once at random, mode 0600.

``secret(state_dir, name, size, what)`` reads ``state_dir/name`` (``size`` bytes), or makes
it the first time (O_EXCL, fsynced, its folder fsynced): the caller key of the pseudonyms,
the checkpoint signing key. A key that the group or others may read is made the owner's
alone, with a warning; a key of the wrong size is an error that names it, never a new key
(that would silently change every pseudonym, or the key a witness knows).
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from hindsight.durable import fsync_dir
from hindsight.errors import HindsightError

KEY_MODE = 0o600

log = logging.getLogger(__name__)


def secret(state_dir: Path, name: str, size: int, what: str) -> bytes:
    """The key ``state_dir/name``, made the first time; ``what`` names it in messages."""
    path = state_dir / name
    try:
        key = _read(path, size, what)
    except FileNotFoundError:
        return _make(path, state_dir, size, what)
    _tighten(path, what)
    return key


def _make(path: Path, state_dir: Path, size: int, what: str) -> bytes:
    key = secrets.token_bytes(size)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, KEY_MODE)
        try:
            os.fchmod(fd, KEY_MODE)  # exactly, whatever the umask: the daemon must read it back
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(state_dir)
    except OSError as exc:
        raise HindsightError(f"cannot create the {what} {path}: {exc}") from exc
    return key


def _tighten(path: Path, what: str) -> None:
    """A key that others, or the group, may read is made the owner's alone, with a warning."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~KEY_MODE:
            os.chmod(path, mode & KEY_MODE)
    except OSError as exc:
        raise HindsightError(f"cannot make the {what} {path} private: {exc}") from exc
    if mode & ~KEY_MODE:
        log.warning(
            "%s was open to the group or others (mode %04o); now %04o", path, mode, mode & KEY_MODE
        )


def _read(path: Path, size: int, what: str) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HindsightError(f"cannot read the {what} {path}: {exc}") from exc
    if len(key) != size:
        raise HindsightError(f"{path} is not a {what} ({len(key)} bytes, not {size})")
    return key
