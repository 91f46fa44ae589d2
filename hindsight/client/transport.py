"""One request, one reply, with a deadline: the client's side of the control socket.

A REQ socket is used once and thrown away (the ZeroMQ guide's "Lazy Pirate"
without the retry: a control request is not idempotent, so a lost reply is
reported, never silently resent).
"""

from __future__ import annotations

import json
from typing import Any

import zmq

from hindsight.errors import ClientError

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


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
    try:
        sock.connect(endpoint)
        sock.send(frame)
        if not sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise ClientError(
                f"daemon unreachable at {endpoint} (no answer within {timeout:g} s)",
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
