"""One commit-log line: its canonical form and hash (the contract's), and a fast, exactly
equivalent parser and hasher for reading millions of them.

``canonical`` and ``entry_hash`` define the hash (``hindsight.commitlog`` documents the rule);
``reference_line`` parses one line's bytes the plain way, Python's json
(``DECODER.decode(data.decode("utf-8"))``, a JSON object required) then ``safe_hash`` of the
object. ``parse_line(data)`` does exactly that, about four times faster on the daemon's lines
(see bench/bench_logline.py): msgspec decodes the line and writes the canonical form, whose
bytes are then hashed. It keeps no state: threads may share it.

msgspec agrees with the reference only on most lines, so the fast path takes a line only when
it is sure, and otherwise hands the whole line to the reference path:

- msgspec rejects the line (not UTF-8, not JSON, ``NaN``, a lone surrogate escape such as
  ``"\\ud800"``, which Python's json accepts, an integer of more than 4,300 digits, nesting
  too deep): the reference path decides, and raises what it raises.
- A float the canonical form would write in exponent form, ``repr``'s choice below 1e-4 and
  from 1e16 up (``1e-05``, ``1e+16``, where msgspec writes ``0.00001`` and ``1e16``), or an
  overflow to ``inf`` (``1e400``, which the reference parses and then cannot hash). Floats in
  between are written alike; the float hook gets each float's text and parses it with
  ``float``, as Python's json does.
- The line's text is not a JSON object, or has more than ``MAX_BRACKETS`` ``[`` and ``{``
  bytes: deep nesting makes the reference's ``json.dumps`` raise ``RecursionError`` a few
  levels before msgspec would. (Where that happens depends on how deep the caller's stack
  already is, for the reference as for this; called with fewer than about
  ``MAX_BRACKETS + 15`` frames to spare under the recursion limit, a line the reference
  would fail on can still pass here.)

And if msgspec's canonical encoding fails, the hash alone is taken with ``safe_hash``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, NoReturn

import msgspec

__all__ = [
    "DECODER",
    "MAX_BRACKETS",
    "NOT_AN_OBJECT",
    "canonical",
    "decode_line",
    "dumps",
    "entry_hash",
    "parse_line",
    "reference_line",
    "safe_hash",
]


def dumps(obj: Mapping[str, Any], *, sort_keys: bool = False) -> str:
    """Compact JSON as the log writes it: no spaces, UTF-8 left as it is, no NaN."""
    return json.dumps(
        obj, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical(obj: Mapping[str, Any]) -> bytes:
    """``obj`` in the contract's canonical form: compact JSON, keys sorted, UTF-8."""
    return dumps(obj, sort_keys=True).encode("utf-8")


def entry_hash(obj: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``obj`` without its ``hash`` key, in the contract's canonical form."""
    body = {key: value for key, value in obj.items() if key != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def safe_hash(entry: Mapping[str, Any]) -> str | None:
    """``entry_hash``, or None when there is none: a lone surrogate cannot be UTF-8 encoded."""
    try:
        return entry_hash(entry)
    except ValueError:
        return None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


NOT_AN_OBJECT = "not a JSON object"  # the ValueError of a line that is JSON, but no object

# One decoder for every line: json.loads would build one, and sniff the encoding, per line.
DECODER = json.JSONDecoder(parse_constant=_reject_constant)

# More ``[`` and ``{`` bytes than this in a line and the reference path parses it: msgspec
# nests a few levels deeper than json.dumps before a RecursionError.
MAX_BRACKETS = 64

# Below 1e-4 and from 1e16 up, repr() writes a float in exponent form, and msgspec differently.
_FIXED_LOW = 1e-4
_FIXED_HIGH = 1e16


class _Unsure(Exception):
    """Raised inside the decode: the fast path cannot be sure of this line."""


def _float(text: str) -> float:
    """Python json's float: ``float`` of the number's text; refuse what msgspec writes otherwise."""
    value = float(text)
    if _FIXED_LOW <= abs(value) < _FIXED_HIGH or value == 0.0:
        return value
    raise _Unsure(text)


_decode = msgspec.json.Decoder(float_hook=_float).decode
_encode = msgspec.json.Encoder(order="sorted").encode
_sha256 = hashlib.sha256


def reference_line(data: bytes) -> tuple[dict[str, Any], str | None]:
    """The reference path: ``commitlog``'s own decode and ``safe_hash``; ValueError if the
    line is not a JSON object."""
    obj = DECODER.decode(data.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError(NOT_AN_OBJECT)
    return obj, safe_hash(obj)


def _sure(data: bytes) -> dict[str, Any] | None:
    """msgspec's object of the line, when it is sure to be the reference's; else None."""
    try:
        obj = _decode(data)
    except Exception:  # msgspec's rejections, and _Unsure: the reference decides
        return None
    if type(obj) is not dict or data.count(b"[") + data.count(b"{") > MAX_BRACKETS:
        return None
    return obj


def decode_line(data: bytes) -> dict[str, Any]:
    """``parse_line``'s object alone, without the hash (to read a line whose hash another
    process checks): the reference's object on every input, or its ValueError."""
    obj = _sure(data)
    return reference_line(data)[0] if obj is None else obj


def parse_line(data: bytes) -> tuple[dict[str, Any], str | None]:
    """The line's object and the hex SHA-256 of its canonical form without ``hash`` (None if
    it cannot be hashed: a lone surrogate, a float out of range); ValueError if the line is
    not UTF-8 JSON holding an object. Agrees with ``reference_line`` on every input."""
    obj = _sure(data)
    if obj is None:
        return reference_line(data)
    try:
        if "hash" not in obj:
            body = _encode(obj)
        else:
            key, value = obj.popitem()  # the last item, put back below: the order is kept
            try:
                body = _encode(obj) if key == "hash" else b""
            finally:
                obj[key] = value
            if not body:  # "hash" is not the last key: hash a copy without it
                body = _encode({key: value for key, value in obj.items() if key != "hash"})
    except Exception:
        return obj, safe_hash(obj)
    return obj, _sha256(body).hexdigest()
