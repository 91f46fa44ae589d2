"""Who may do what: the one place where a request's rights are checked, before its op runs.

Rules:

- A request comes from the local control socket (``daemon.control``; no identity: whoever
  may open it is an administrator, its file mode decides) or from a client of
  ``daemon.listen``, known by the CURVE public key ZAP let in (the ``User-Id`` of its frame)
  and named in ``[[clients]]``.
- ``ALLOWED`` maps each role to the ops it may send; ``admin`` may send every op, present
  and future; any other role only those listed, so that a new op is refused until someone
  decides who may send it. An agent acts on its own lines only: an op that carries a
  ``line`` outside the agent's ``lines`` is refused like an op outside its role, and its
  ``status`` shows its lines (and their devices) only.
- A refusal is ``not_allowed`` with one message whatever the request named, and nothing of
  the op runs: a refused ``access``, ``end`` or ``mark`` does not tell whether a call or a
  recording exists, is live, or was kept. It is logged as ``access_denied`` (``client``,
  ``op``) before the reply.
- The client table is read from the service's config at each request, so a SIGHUP that
  changes a client's role or lines applies to its next request; a key removed from the
  config never gets this far (``server`` drops its requests, ZAP refuses its handshakes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from hindsight import protocol
from hindsight.config import ClientConfig, Config
from hindsight.errors import HindsightError, ProtocolError
from hindsight.protocol import (
    Access,
    Checkpoint,
    End,
    Extend,
    Mark,
    Pause,
    Ping,
    Recordings,
    Request,
    Resolve,
    Resume,
    Start,
    Status,
)
from hindsight.replies import Reply, StatusReply

log = logging.getLogger(__name__)

ADMIN = "admin"
# Every role but admin: the ops it may send (admin: every op).
ALLOWED: Mapping[str, frozenset[type[Any]]] = {
    "telephony": frozenset({Ping, Start, End, Pause, Resume, Status}),
    "agent": frozenset({Ping, Mark, Status}),
    "reviewer": frozenset({Ping, Recordings, Access, Resolve, Extend}),
    # A witness on another host: signed checkpoints of the log's head, nothing else.
    "auditor": frozenset({Ping, Checkpoint}),
}
DENIED = "this client may not send this request"

Op = Callable[[Any], Reply]


class EventLog(Protocol):
    """What rights needs of the commit log."""

    def append(self, event: str, **fields: Any) -> Any: ...


def client_of(config: Config, user_id: str) -> ClientConfig | None:
    """The configured client whose public key ZAP gave as ``user_id``; None if none is."""
    return next((c for c in config.clients if c.public_key == user_id), None)


def allows(client: ClientConfig, request: Request) -> bool:
    """Whether ``client``'s role may send ``request`` (and, for an agent, on that line)."""
    if client.role == ADMIN:
        return True
    if type(request) not in ALLOWED.get(client.role, frozenset()):
        return False
    line = getattr(request, "line", None)
    return client.role != "agent" or line is None or line in client.lines


def run(config: Config, events: EventLog, user_id: str | None, request: Request, op: Op) -> Reply:
    """Check ``request`` from ``user_id`` (None: the local control socket), then run ``op``.

    ProtocolError ``not_allowed`` (logged as ``access_denied`` first) when it may not.
    """
    if user_id is None:
        return op(request)
    client = client_of(config, user_id)
    if client is None or not allows(client, request):
        name = client.name if client is not None else "(unknown key)"
        try:
            events.append("access_denied", client=name, op=protocol.op_name(request))
        except HindsightError as exc:
            log.error("access_denied for %s could not be logged: %s", name, exc)
        log.info("refused %s from client %s", protocol.op_name(request), name)
        raise ProtocolError("not_allowed", DENIED)
    reply = op(request)
    if client.role == "agent" and isinstance(reply, StatusReply):
        return own_lines(reply, client.lines)
    return reply


def own_lines(reply: StatusReply, lines: tuple[str, ...]) -> StatusReply:
    """A ``status`` reply cut down to ``lines`` and the devices they are captured from.

    Nothing else: what is about the whole floor (the worker, figures of the pool and of
    the work behind ended calls) is not an agent's, and a field added to ``status`` later
    stays hidden from agents until it is added here.
    """
    rows = tuple(row for row in reply.lines if row.line in lines)
    devices = {row.device for row in rows}
    return StatusReply(rows, tuple(d for d in reply.devices if d.device in devices))
