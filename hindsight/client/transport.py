"""One request, one reply, with a deadline: the client's side of the control socket.

A REQ socket is used once and thrown away (the ZeroMQ guide's "Lazy Pirate"
without the retry: a control request is not idempotent, so a lost reply is
reported, never silently resent).

The daemon's ``listen`` endpoint is CURVE: an ``Endpoint`` carries the keys to
reach it (the daemon's public key, and this client's key pair), and passes for a
plain ``str`` everywhere else, so every command takes ``--server-key`` and
``--client-key`` alike. The daemon never answers a key it does not know, so a
refused key looks like an unreachable daemon; the message says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import zmq

from hindsight.errors import ClientError

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


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


class Refused(ClientError):
    """The daemon answered ``ok: false``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})", EXIT_REFUSED)
        self.code = code


def request(endpoint: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send ``payload``; return the reply when ok, raise ``Refused`` or ``ClientError`` else."""
    reply = _exchange(endpoint, json.dumps(payload).encode("utf-8"), timeout)
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ClientError(f"the daemon at {endpoint} sent a malformed reply", EXIT_REFUSED)
    if not reply["ok"]:
        error = reply.get("error") or {}
        raise Refused(str(error.get("code", "?")), str(error.get("message", "refused")))
    return reply


def _exchange(endpoint: str, frame: bytes, timeout: float) -> Any:
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
    try:
        return json.loads(answer)
    except ValueError as exc:
        raise ClientError(f"the daemon at {endpoint} sent invalid JSON", EXIT_REFUSED) from exc


def _unanswered_hint(endpoint: str, curve: CurveKeys | None) -> str:
    """Why a tcp:// daemon may stay silent: it never answers a key (or no key) it refuses."""
    if not endpoint.startswith("tcp://"):
        return ""
    if curve is None:
        return "; a daemon.listen endpoint needs --server-key and --client-key"
    return "; or its daemon.listen does not accept this client key, or that server key"
