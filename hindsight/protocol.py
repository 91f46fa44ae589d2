"""The control protocol, both sides: requests and replies, encoded and parsed. No I/O.

One request is one frame of UTF-8 JSON holding an object with an ``op``. Every
request, however malformed, maps to exactly one reply: either a parsed
request dataclass or a ``ProtocolError`` that ``error_reply`` turns into the
contract's ``{"ok": false, "error": {...}}``. Unknown fields are ignored, so
that newer clients can talk to older daemons, and an optional field set to
null counts as absent. Every id (line, call_id, agent, purpose) is
``config.ID_PATTERN``, which refuses a leading dot: a call id names its
recording's file, and must never name a hidden one, ``.`` or ``..``. Free text
(caller, note, actor, reason) is printable: no line breaks that could forge a
line in a log. Lists become tuples, so that every request is immutable.

Both sides use this module: the daemon parses with ``parse_request`` and answers with
``ok_reply`` (of a reply type of ``hindsight.replies``) or ``error_reply``; a client builds a
request dataclass, sends its ``encode_request`` and reads the answer with ``parse_reply``,
which gives the op's reply type or a ``Refusal``. ``_OPS`` is the one table of op names,
request types and reply types, ``EXIT_CODES`` the one of error codes and the client's exit
codes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from hindsight import replies
from hindsight.config import ID_PATTERN
from hindsight.errors import ClientError, ProtocolError
from hindsight.replies import (
    AccessReply,
    CallReply,
    CheckpointReply,
    Pong,
    PurgeReply,
    RecordingsReply,
    Reply,
    RetentionReply,
    StatusReply,
)

R = TypeVar("R", bound=Reply)

MAX_REQUEST_BYTES = 64 * 1024
MAX_NOTE_CHARS = 2000
MAX_CALLER_CHARS = 64
MAX_ANNOUNCED = 32
MAX_ACTOR_CHARS = 200
MAX_REASON_CHARS = 200
MAX_EXTEND_DAYS = 36500
# The client's exit codes (the contract): 0 ok, 1 the daemon refused, 2 usage error,
# 3 daemon unreachable within the timeout.
EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
# Each error code a refusal may carry, and the exit code a client gives for it: the one
# table of both (ERROR_CODES is its keys).
EXIT_CODES: Mapping[str, int] = MappingProxyType(
    {
        "bad_request": EXIT_REFUSED,
        "unknown_op": EXIT_REFUSED,
        "unknown_line": EXIT_REFUSED,
        "unknown_purpose": EXIT_REFUSED,
        "unknown_call": EXIT_REFUSED,
        "no_call": EXIT_REFUSED,
        "call_active": EXIT_REFUSED,
        "not_allowed": EXIT_REFUSED,
        "internal": EXIT_REFUSED,
    }
)
ERROR_CODES = frozenset(EXIT_CODES)


class Asks(Generic[R]):
    """A request whose ok-reply is an ``R``: what the type checker knows of it. The op
    table says the same at run time (``reply_type``); a test holds the two together."""

    __slots__ = ()


@dataclass(frozen=True)
class Ping(Asks[Pong]):
    pass


@dataclass(frozen=True)
class Start(Asks[CallReply]):
    line: str
    call_id: str | None = None
    agent: str | None = None
    caller: str | None = None
    # None: not given, the line's list applies; (): the caller was told of no purpose.
    announced: tuple[str, ...] | None = None


@dataclass(frozen=True)
class End(Asks[CallReply]):
    line: str


@dataclass(frozen=True)
class Pause(Asks[CallReply]):
    line: str


@dataclass(frozen=True)
class Resume(Asks[CallReply]):
    line: str


@dataclass(frozen=True)
class Mark(Asks[CallReply]):
    line: str
    purpose: str | None = None
    note: str | None = None
    # The call meant: the live one, or one that ended on the line within
    # marking.grace_seconds. None: the live call, else the one that ended last.
    call_id: str | None = None


@dataclass(frozen=True)
class Status(Asks[StatusReply]):
    pass


@dataclass(frozen=True)
class Recordings(Asks[RecordingsReply]):
    purpose: str | None = None
    caller: str | None = None


@dataclass(frozen=True)
class Resolve(Asks[RetentionReply]):
    call_id: str
    purpose: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Extend(Asks[RetentionReply]):
    call_id: str
    purpose: str
    days: float
    actor: str
    reason: str


@dataclass(frozen=True)
class Hold(Asks[CallReply]):
    call_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Release(Asks[CallReply]):
    call_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Erase(Asks[CallReply]):
    call_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Purge(Asks[PurgeReply]):
    dry_run: bool = False


@dataclass(frozen=True)
class Access(Asks[AccessReply]):
    """Who opens a recording and why: logged before the reply says where it is."""

    call_id: str
    actor: str
    reason: str


@dataclass(frozen=True)
class Checkpoint(Asks[CheckpointReply]):
    """The head of the commit log, signed: for a witness on another host."""


Request = (
    Ping
    | Start
    | End
    | Mark
    | Status
    | Pause
    | Resume
    | Recordings
    | Resolve
    | Extend
    | Hold
    | Release
    | Erase
    | Purge
    | Access
    | Checkpoint
)


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
    entry = _OPS.get(op)
    if entry is None:
        raise ProtocolError("unknown_op", f"unknown op {_short(op)}")
    return entry[1](message)


def _parse_start(m: Mapping[str, Any]) -> Start:
    return Start(
        line=_id(m, "line"),
        call_id=_optional_id(m, "call_id"),
        agent=_optional_id(m, "agent"),
        caller=_optional_text(m, "caller", MAX_CALLER_CHARS),
        announced=_optional_ids(m, "announced", MAX_ANNOUNCED),
    )


def _parse_mark(m: Mapping[str, Any]) -> Mark:
    return Mark(
        line=_id(m, "line"),
        purpose=_optional_id(m, "purpose"),
        note=_optional_text(m, "note", MAX_NOTE_CHARS),
        call_id=_optional_id(m, "call_id"),
    )


def _parse_recordings(m: Mapping[str, Any]) -> Recordings:
    return Recordings(
        purpose=_optional_id(m, "purpose"),
        caller=_optional_text(m, "caller", MAX_CALLER_CHARS),
    )


def _parse_resolve(m: Mapping[str, Any]) -> Resolve:
    call_id, purpose = _id(m, "call_id"), _id(m, "purpose")
    return Resolve(call_id, purpose, *_signature(m))


def _parse_extend(m: Mapping[str, Any]) -> Extend:
    call_id, purpose = _id(m, "call_id"), _id(m, "purpose")
    days = _days(m, "days", MAX_EXTEND_DAYS)
    return Extend(call_id, purpose, days, *_signature(m))


def _signature(m: Mapping[str, Any]) -> tuple[str, str]:
    """Who asks for a change to a recording (or to open it), and why: both go to the log."""
    return _text(m, "actor", MAX_ACTOR_CHARS), _text(m, "reason", MAX_REASON_CHARS)


# The one table of the ops: each op's name, its request type, the parser of its fields and
# the type of its ok-reply.
# A request type's fields are named as the request's JSON fields, so that encode_request
# needs nothing more than this.
_OPS: Mapping[str, tuple[type[Request], Callable[[Mapping[str, Any]], Request], type[Reply]]] = {
    "ping": (Ping, lambda m: Ping(), Pong),
    "start": (Start, _parse_start, CallReply),
    "end": (End, lambda m: End(line=_id(m, "line")), CallReply),
    "mark": (Mark, _parse_mark, CallReply),
    "status": (Status, lambda m: Status(), StatusReply),
    "pause": (Pause, lambda m: Pause(line=_id(m, "line")), CallReply),
    "resume": (Resume, lambda m: Resume(line=_id(m, "line")), CallReply),
    "recordings": (Recordings, _parse_recordings, RecordingsReply),
    "resolve": (Resolve, _parse_resolve, RetentionReply),
    "extend": (Extend, _parse_extend, RetentionReply),
    "hold": (Hold, lambda m: Hold(_id(m, "call_id"), *_signature(m)), CallReply),
    "release": (Release, lambda m: Release(_id(m, "call_id"), *_signature(m)), CallReply),
    "erase": (Erase, lambda m: Erase(_id(m, "call_id"), *_signature(m)), CallReply),
    "purge": (Purge, lambda m: Purge(dry_run=_optional_bool(m, "dry_run")), PurgeReply),
    "access": (Access, lambda m: Access(_id(m, "call_id"), *_signature(m)), AccessReply),
    "checkpoint": (Checkpoint, lambda m: Checkpoint(), CheckpointReply),
}
OP_NAMES: Mapping[type[Request], str] = MappingProxyType(
    {kind: op for op, (kind, _, _) in _OPS.items()}
)


def op_name(request: Request) -> str:
    """The protocol's name of ``request``'s op (``Ping()``: ``ping``)."""
    return OP_NAMES[type(request)]


def reply_type(request: Asks[R]) -> type[R]:
    """The type of ``request``'s ok-reply (``End(line)``: ``CallReply``)."""
    kind: type[R] = _OPS[OP_NAMES[type(request)]][2]  # type: ignore[index, assignment]
    return kind


