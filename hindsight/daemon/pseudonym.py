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
import os
import secrets
from pathlib import Path

from hindsight.durable import fsync_dir
from hindsight.errors import HindsightError

KEY_NAME = "caller.key"
KEY_BYTES = 32
_LAYOUT = str.maketrans("", "", " -.()\t")


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def open(cls, state_dir: Path) -> Pseudonyms:
        """The key under ``state_dir``, made (0600, durably) the first time."""
        path = state_dir / KEY_NAME
        try:
            return cls(_read_key(path))
        except FileNotFoundError:
            pass
        key = secrets.token_bytes(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(state_dir)
        except OSError as exc:
            raise HindsightError(f"cannot create the caller key {path}: {exc}") from exc
        return cls(key)

    def ref(self, number: str) -> str:
        dialled = number.translate(_LAYOUT)
        return hmac.new(self._key, dialled.encode("utf-8"), hashlib.sha256).hexdigest()


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
