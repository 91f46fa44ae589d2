"""What the daemon and its worker process say to each other, and how it travels.

The two processes share one stream socket (a socketpair). Every message is a
JSON object, sent as a 4-byte big-endian length and the UTF-8 bytes. The
daemon sends jobs; the worker sends what became of each step of a job, and
``alive`` while it works or waits, so that a worker that hangs is noticed.

A job is ``{"kind": K, "job": N, ...}``. Kinds are open-ended: the worker
refuses one it does not know with a ``failed`` reply, so that later kinds
(deletions, uploads) can be added on both sides without a new channel.

``settle`` (an ended call):
    ``channels``, ``chunks`` (every chunk the call holds: all are zeroed),
    ``extents`` (``[chunk, first frame, end frame]`` of the audio to keep,
    oldest first), ``keep`` (a ``kept.Keep`` as a dict, or null for a call
    that is only wiped, or whose recording was already stored).

Replies: ``{"job": N, "step": S, ...}`` with S one of ``stored`` (``fields``:
the ``call_committed`` fields), ``zeroed``, ``failed`` (``error``: a message
without call ids or audio); and ``{"step": "alive"}``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from hindsight.errors import HindsightError

MAX_MESSAGE = 64 * 1024 * 1024  # a day-long call's extents fit many times over


class ChannelClosed(HindsightError):
    """The other process closed its end (exited, or was killed)."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        sock.sendall(len(data).to_bytes(4, "big") + data)
    except OSError as exc:
        raise ChannelClosed(f"cannot send to the other process: {exc}") from exc


def receive(sock: socket.socket) -> dict[str, Any]:
    """The next whole message; ``ChannelClosed`` at end of stream or on a broken one."""
    size = int.from_bytes(_exactly(sock, 4), "big")
    if size > MAX_MESSAGE:
        raise ChannelClosed(f"message of {size} bytes is over the limit")
    try:
        message = json.loads(_exactly(sock, size))
    except ValueError as exc:
        raise ChannelClosed(f"unreadable message: {exc}") from exc
    if not isinstance(message, dict):
        raise ChannelClosed("a message is a JSON object")
    return message


def _exactly(sock: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    missing = size
    while missing:
        try:
            part = sock.recv(min(missing, 1 << 20))
        except OSError as exc:
            raise ChannelClosed(f"cannot read from the other process: {exc}") from exc
        if not part:
            raise ChannelClosed("the other process closed the channel")
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
