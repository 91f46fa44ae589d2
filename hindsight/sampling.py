"""The sampling draw, as the daemon makes it and an auditor recomputes it. No I/O.

A sampling epoch has a 32-byte seed. A call's draw is HMAC-SHA-256 keyed with the seed over
the call id's UTF-8 bytes; the call is picked when the digest's first 8 bytes, read as a
big-endian unsigned integer, are below ``2**64 // one_in`` (never with ``one_in`` 0). The
log commits to the seed when the epoch opens (``commitment``: the SHA-256 of the seed, hex)
and reveals it when the epoch ends, so the draw is unpredictable to anyone without the seed
and recomputable by everyone after.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

SEED_BYTES = 32
_SPAN = 2**64
_BLOCK = 64  # SHA-256's block size, in bytes


def commitment(seed: bytes) -> str:
    """What ``sampling_epoch`` logs of a seed: its SHA-256, hex."""
    return hashlib.sha256(seed).hexdigest()


def picked(seed: bytes, call_id: str, one_in: int) -> bool:
    """Whether the epoch of ``seed`` picks ``call_id`` when 1 call in ``one_in`` is sampled."""
    if one_in <= 0:
        return False
    inner, outer = _keyed(seed)
    digest = inner.copy()
    digest.update(call_id.encode("utf-8"))
    final = outer.copy()
    final.update(digest.digest())
    return int.from_bytes(final.digest()[:8], "big") < _SPAN // one_in


@functools.lru_cache(maxsize=64)
def _keyed(seed: bytes) -> tuple[Any, Any]:
    """HMAC-SHA-256 (RFC 2104) keyed with ``seed``, its two pads hashed once: an auditor
    recomputes a million draws of a few seeds, and ``hmac.new`` would redo them each time."""
    key = seed if len(seed) <= _BLOCK else hashlib.sha256(seed).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def eligible(announced: object, purpose: object) -> bool:
    """Whether a call whose ``call_started`` announced ``announced`` may be sampled for the
    epoch's ``purpose``: only when the caller was told of it."""
    return isinstance(announced, list) and isinstance(purpose, str) and purpose in announced


def kept_as_sampled(outcome: Mapping[str, Any]) -> bool:
    """Whether an outcome (``call_committed``, or a ``call_wiped`` of a call that was to be
    kept, which still names its reasons) says the call was kept for the draw."""
    reasons = outcome.get("reasons")
    return isinstance(reasons, list) and "sampled" in reasons


def seed_from_hex(text: object) -> bytes | None:
    """A revealed (or unsealed) seed from its hex form; None when it is not 32 bytes of hex."""
    if not isinstance(text, str) or len(text) != 2 * SEED_BYTES:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
