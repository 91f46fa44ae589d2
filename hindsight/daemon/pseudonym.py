"""Callers as keyed pseudonyms: the number itself is never kept.

``caller_ref`` is the hex HMAC-SHA-256 of the caller's number under a key that
the daemon makes once, at random, in ``<state_dir>/caller.key`` (mode 0600).
The same number always gives the same ref, so ``recordings {caller}`` finds a
caller's recordings for a subject access request; without the key, a ref
cannot be turned back into a number, nor checked against a list of numbers.

Numbers are compared as dialled: spaces, dashes, dots and parentheses are
dropped first, so ``+31 20 555-0199`` and ``+31205550199`` are one caller.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from hindsight.durable import fsync_dir
from hindsight.errors import HindsightError

KEY_NAME = "caller.key"
KEY_BYTES = 32
KEY_MODE = 0o600
_LAYOUT = str.maketrans("", "", " -.()\t")

log = logging.getLogger(__name__)


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def open(cls, state_dir: Path) -> Pseudonyms:
        """The key under ``state_dir``, made (0600, durably) the first time."""
        path = state_dir / KEY_NAME
        try:
            key = _read_key(path)
        except FileNotFoundError:
            return cls(_make_key(path, state_dir))
        _tighten(path)
        return cls(key)

    def ref(self, number: str) -> str:
        dialled = number.translate(_LAYOUT)
        return hmac.new(self._key, dialled.encode("utf-8"), hashlib.sha256).hexdigest()


def _make_key(path: Path, state_dir: Path) -> bytes:
    key = secrets.token_bytes(KEY_BYTES)
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
        raise HindsightError(f"cannot create the caller key {path}: {exc}") from exc
    return key


def _tighten(path: Path) -> None:
    """A key that others, or the group, may read is made the owner's alone, with a warning."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & ~KEY_MODE:
            os.chmod(path, mode & KEY_MODE)
    except OSError as exc:
        raise HindsightError(f"cannot make the caller key {path} private: {exc}") from exc
    if mode & ~KEY_MODE:
        log.warning(
            "%s was open to the group or others (mode %04o); now %04o", path, mode, mode & KEY_MODE
        )


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HindsightError(f"cannot read the caller key {path}: {exc}") from exc
    if len(key) != KEY_BYTES:
        raise HindsightError(f"{path} is not a caller key ({len(key)} bytes, not {KEY_BYTES})")
    return key
