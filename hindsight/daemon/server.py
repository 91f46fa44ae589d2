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
- Replies a client leaves unread cost bounded memory, per client and in all.
  ZeroMQ's own cap (SNDHWM) counts messages of one client, but a status reply
  runs to ~150 KB on 1,024 lines and clients are many; so a ledger counts, in
  bytes, the replies ZeroMQ may still hold, and refuses a reply once its
  client holds PER_CLIENT or all clients together hold TOTAL. A client that
  reads has its replies moved out to its own socket within microseconds and
  never nears either: only one whose socket and kernel buffers are full is
  charged for long.
- Only pyzmq's MessageTracker tells when ZeroMQ has let go of a reply, and a
  tracked (zero-copy) send costs ~25 us, a quarter of a ping's round trip.
  So one reply per SEGMENT bytes sent to a client is tracked, the others are
  copied as before; replies to one client are let go of in order, so a done
  tracker confirms everything sent to it before. Until then a client's replies
  count as held, which errs on the side of memory.
- A client with fewer than FREE_SEGMENTS tracked replies outstanding is never
  refused, not even when the total is spent: a REQ client, or one asking for
  the first time, gets through while others hog the total. The worst case is
  thus TOTAL plus about two segments and two replies per connection, the same
  order as what ZeroMQ spends on every connection anyway.
- A client with nothing tracked outstanding is forgotten FORGET_AFTER seconds
  after its last reply, so that clients that left do not fill the ledger; what
  is forgotten of one that stayed is less than a segment. The ledger looks
  over all its clients at most every SWEEP_EVERY seconds, not per request.
- A refused reply is logged once per client, not once per reply; whom the
  server has warned is remembered for the last WARNED_MEMORY clients only.
- ``daemon.listen`` is a second server of this class, always CURVE: ZAP (pyzmq's
  ThreadAuthenticator, asking ``ClientKeys``) lets in only the public keys of
  ``[[clients]]``, so an unknown key or a plaintext client never completes its
  handshake and gets no reply at all. The socket enforces the ZAP domain: were
  the authenticator missing, every handshake would fail rather than pass. Each
  request's ZAP user id (its ``User-Id``, the client's Z85 public key) goes to
  the handler, which checks the client's rights (``rights``); a key that a
  reload removed is dropped here, unanswered, even on a connection made before.
  Requests on ``daemon.control`` have no user id (None): that socket is the
  administrator's, and its file mode decides who that is.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from hindsight.config import ClientConfig, z85_key_problem
from hindsight.errors import ConfigError, HindsightError
from hindsight.protocol import error_reply

log = logging.getLogger(__name__)

# (payload, ZAP user id or None on the local control socket) -> the reply
Handler = Callable[[bytes, str | None], bytes]
# Larger messages are dropped by ZeroMQ itself (the peer is disconnected);
# up to here the daemon still reads them and answers bad_request.
HARD_LIMIT = 16 * 1024 * 1024
BATCH = 64  # requests answered per call of serve_pending
PER_CLIENT = 4 << 20  # bytes of unread replies one client may leave with the daemon
TOTAL = 6 << 20  # ... and all clients together: a second hog gets half a share
SEGMENT = 16 << 10  # bytes sent to a client per tracked reply
FREE_SEGMENTS = 2
FORGET_AFTER = 10.0  # seconds
SWEEP_EVERY = 0.1  # seconds
# What a queued reply costs beside its payload, measured as VmRSS growth:
# ZeroMQ's three frames; a tracked one adds pyzmq's frame, tracker and event.
REPLY_OVERHEAD = 256
TRACKER_OVERHEAD = 2048
# ZeroMQ's own cap, in messages: as many as PER_CLIENT bytes can hold, so
# that the ledger decides and ZeroMQ only backs it up.
SEND_HWM = PER_CLIENT // REPLY_OVERHEAD
WARNED_MEMORY = 256
PROBE_TIMEOUT_MS = 2000  # a busy daemon still answers a ping well within this
ZAP_DOMAIN = "hindsight"
REFUSED_WARN_EVERY = 60.0  # seconds: unknown keys are logged at most this often
KEY_FILE = "daemon.curve_secret_key_file"


class Tracker(Protocol):
    """What the ledger needs of a ``zmq.MessageTracker``."""

    @property
    def done(self) -> bool: ...


@dataclass
class _Client:
    tracked: deque[tuple[Tracker, int]] = field(default_factory=deque)  # (tracker, bytes)
    untracked: int = 0  # bytes sent since the last tracked reply
    held: int = 0  # bytes not yet confirmed let go of, tracked or not
    last: float = 0.0  # time.monotonic() of the last reply


