"""One request, one reply, with a deadline: the client's side of the control socket.

A REQ socket is used once and thrown away (the ZeroMQ guide's "Lazy Pirate"
without the retry: a control request is not idempotent, so a lost reply is
reported, never silently resent).

The daemon's ``listen`` endpoint is CURVE: an ``Endpoint`` carries the keys to
reach it (the daemon's public key, and this client's key pair), and passes for a
plain ``str`` everywhere else, so every command takes ``--server-key`` and
``--client-key`` alike. The daemon never answers a key it does not know, so a
refused key looks like an unreachable daemon; the message says so.

Requests are ``hindsight.protocol``'s dataclasses, sent with ``send``, which returns the
op's typed reply (``hindsight.replies``), checked field by field; a refusal is raised as
``Refused``, its exit code from ``protocol.EXIT_CODES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import zmq

from hindsight.errors import ClientError
from hindsight.protocol import EXIT_REFUSED as EXIT_REFUSED  # for the client's modules
from hindsight.protocol import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from hindsight.protocol import (
    Asks,
    Refusal,
    ReplyError,
    Request,
    encode_request,
    parse_reply,
    reply_type,
)
from hindsight.replies import Reply


@dataclass(frozen=True)
class CurveKeys:
    """What a CURVE client needs, all Z85: the server's public key, this client's pair."""

    server: bytes
    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # never the secret, not even in a traceback
        return f"CurveKeys(server={self.server!r}, public={self.public!r})"


class Endpoint(str):
    """A ZeroMQ endpoint, with the CURVE keys to reach it when it is a ``listen`` one."""

    curve: CurveKeys | None

    def __new__(cls, address: str, curve: CurveKeys | None = None) -> Endpoint:
        endpoint = super().__new__(cls, address)
        endpoint.curve = curve
        return endpoint


R = TypeVar("R", bound=Reply)


class Refused(ClientError):
    """The daemon answered ``ok: false``; the exit code is ``EXIT_CODES``'s for its code."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.message} ({refusal.code})", refusal.exit_code)
        self.code = refusal.code


def send(endpoint: str, request: Asks[R], timeout: float) -> R:
    """Send ``request``; return its ok-reply, or raise ``Refused`` or ``ClientError``."""
    kind = reply_type(request)
    assert isinstance(request, Request)
    frame = _exchange(endpoint, encode_request(request), timeout)
    try:
        reply = parse_reply(frame, kind)
    except ReplyError as exc:
        raise ClientError(
            f"the daemon at {endpoint} sent a malformed reply ({exc})", exc.exit_code
        ) from None
    if isinstance(reply, Refusal):
        raise Refused(reply)
    return reply


def _exchange(endpoint: str, frame: bytes, timeout: float) -> bytes:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    curve = endpoint.curve if isinstance(endpoint, Endpoint) else None
    try:
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
        sock.connect(endpoint)
        sock.send(frame)
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise ClientError(
                f"daemon unreachable at {endpoint} (no answer within {timeout:g} s"
                f"{_unanswered_hint(endpoint, curve)})",
                EXIT_UNREACHABLE,
            )
        answer = sock.recv()
    except zmq.ZMQError as exc:
        raise ClientError(f"cannot reach {endpoint}: {exc}", EXIT_UNREACHABLE) from exc
    finally:
        sock.close(linger=0)
    return answer


def _unanswered_hint(endpoint: str, curve: CurveKeys | None) -> str:
    """Why a tcp:// daemon may stay silent: it never answers a key (or no key) it refuses."""
    if not endpoint.startswith("tcp://"):
        return ""
    if curve is None:
        return "; a daemon.listen endpoint needs --server-key and --client-key"
    return "; or its daemon.listen does not accept this client key, or that server key"
