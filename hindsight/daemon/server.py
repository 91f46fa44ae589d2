"""The control socket: a ZeroMQ ROUTER that gives exactly one reply per request.

Rules:

- Whatever arrives (not JSON, binary, huge, extra frames, a handler that
  raises) gets one reply frame; nothing a client sends stops the loop.
- REQ clients send ``[identity, b"", payload]``, DEALER clients may omit the
  empty delimiter; the reply mirrors the envelope it came in.
- An ipc:// socket file is created under a umask that leaves it 0660, in a
  folder created 0750 when missing. ZeroMQ would silently replace whatever
  is at that path, so the server first makes sure it is a stale socket and
  not another daemon's live one (or some other file), and on close removes
  the path only while it is still its own socket.
- ``serve_pending`` answers a bounded batch, so that a flood of requests
  cannot keep the loop from noticing SIGTERM.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from hindsight.errors import HindsightError
from hindsight.protocol import error_reply

log = logging.getLogger(__name__)

Handler = Callable[[bytes], bytes]
# Larger messages are dropped by ZeroMQ itself (the peer is disconnected);
# up to here the daemon still reads them and answers bad_request.
HARD_LIMIT = 16 * 1024 * 1024
BATCH = 64  # requests answered per call of serve_pending
SEND_HWM = 100_000  # replies queued for a client that does not read yet
PROBE_TIMEOUT_MS = 2000  # a busy daemon still answers a ping well within this


class ControlServer:
    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.endpoint = endpoint
        self._path = ipc_path(endpoint)
        if self._path is not None:
            _check_free(context, endpoint, self._path)
        self.socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT)
        self.socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            with _socket_umask(self._path):
                self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close()
            raise HindsightError(f"cannot bind control socket {endpoint}: {exc}") from exc
        self._inode = os.stat(self._path).st_ino if self._path is not None else None

    def serve_pending(self, handle: Handler) -> None:
        """Answer up to ``BATCH`` requests waiting on the socket, without blocking."""
        for _ in range(BATCH):
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
            log.warning("could not send a reply (client gone or not reading): %s", exc)

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._path is None:
            return
        try:
            if os.stat(self._path).st_ino == self._inode:
                self._path.unlink()
        except FileNotFoundError:
            pass


def _safely(handle: Handler, payload: bytes) -> bytes:
    try:
        return handle(payload)
    except Exception:
        log.exception("request handler failed")
        return error_reply("internal", "internal error; see the daemon's log")


def ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://") :]) if endpoint.startswith("ipc://") else None


def _check_free(context: zmq.Context[zmq.Socket[bytes]], endpoint: str, path: Path) -> None:
    """Refuse to bind over anything but a stale socket left by a crash."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise HindsightError(f"{path} exists and is not a socket; refusing to replace it")
    if _answers(context, endpoint):
        raise HindsightError(f"another hindsightd is already listening on {endpoint}")
    log.info("replacing the stale control socket %s", path)


def _answers(context: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> bool:
    probe = context.socket(zmq.REQ)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.connect(endpoint)
        probe.send(b'{"op":"ping"}')
        return bool(probe.poll(PROBE_TIMEOUT_MS, zmq.POLLIN))
    finally:
        probe.close(linger=0)


@contextmanager
def _socket_umask(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    old = os.umask(0o117)
    try:
        yield
    finally:
        os.umask(old)