def request_fields(request: Request) -> dict[str, Any]:
    """``request`` as the JSON object ``parse_request`` reads back into it: its ``op``, then
    its fields in their order, those that are None left out, tuples as lists."""
    fields: dict[str, Any] = {"op": op_name(request)}
    for field in dataclasses.fields(request):
        value = getattr(request, field.name)
        if value is not None:
            fields[field.name] = list(value) if isinstance(value, tuple) else value
    return fields


def encode_request(request: Request) -> bytes:
    """The frame a client sends for ``request``; ``parse_request`` of it is ``request``."""
    return json.dumps(request_fields(request)).encode("utf-8")


def _required(m: Mapping[str, Any], key: str) -> Any:
    value = m.get(key)
    if value is None:
        raise ProtocolError("bad_request", f"field '{key}' is required")
    return value


def _id(m: Mapping[str, Any], key: str) -> str:
    return _checked_id(_required(m, key), f"field '{key}'")


def _checked_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ProtocolError(
            "bad_request", f"{name} must match [A-Za-z0-9._-]{{1,64}} and not start with a dot"
        )
    return value


def _optional_id(m: Mapping[str, Any], key: str) -> str | None:
    return None if m.get(key) is None else _id(m, key)


def _optional_ids(m: Mapping[str, Any], key: str, limit: int) -> tuple[str, ...] | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limit:
        raise ProtocolError("bad_request", f"field '{key}' must be a list of at most {limit} ids")
    ids = tuple(_checked_id(item, f"field '{key}[{i}]'") for i, item in enumerate(value))
    if len(set(ids)) != len(ids):
        raise ProtocolError("bad_request", f"field '{key}' must not name an id twice")
    return ids


