"""The ok-replies of the control protocol, one type per op, for both sides. No I/O.

The daemon answers a request with one of these; ``encode`` turns it into the fields of
``{"ok": true, ...}`` (``protocol.ok_reply``) and ``decode`` turns those fields back
into it on the client, checking every field's type (through msgspec): a reply that
breaks the contract is a ``ReplyError`` naming the field (``$.lines[0].seconds``),
never a ``KeyError`` deep inside a command. Which op gets which reply is the op table's
(``protocol.reply_type``), and a request type says it statically too
(``End(Asks[CallReply])``), so that ``transport.send(endpoint, End(line))`` is a
``CallReply`` to the type checker as well.

Both ways tolerate versions: a field a newer daemon adds is ignored by an older client,
and a field added here has a default, so a newer client still reads an older daemon's
reply. A top-level field that is None is left out of the wire: an agent's ``status``
has no ``worker``, ``encryption`` or ``metrics`` at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from hindsight.checkpoint import SignedCheckpoint


@dataclass(frozen=True)
class Pong:
    """``ping``: the daemon's version."""

    version: str


@dataclass(frozen=True)
class CallReply:
    """``start``, ``end``, ``mark``, ``pause``, ``resume``, ``hold``, ``release``, ``erase``:
    the call the request was about (for ``start``, the id it got)."""

    call_id: str


@dataclass(frozen=True)
class RetentionReply:
    """``resolve`` and ``extend``: the purpose's new end of retention (UTC, ISO 8601)."""

    call_id: str
    retain_until: str


@dataclass(frozen=True)
class PurgeReply:
    """``purge``: the call ids of the recordings deleted (with ``dry_run``: due)."""

    deleted: tuple[str, ...]


@dataclass(frozen=True)
class AccessReply:
    """``access``: where the recording is and the SHA-256 its bytes must have, given
    only once ``recording_accessed`` is in the log."""

    path: str
    sha256: str
    version_id: str | None = None  # the object's version, when ``path`` is ``s3://…``


@dataclass(frozen=True)
class CheckpointReply:
    """``checkpoint``: the log's head, signed by the daemon's checkpoint key."""

    checkpoint: SignedCheckpoint


@dataclass(frozen=True)
class PurposeRetention:
    retain_until: str | None  # None: until resolved, not resolved yet
    resolved: bool


@dataclass(frozen=True)
class RecordingRow:
    """One recording of the ``recordings`` reply."""

    call_id: str
    line: str
    agent: str | None
    path: str
    purposes: Mapping[str, PurposeRetention]
    retain_until: str | None  # the latest of its purposes'; None while one is unresolved
    held: bool


@dataclass(frozen=True)
class RecordingsReply:
    recordings: tuple[RecordingRow, ...]


@dataclass(frozen=True)
class LineStatus:
    """One line of ``status``: its live call, if any. Nothing in it depends on the draw."""

    line: str
    call_id: str | None
    seconds: float  # audio captured so far for the live call
    marked: bool  # the agent's own mark
    device: str = ""
    status_flags: int = 0  # device blocks flagged (overflow, underflow) during the call
    lost_seconds: float = 0.0  # audio the device lost during the call, as silence


@dataclass(frozen=True)
class DeviceState:
    device: str
    state: str


@dataclass(frozen=True)
class WorkerState:
    """The worker process: its pid (None while it restarts) and its restarts so far."""

    pid: int | None
    restarts: int


@dataclass(frozen=True)
class Encryption:
    encrypted: bool
    unencrypted_purposes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricsSnapshot:
    """The sysadmin's figures, sampled once per ``[metrics] interval_seconds``: in
    ``status`` and in the Prometheus textfile alike."""

    taken: str | None = None  # UTC, ISO 8601: when these figures were read
    pool_chunks: int = 0
    pool_free: int = 0
    pool_steals: int = 0  # chunks taken from live calls because the pool ran dry
    dropped_frames: int = 0  # frames no chunk at all could hold
    live_calls: int = 0
    worker_restarts: int = 0
    backlog: int = 0  # jobs waiting for the worker (writes, wipes, deletions) and retries
    store_failures: int = 0  # jobs the worker could not do (a full disk...), retried since
    last_store_error: str | None = None
    last_store_error_at: str | None = None
    devices: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusReply:
    """``status``. An agent's shows its own lines and their devices only."""

    lines: tuple[LineStatus, ...]
    devices: tuple[DeviceState, ...] = ()
    worker: WorkerState | None = None
    encryption: Encryption | None = None
    metrics: MetricsSnapshot | None = None


Reply = (
    Pong
    | CallReply
    | RetentionReply
    | PurgeReply
    | AccessReply
    | RecordingsReply
    | StatusReply
    | CheckpointReply
)


R = TypeVar("R", bound=Reply)


class ReplyDecodeError(ValueError):
    """An ok-reply whose fields do not make its type; the message names the field."""


def encode(reply: Reply) -> dict[str, Any]:
    """``reply``'s fields as the wire's JSON object holds them (``ok`` aside): nested
    types as objects, tuples as lists, top-level None fields left out."""
    fields = msgspec.to_builtins(reply)
    assert isinstance(fields, dict)
    return {key: value for key, value in fields.items() if value is not None}


def decode(fields: Mapping[str, Any], kind: type[R]) -> R:
    """The ``kind`` that ``fields`` (an ok-reply's JSON object) holds; unknown fields are
    ignored. ``ReplyDecodeError`` naming the first field that is missing or malformed."""
    try:
        return msgspec.convert(dict(fields), kind)
    except msgspec.ValidationError as exc:
        raise ReplyDecodeError(str(exc)) from None