class ReplyLedger:
    """Bytes of replies that ZeroMQ may still hold, per client and in all."""

    def __init__(self, per_client: int = PER_CLIENT, total: int = TOTAL) -> None:
        self.per_client = per_client
        self.budget = total
        self.total = 0
        self._clients: dict[bytes, _Client] = {}
        self._next_sweep = 0.0

    def refusal(self, peer: bytes, size: int) -> str | None:
        """Why a reply of ``size`` bytes may not be queued for ``peer`` now; None if it may."""
        client = self._clients.get(peer)
        if client is None or self._retire(client) < FREE_SEGMENTS:
            return None
        cost = size + REPLY_OVERHEAD
        if client.held + cost > self.per_client:
            return f"it holds {client.held >> 10} KiB of unread replies"
        if self.total + cost > self.budget:
            return f"clients that do not read hold {self.total >> 10} KiB of replies in all"
        return None

    def wants_tracker(self, peer: bytes, size: int) -> bool:
        """Whether the reply of ``size`` bytes about to go to ``peer`` closes a segment."""
        client = self._clients.get(peer)
        untracked = client.untracked if client is not None else 0
        return untracked + size + REPLY_OVERHEAD >= SEGMENT

    def sent(self, peer: bytes, size: int, tracker: Tracker | None) -> None:
        client = self._clients.setdefault(peer, _Client())
        cost = size + REPLY_OVERHEAD
        if tracker is None:
            client.untracked += cost
        else:
            cost += TRACKER_OVERHEAD
            client.tracked.append((tracker, client.untracked + cost))
            client.untracked = 0
        client.held += cost
        client.last = time.monotonic()
        self.total += cost

    def sweep(self, now: float) -> None:
        """Confirm what ZeroMQ let go of; forget clients idle since ``now - FORGET_AFTER``."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        for peer, client in list(self._clients.items()):
            if self._retire(client) == 0 and client.last < now - FORGET_AFTER:
                self.total -= client.held
                del self._clients[peer]

    def clients(self) -> int:
        return len(self._clients)

    def _retire(self, client: _Client) -> int:
        """Drop the tracked replies ZeroMQ let go of; return how many are still held."""
        tracked = client.tracked
        while tracked and tracked[0][0].done:
            _, confirmed = tracked.popleft()
            client.held -= confirmed
            self.total -= confirmed
        return len(tracked)


class RecentSet:
    """The last ``size`` keys added: a bounded memory of whom a warning was given."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def add(self, key: bytes) -> bool:
        """Remember ``key``; False if it was remembered already."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class ClientKeys:
    """The CURVE public keys of ``[[clients]]``: ZAP asks it at every handshake on
    ``daemon.listen`` (in the authenticator's thread), the server at every request."""

    def __init__(self, clients: Iterable[ClientConfig]) -> None:
        self._names: dict[str, str] = {}
        self._refused = 0
        self._next_warning = 0.0
        self.update(clients)

    def update(self, clients: Iterable[ClientConfig]) -> None:
        """Take the clients of a new config; from now on only their keys are let in."""
        self._names = {client.public_key: client.name for client in clients}  # one rebinding

    def admits(self, user_id: str) -> bool:
        return user_id in self._names

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials provider: whether the Z85 public ``key`` may finish its
        handshake. Refusals are logged at most every REFUSED_WARN_EVERY seconds."""
        text = key.decode("ascii", "replace")
        if self.admits(text):
            return True
        self._refused += 1
        now = time.monotonic()
        if now >= self._next_warning:
            log.warning(
                "daemon.listen: refused %d handshake(s) with a key that is no [[clients]] "
                "entry's (the last: %s)",
                self._refused,
                text,
            )
            self._refused, self._next_warning = 0, now + REFUSED_WARN_EVERY
        return False


@dataclass(frozen=True)
class Curve:
    """What makes a server CURVE: its key pair, and the client keys ZAP lets in."""

    public: bytes
    secret: bytes
    keys: ClientKeys


def load_server_keys(path: Path) -> tuple[bytes, bytes]:
    """The (public, secret) Z85 key pair in the ZeroMQ certificate at ``path``, as
    ``hindsight keygen --curve`` writes it; ConfigError naming ``KEY_FILE`` when it is not."""

    def problem(message: str) -> ConfigError:
        return ConfigError([f"{KEY_FILE}: {path} {message}"])

    try:
        path.read_bytes()  # for the reason when it cannot be read
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise problem(f"cannot be read: {exc.strerror or exc}") from None
    except ValueError:
        raise problem("is not a ZeroMQ certificate (no public-key line)") from None
    if secret is None:
        raise problem("holds no secret key: give NAME.key_secret, not the public NAME.key")
    for key in (public, secret):
        if z85_key_problem(key.decode("ascii", "replace")) is not None:
            raise problem("holds a malformed key: it is not a CURVE certificate")
    if zmq.curve_public(secret) != public:
        raise problem("holds a public key that does not belong to its secret key")
    return public, secret


class ControlServer:
    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        curve: Curve | None = None,
    ) -> None:
        """A server on ``endpoint``; with ``curve``, a CURVE server that lets in only the
        keys of ``curve.keys`` (``daemon.listen``)."""
        self.endpoint = endpoint
        self._path = ipc_path(endpoint)
        if self._path is not None:
            _check_free(context, endpoint, self._path)
        self.socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT)
        self.socket.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._ledger = ReplyLedger()
        self._warned = RecentSet(WARNED_MEMORY)
        self._ignored = RecentSet(WARNED_MEMORY)
        self.keys = curve.keys if curve is not None else None
        self._auth: ThreadAuthenticator | None = None
        try:
            if curve is not None:
                self._auth = _curve_server(context, self.socket, curve)
            with _socket_umask(self._path):
                self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._close_auth()
            self.socket.close()
            raise HindsightError(f"cannot bind control socket {endpoint}: {exc}") from exc
        self._inode = os.stat(self._path).st_ino if self._path is not None else None

    def admit(self, clients: Iterable[ClientConfig]) -> None:
        """A reload: only the keys of ``clients`` get in from now on (on a CURVE server)."""
        if self.keys is not None:
            self.keys.update(clients)

    def serve_pending(self, handle: Handler) -> None:
        """Answer up to ``BATCH`` requests waiting on the socket, without blocking."""
        self._ledger.sweep(time.monotonic())
        for _ in range(BATCH):
            try:
                if self.keys is None:
                    frames, client = self.socket.recv_multipart(zmq.NOBLOCK), None
                else:
                    frames, client = self._receive_authenticated()
            except zmq.Again:
                return
            if self.keys is not None and not self.keys.admits(client or ""):
                self._ignore(client or "")
                continue
            self._answer(frames, handle, client)

    def _receive_authenticated(self) -> tuple[list[bytes], str]:
        """One message and the user id ZAP gave its connection (the client's public key)."""
        parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
        try:
            user_id = str(parts[-1].get("User-Id"))
        except zmq.ZMQError:
            user_id = ""
        return [part.bytes for part in parts], user_id

    def _ignore(self, user_id: str) -> None:
        """A request on a connection whose key is no client's any more: no reply at all."""
        if self._ignored.add(user_id.encode("ascii", "replace")):
            log.warning(
                "daemon.listen: ignoring requests from key %s: no [[clients]] entry has it "
                "(removed by a reload?)",
                user_id or "(none)",
            )

    def _answer(self, frames: list[bytes], handle: Handler, client: str | None) -> None:
        identity, rest = frames[0], frames[1:]
        envelope = [identity]
        if len(rest) > 1 and rest[0] == b"":
            envelope.append(b"")
            rest = rest[1:]
        if len(rest) != 1:
            reply = error_reply("bad_request", "a request is exactly one frame of JSON")
        else:
            reply = _safely(handle, rest[0], client)
        self._send(envelope, reply)

    def _send(self, envelope: list[bytes], reply: bytes) -> None:
        peer = envelope[0]
        why = self._ledger.refusal(peer, len(reply))
        if why is not None:
            self._dropped(peer, why)
            return
        frame = None
        if self._ledger.wants_tracker(peer, len(reply)):
            frame = zmq.Frame(reply, copy=False, track=True)
        try:
            self.socket.send_multipart([*envelope, reply if frame is None else frame], zmq.NOBLOCK)
        except zmq.Again:
            self._dropped(peer, f"its queue of {SEND_HWM} replies is full")
            return
        except zmq.ZMQError as exc:
            self._dropped(peer, str(exc))
            return
        self._ledger.sent(peer, len(reply), frame.tracker if frame is not None else None)

    def _dropped(self, peer: bytes, why: str) -> None:
        if self._warned.add(peer):
            log.warning(
                "client %s is not reading its replies or has gone (%s); dropping replies to it "
                "without further warnings",
                peer.hex(),
                why,
            )

    def close(self) -> None:
        self.socket.close(linger=0)
        self._close_auth()
        if self._path is None:
            return
        try:
            if os.stat(self._path).st_ino == self._inode:
                self._path.unlink()
        except FileNotFoundError:
            pass

    def _close_auth(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def _curve_server(
    context: zmq.Context[zmq.Socket[bytes]], socket: zmq.Socket[bytes], curve: Curve
) -> ThreadAuthenticator:
    """Make ``socket`` a CURVE server whose handshakes ZAP decides; start the authenticator."""
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
    socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    # Without a ZAP handler libzmq would let every CURVE client in: refuse instead.
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, curve.keys)
    return auth


def _safely(handle: Handler, payload: bytes, client: str | None) -> bytes:
    try:
        return handle(payload, client)
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
