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
from pathlib import Path

from hindsight.daemon import keyfile
from hindsight.daemon.keyfile import KEY_MODE as KEY_MODE

KEY_NAME = "caller.key"
KEY_BYTES = 32
_LAYOUT = str.maketrans("", "", " -.()\t")

log = logging.getLogger(__name__)


class Pseudonyms:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def open(cls, state_dir: Path) -> Pseudonyms:
        """The key under ``state_dir``, made (0600, durably) the first time."""
        return cls(keyfile.secret(state_dir, KEY_NAME, KEY_BYTES, "caller key"))

    def ref(self, number: str) -> str:
        dialled = number.translate(_LAYOUT)
        return hmac.new(self._key, dialled.encode("utf-8"), hashlib.sha256).hexdigest()
