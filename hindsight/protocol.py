"""The control protocol: request parsing and validation, reply encoding. No I/O.

One request is one frame of UTF-8 JSON holding an object with an ``op``. Every
request, however malformed, maps to exactly one reply: either a parsed
request dataclass or a ``ProtocolError`` that ``error_reply`` turns into the
contract's ``{"ok": false, "error": {...}}``. Unknown fields are ignored, so
that newer clients can talk to older daemons. Every id (line, call_id, agent,
purpose) is ``config.ID_PATTERN``, which refuses a leading dot: a call id names
its recording's file, and must never name a hidden one, ``.`` or ``..``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hindsight.config import ID_PATTERN
from hindsight.errors import ProtocolError

MAX_REQUEST_BYTES = 64 * 1024
MAX_NOTE_CHARS = 2000
MAX_CALLER_CHARS = 64
ERROR_CODES = frozenset(
    {
        "bad_request",
        "unknown_op",
        "unknown_line",
        "unknown_purpose",
        "no_call",
        "call_active",
        "not_allowed",
        "internal",
    }
)


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Start:
    line: str
    call_id: str | None = None
    agent: str | None = None
    caller: str | None = None


@dataclass(frozen=True)
class End:
    line: str


@dataclass(frozen=True)
class Mark:
    line: str
    purpose: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Status:
    pass


Request = Ping | Start | End | Mark | Status


def parse_request(frame: bytes) -> Request:
    """Decode and validate one request frame; raise ``ProtocolError`` on anything wrong."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ProtocolError("bad_request", f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        message = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("bad_request", "request is not UTF-8 JSON") from None
    except RecursionError:
        raise ProtocolError("bad_request", "request is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "request must be a JSON object")
    op = message.get("op")
    if not isinstance(op, str):
        raise ProtocolError("bad_request", "field 'op' must be a string")
    parser = _PARSERS.get(op)
    if parser is None:
        raise ProtocolError("unknown_op", f"unknown op {_short(op)}")
    return parser(message)


def _parse_start(m: Mapping[str, Any]) -> Start:
    return Start(
        line=_id(m, "line"),
        call_id=_optional_id(m, "call_id"),
        agent=_optional_id(m, "agent"),
        caller=_optional_text(m, "caller", MAX_CALLER_CHARS),
    )


def _parse_mark(m: Mapping[str, Any]) -> Mark:
    return Mark(
        line=_id(m, "line"),
        purpose=_optional_id(m, "purpose"),
        note=_optional_text(m, "note", MAX_NOTE_CHARS),
    )


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Request]] = {
    "ping": lambda m: Ping(),
    "start": _parse_start,
    "end": lambda m: End(line=_id(m, "line")),
    "mark": _parse_mark,
    "status": lambda m: Status(),
}


def _id(m: Mapping[str, Any], key: str) -> str:
    if key not in m:
        raise ProtocolError("bad_request", f"field '{key}' is required")
    value = m[key]
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ProtocolError(
            "bad_request",
            f"field '{key}' must match [A-Za-z0-9._-]{{1,64}} and not start with a dot",
        )
    return value


def _optional_id(m: Mapping[str, Any], key: str) -> str | None:
    return None if m.get(key) is None else _id(m, key)


def _optional_text(m: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ProtocolError(
            "bad_request", f"field '{key}' must be printable text of at most {limit} characters"
        )
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def ok_reply(**fields: Any) -> bytes:
    return _encode({"ok": True, **fields})


def error_reply(code: str, message: str) -> bytes:
    assert code in ERROR_CODES, code
    return _encode({"ok": False, "error": {"code": code, "message": message}})


def _encode(reply: Mapping[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
