"""The control socket: a ZeroMQ ROUTER that gives exactly one reply per request.

Rules:

- Whatever arrives (not JSON, binary, huge, extra frames, a handler that
  raises) gets one reply frame; nothing a client sends stops the loop.
- REQ clients send ``[identity, b"", payload]``, DEALER clients may omit the
  empty delimiter; the reply mirrors the envelope it came in.
- An ipc:// socket file is created under a umask that leaves it 0660, in a
  folder created 0750 when missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from hindsight.errors import HindsightError
from hindsight.protocol import MAX_REQUEST_BYTES, error_reply

log = logging.getLogger(__name__)

Handler = Callable[[bytes], bytes]
# Larger messages are dropped by ZeroMQ itself (the peer is disconnected);
# up to here the daemon still reads them and answers bad_request.
HARD_LIMIT = 16 * MAX_REQUEST_BYTES


class ControlServer:
    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.endpoint = endpoint
        self.socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT)
        try:
            with _socket_umask(endpoint):
                self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise HindsightError(f"cannot bind control socket {endpoint}: {exc}") from exc

    def serve_pending(self, handle: Handler) -> None:
        """Answer every request waiting on the socket, without blocking."""
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._answer(frames, handle)

    def _answer(self, frames: list[bytes], handle: Handler) -> None:
        identity, rest = frames[0], frames[1:]
        envelope = [identity]
        if len(rest) > 1 and rest[0] == b"":
            envelope.append(b"")
            rest = rest[1:]
        if len(rest) != 1:
            reply = error_reply("bad_request", "a request is exactly one frame of JSON")
        else:
            reply = _safely(handle, rest[0])
        try:
            self.socket.send_multipart([*envelope, reply], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("could not send a reply: %s", exc)

    def close(self) -> None:
        self.socket.close(linger=0)
        path = ipc_path(self.endpoint)
        if path is not None:
            path.unlink(missing_ok=True)


def _safely(handle: Handler, payload: bytes) -> bytes:
    try:
        return handle(payload)
    except Exception:
        log.exception("request handler failed")
        return error_reply("internal", "internal error; see the daemon's log")


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


@contextmanager
def _socket_umask(endpoint: str) -> Iterator[None]:
    path = ipc_path(endpoint)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    old = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(old)