def _optional_text(m: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = m.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ProtocolError(
            "bad_request", f"field '{key}' must be printable text of at most {limit} characters"
        )
    return value


def _text(m: Mapping[str, Any], key: str, limit: int) -> str:
    value = _required(m, key)
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > limit
        or not value.isprintable()
    ):
        raise ProtocolError(
            "bad_request",
            f"field '{key}' must be printable text of 1 to {limit} characters, not only spaces",
        )
    return value


def _days(m: Mapping[str, Any], key: str, limit: int) -> float:
    value = _required(m, key)
    # bool is an int to Python, never to a client; NaN fails the comparison, infinity the limit.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= limit:
        raise ProtocolError(
            "bad_request", f"field '{key}' must be a number of days more than 0 and at most {limit}"
        )
    return float(value)


def _optional_bool(m: Mapping[str, Any], key: str) -> bool:
    value = m.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ProtocolError("bad_request", f"field '{key}' must be true or false")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def ok_reply(reply: Reply) -> bytes:
    return _encode({"ok": True, **replies.encode(reply)})


def error_reply(code: str, message: str) -> bytes:
    assert code in ERROR_CODES, code
    return _encode({"ok": False, "error": {"code": code, "message": message}})


def _encode(reply: Mapping[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- the client's side of a reply ---


class ReplyError(ClientError):
    """The daemon's reply breaks the contract: not JSON, not an object, a missing field."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_REFUSED)


@dataclass(frozen=True)
class Refusal:
    """A reply ``{"ok": false, "error": {"code": C, "message": M}}``. A code this client does
    not know (a newer daemon's) is still a refusal: exit 1."""

    code: str
    message: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.code, EXIT_REFUSED)


def parse_reply(frame: bytes, kind: type[R]) -> R | Refusal:
    """The ``kind`` an ok reply holds, or its ``Refusal``.

    ``ReplyError`` for anything the contract does not allow: not UTF-8 JSON, not an object,
    ``ok`` not true or false, an ok reply whose fields do not make a ``kind`` (the message
    names the field), a refusal without an error object of a code (text) and a text message.
    """
    try:
        reply = json.loads(frame.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ReplyError("the reply is not UTF-8 JSON") from None
    if not isinstance(reply, dict):
        raise ReplyError("the reply is not a JSON object")
    ok = reply.pop("ok", None)
    if ok is True:
        try:
            return replies.decode(reply, kind)
        except replies.ReplyDecodeError as exc:
            raise ReplyError(f"the reply does not hold a {kind.__name__}: {exc}") from None
    if ok is not False:
        raise ReplyError("the reply's 'ok' is not true or false")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ReplyError("the refusal has no 'error' object")
    code, message = error.get("code"), error.get("message")
    if not isinstance(code, str) or not code:
        raise ReplyError(f"the refusal's code {_short(code)} is not text")
    if not isinstance(message, str):
        raise ReplyError("the refusal's 'message' is not text")
    return Refusal(code, message)
