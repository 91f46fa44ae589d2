"""Remote clients on ``daemon.listen``: CURVE, ZAP and roles, over real sockets with the real
daemon (and the real ``hindsight`` client)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from hindsight import protocol
from hindsight.config import ROLES
from hindsight.daemon import rights
from tests.harness import BIN, Daemon

CLIENT = str(BIN / "hindsight")
DAEMON = str(BIN / "hindsightd")
SILENCE = 1.5  # seconds: a refused handshake never answers; a local one answers in ms
LINES = [("desk-01", [1]), ("desk-02", [2])]


@dataclass(frozen=True)
class Pair:
    """A CURVE key pair, Z85."""

    public: bytes
    secret: bytes

    @classmethod
    def new(cls) -> Pair:
        return cls(*zmq.curve_keypair())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connect(endpoint: str, server: bytes | None, pair: Pair | None) -> zmq.Socket[bytes]:
    """A DEALER to ``endpoint``: CURVE with ``pair`` against ``server``, else plaintext."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if pair is not None and server is not None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
    sock.connect(endpoint)
    return sock


def exchange(
    sock: zmq.Socket[bytes], payload: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any] | None:
    """Send one request on ``sock``; its reply, or None when none comes within ``timeout``."""
    sock.send_multipart([b"", json.dumps(payload).encode()])
    if not sock.poll(int(timeout * 1000)):
        return None
    frames = sock.recv_multipart()
    reply: dict[str, Any] = json.loads(frames[-1])
    return reply


def ask(
    endpoint: str,
    server: bytes | None,
    pair: Pair | None,
    payload: dict[str, Any],
    timeout: float = 5.0,
) -> dict[str, Any] | None:
    """One request on a fresh connection, as the ``hindsight`` client makes them."""
    sock = connect(endpoint, server, pair)
    try:
        return exchange(sock, payload, timeout)
    finally:
        sock.close(linger=0)


def clients_toml(clients: dict[str, tuple[Pair, str, list[str]]]) -> str:
    return "".join(
        f'\n[[clients]]\nname = "{name}"\npublic_key = "{pair.public.decode()}"\n'
        f'role = "{role}"\nlines = {json.dumps(lines)}\n'
        for name, (pair, role, lines) in clients.items()
    )


def listen_keys(tmp: Path, port: int) -> str:
    """``[daemon]`` keys for a listen endpoint whose key pair is ``tmp/server.key_secret``."""
    return (
        f'listen = "tcp://127.0.0.1:{port}"\ncurve_secret_key_file = "server.key_secret"\n'
        if (tmp / "server.key_secret").exists()
        else ""
    )


@dataclass
class Floor:
    """A daemon with a listen endpoint and one client of each role."""

    daemon: Daemon
    listen: str
    server: bytes
    pairs: dict[str, Pair]

    def ask(
        self, who: str | Pair | None, payload: dict[str, Any], timeout: float = 5.0
    ) -> dict[str, Any] | None:
        """As client ``who`` (a name, or any key pair; None: plaintext) on the listen socket."""
        pair = self.pairs[who] if isinstance(who, str) else who
        return ask(self.listen, self.server, pair, payload, timeout)

    def reply(self, who: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.ask(who, payload)
        assert answer is not None, f"no reply to {who}: {self.daemon.stderr()}"
        return answer

    def refused(self, who: str, payload: dict[str, Any]) -> None:
        answer = self.reply(who, payload)
        assert answer == {
            "ok": False,
            "error": {"code": "not_allowed", "message": rights.DENIED},
        }, answer

    def denials(self) -> list[tuple[str, str]]:
        return [(e["client"], e["op"]) for e in self.daemon.events("access_denied")]


ROLE_OF = {
    "phones": ("telephony", []),
    "desk-01-pc": ("agent", ["desk-01"]),
    "review-team": ("reviewer", []),
    "ops": ("admin", []),
}


def make_floor(tmp: Path) -> Floor:
    """A daemon (not started) whose listen key pair is ``tmp/server.key_secret``."""
    zmq.auth.create_certificates(tmp, "server")
    pairs = {name: Pair.new() for name in ROLE_OF}
    clients = {name: (pairs[name], *ROLE_OF[name]) for name in ROLE_OF}
    port = free_port()
    d = Daemon(tmp, lines=LINES, daemon=listen_keys(tmp, port), extra=clients_toml(clients))
    public, _ = zmq.auth.load_certificate(tmp / "server.key")
    return Floor(d, f"tcp://127.0.0.1:{port}", public, pairs)


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    made = make_floor(tmp_path_factory.mktemp("floor"))
    with made.daemon:
        yield made


def live_call(d: Daemon, line: str) -> str | None:
    """The live call on ``line``, asked on the local (admin) socket."""
    rows = d.ok({"op": "status"})["lines"]
    call_id: str | None = next(row["call_id"] for row in rows if row["line"] == line)
    return call_id


# ---------------------------------------------------------------------------------------------
# roles


def test_an_agent_marks_the_call_on_its_own_line(floor: Floor) -> None:
    d = floor.daemon
    call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
    try:
        reply = floor.reply("desk-01-pc", {"op": "mark", "line": "desk-01", "note": "abusive"})
        assert reply == {"ok": True, "call_id": call_id}, reply
        marked = [e for e in d.events("call_marked") if e["call_id"] == call_id]
        assert [(e["line"], e["purpose"]) for e in marked] == [("desk-01", "escalation")]
        assert ("desk-01-pc", "mark") not in floor.denials()
    finally:
        d.ok({"op": "end", "line": "desk-01"})


def test_an_agent_marking_another_line_is_refused_and_logged(floor: Floor) -> None:
    d = floor.daemon
    call_id = d.ok({"op": "start", "line": "desk-02"})["call_id"]
    try:
        before = len(floor.denials())
        floor.refused("desk-01-pc", {"op": "mark", "line": "desk-02"})
        # A line that does not exist is refused alike: the reply tells nothing of the floor.
        floor.refused("desk-01-pc", {"op": "mark", "line": "desk-99"})
        assert floor.denials()[before:] == [("desk-01-pc", "mark"), ("desk-01-pc", "mark")]
        assert not [e for e in d.events("call_marked") if e["call_id"] == call_id]
        (denied, *_) = d.events("access_denied")[before:]
        assert set(denied) == {"seq", "time", "event", "client", "op", "prev", "hash"}
    finally:
        d.ok({"op": "end", "line": "desk-02"})


def test_an_agent_may_not_start_a_call(floor: Floor) -> None:
    before = len(floor.denials())
    floor.refused("desk-01-pc", {"op": "start", "line": "desk-01"})
    assert floor.denials()[before:] == [("desk-01-pc", "start")]
    assert live_call(floor.daemon, "desk-01") is None


def test_an_agent_sees_only_its_own_lines(floor: Floor) -> None:
    d = floor.daemon
    d.ok({"op": "start", "line": "desk-02"})
    try:
        mine = floor.reply("desk-01-pc", {"op": "status"})
        everything = floor.reply("ops", {"op": "status"})
    finally:
        d.ok({"op": "end", "line": "desk-02"})
    assert mine["ok"] and [row["line"] for row in mine["lines"]] == ["desk-01"]
    assert set(mine) == {"ok", "lines", "devices"}, mine
    assert [row["line"] for row in everything["lines"]] == ["desk-01", "desk-02"]
    assert "worker" in everything
    assert floor.reply("desk-01-pc", {"op": "ping"})["ok"]


def test_telephony_starts_pauses_and_ends_calls(floor: Floor) -> None:
    d = floor.daemon
    call_id = floor.reply("phones", {"op": "start", "line": "desk-02", "agent": "ann"})["call_id"]
    assert live_call(d, "desk-02") == call_id
    for op in ("pause", "resume", "end"):
        assert floor.reply("phones", {"op": op, "line": "desk-02"}) == {
            "ok": True,
            "call_id": call_id,
        }
    assert live_call(d, "desk-02") is None
    (started,) = [e for e in d.events("call_started") if e["call_id"] == call_id]
    assert (started["line"], started["agent"]) == ("desk-02", "ann")
    d.wait_for_event("call_wiped", count=1)
    before = len(floor.denials())
    floor.refused("phones", {"op": "mark", "line": "desk-02"})
    floor.refused("phones", {"op": "recordings"})
    assert floor.denials()[before:] == [("phones", "mark"), ("phones", "recordings")]


def test_a_reviewer_may_review_but_not_end_a_call(floor: Floor) -> None:
    d = floor.daemon
    call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
    try:
        before = len(floor.denials())
        floor.refused("review-team", {"op": "end", "line": "desk-01"})
        assert live_call(d, "desk-01") == call_id
        assert floor.denials()[before:] == [("review-team", "end")]
        assert "recordings" in floor.reply("review-team", {"op": "recordings"})
        signed = {"actor": "rita", "reason": "weekly review"}
        unknown = floor.reply("review-team", {"op": "access", "call_id": "nope", **signed})
        assert unknown["error"]["code"] == "unknown_call"
    finally:
        d.ok({"op": "end", "line": "desk-01"})


def test_a_denied_request_does_not_tell_whether_a_call_was_kept(floor: Floor) -> None:
    d = floor.daemon
    kept = d.ok({"op": "start", "line": "desk-01"})["call_id"]
    d.ok({"op": "mark", "line": "desk-01"})
    time.sleep(0.3)  # some audio: a call ended before its first block is wiped (no_audio)
    d.ok({"op": "end", "line": "desk-01"})
    wiped = d.ok({"op": "start", "line": "desk-01"})["call_id"]
    d.ok({"op": "end", "line": "desk-01"})
    # An earlier test's marked call may be committed meanwhile: wait for this one.
    deadline = time.monotonic() + 10
    while kept not in {e["call_id"] for e in d.events("call_committed")}:
        assert time.monotonic() < deadline, d.entries()
        time.sleep(0.05)
    signed = {"actor": "x", "reason": "curious"}
    for op, extra in [("access", signed), ("resolve", {"purpose": "escalation", **signed})]:
        replies = [
            floor.reply("desk-01-pc", {"op": op, "call_id": call, **extra})
            for call in (kept, wiped, "never-was")
        ]
        assert replies[0] == replies[1] == replies[2], replies
        assert replies[0]["error"]["code"] == "not_allowed"
    assert not [e for e in d.events("recording_accessed") if e["call_id"] == kept]


def test_the_local_socket_stays_admin(floor: Floor) -> None:
    d = floor.daemon
    assert d.ok({"op": "purge", "dry_run": True})["deleted"] == []
    assert floor.reply("ops", {"op": "purge", "dry_run": True})["ok"]
    floor.refused("review-team", {"op": "purge", "dry_run": True})


# ---------------------------------------------------------------------------------------------
# who gets no reply at all


def _new_entries(d: Daemon, since: int) -> list[dict[str, Any]]:
    # Calls of earlier tests may still get their outcome (a settle delay): those do not count.
    settling = ("call_wiped", "call_committed")
    return [e for e in d.entries()[since:] if e["event"] not in settling]


def test_an_unknown_key_gets_no_reply_and_nothing_is_logged(floor: Floor) -> None:
    d = floor.daemon
    since = len(d.entries())
    stranger = Pair.new()
    for payload in ({"op": "ping"}, {"op": "start", "line": "desk-01"}):
        assert floor.ask(stranger, payload, timeout=SILENCE) is None
    assert _new_entries(d, since) == []
    assert live_call(d, "desk-01") is None
    assert "refused 1 handshake(s) with a key that is no [[clients]] entry's" in d.stderr()


def test_a_plaintext_client_gets_no_reply(floor: Floor) -> None:
    d = floor.daemon
    since = len(d.entries())
    assert ask(floor.listen, None, None, {"op": "ping"}, timeout=SILENCE) is None
    # A known client key against a wrong server key does not get in either.
    wrong_server = Pair.new().public
    agent = floor.pairs["desk-01-pc"]
    assert ask(floor.listen, wrong_server, agent, {"op": "ping"}, timeout=SILENCE) is None
    assert _new_entries(d, since) == []


def test_a_revoked_key_gets_no_reply_after_a_reload(tmp_path: Path) -> None:
    floor = make_floor(tmp_path)
    with floor.daemon as d:
        # Connected before the reload: its handshake is done, so the server must refuse it.
        held = connect(floor.listen, floor.server, floor.pairs["desk-01-pc"])
        try:
            assert (exchange(held, {"op": "ping"}) or {}).get("ok")
            kept = {name: (floor.pairs[name], *ROLE_OF[name]) for name in ("phones", "ops")}
            text = d.config.read_text()
            d.config.write_text(text[: text.index("\n[[clients]]")] + clients_toml(kept))
            assert d.proc is not None
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for_event("config_reloaded")
            since = len(d.entries())
            assert floor.ask("desk-01-pc", {"op": "ping"}, timeout=SILENCE) is None
            assert exchange(held, {"op": "status"}, timeout=SILENCE) is None
            assert floor.ask("review-team", {"op": "ping"}, timeout=SILENCE) is None
            assert floor.reply("phones", {"op": "ping"})["ok"]
            assert _new_entries(d, since) == []
        finally:
            held.close(linger=0)
        assert d.stop() == 0
    assert "ignoring requests from key" in d.stderr()


# ---------------------------------------------------------------------------------------------
# the client


def hs(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HINDSIGHT_CONFIG"}
    result = subprocess.run(
        [CLIENT, *args], capture_output=True, text=True, timeout=30, env=env, cwd=cwd
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_keygen_curve_writes_a_key_pair(tmp_path: Path) -> None:
    name = tmp_path / "desk-07"
    # A umask that would leave the owner unable to read: the modes are set exactly anyway.
    result = subprocess.run(
        ["sh", "-c", f'umask 0277; exec "{CLIENT}" keygen --curve -o "{name}"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result
    printed = result.stdout.strip()
    secret_file, public_file = Path(f"{name}.key_secret"), Path(f"{name}.key")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_file.stat().st_mode) == 0o644
    public, secret = zmq.auth.load_certificate(secret_file)
    assert secret is not None and zmq.curve_public(secret) == public
    assert zmq.auth.load_certificate(public_file) == (public, None)
    assert printed == public.decode() and len(printed) == 40
    assert secret.decode() not in result.stdout + result.stderr
    before = secret_file.read_bytes(), public_file.read_bytes()

    for existing in (secret_file, public_file):
        other = existing.with_name("again" + existing.suffix)
        other.write_text("mine")
        again = hs("keygen", "--curve", "-o", str(tmp_path / "again"))
        assert again.returncode == 2, again
        assert "exists" in again.stderr and again.stdout == ""
        assert other.read_text() == "mine"
        assert sorted(p.name for p in tmp_path.glob("again*")) == [other.name]
        other.unlink()
    again = hs("keygen", "--curve", "-o", str(name))
    assert again.returncode == 2 and (secret_file.read_bytes(), public_file.read_bytes()) == before
    assert hs("keygen", "--curve", "-o", "-").returncode == 2


def test_the_cli_drives_the_listen_endpoint_with_curve_keys(tmp_path: Path) -> None:
    made = {}
    for name in ("server", "phones"):
        result = hs("keygen", "--curve", "-o", str(tmp_path / name))
        assert result.returncode == 0, result
        made[name] = result.stdout.strip()
    port = free_port()
    phones = f'name = "phones"\npublic_key = "{made["phones"]}"\nrole = "telephony"\n'
    keys = listen_keys(tmp_path, port)
    with Daemon(tmp_path, lines=LINES, daemon=keys, extra=f"\n[[clients]]\n{phones}") as d:
        remote = [
            "--endpoint",
            f"tcp://127.0.0.1:{port}",
            "--server-key",
            made["server"],
            "--client-key",
            str(tmp_path / "phones.key_secret"),
        ]
        assert hs(*remote, "ping").returncode == 0
        call_id = hs(*remote, "start", "desk-01", "--agent", "ann").stdout.strip()
        assert live_call(d, "desk-01") == call_id
        # The options go after the command name too.
        status = hs("status", "--json", *remote)
        assert status.returncode == 0, status
        assert json.loads(status.stdout)["lines"][0]["call_id"] == call_id
        assert hs("end", "desk-01", *remote).stdout.strip() == call_id

        refused = hs(*remote, "recordings")
        assert refused.returncode == 1 and "not_allowed" in refused.stderr, refused
        assert [(e["client"], e["op"]) for e in d.events("access_denied")] == [
            ("phones", "recordings")
        ]

        # Without keys, a listen endpoint never answers: exit 3, and the message says why.
        bare = hs("--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "1", "ping")
        assert bare.returncode == 3 and "--server-key and --client-key" in bare.stderr, bare
        # The daemon's public key file is no client key: a usage error, before any request.
        public = ["--client-key", str(tmp_path / "phones.key")]
        wrong = hs(*remote[:4], *public, "ping")
        assert wrong.returncode == 2 and "holds no secret key" in wrong.stderr, wrong
        half = hs(*remote[:4], "ping")
        assert half.returncode == 2 and "go together" in half.stderr, half
        bad = hs(*remote[:2], "--server-key", "short", *remote[4:], "ping")
        assert bad.returncode == 2 and "--server-key" in bad.stderr, bad
        local = hs("--endpoint", d.endpoint, *remote[2:], "ping")
        assert local.returncode == 2 and "tcp://" in local.stderr, local
    secret = zmq.auth.load_certificate(tmp_path / "phones.key_secret")[1]
    assert secret is not None and secret.decode() not in d.stderr()
    # access_denied is a log line like any other to the auditor.
    verified = hs("audit", "verify", "--state-dir", str(d.state))
    assert verified.returncode == 0, verified


# ---------------------------------------------------------------------------------------------
# start-up


def test_a_control_socket_off_loopback_without_clients_is_refused_at_start_up(
    tmp_path: Path,
) -> None:
    control = f"tcp://0.0.0.0:{free_port()}"
    d = Daemon(tmp_path, control=control)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) == 2, d.stderr()
    assert "daemon.control: " in d.stderr() and "daemon.listen" in d.stderr()
    assert "Traceback" not in d.stderr()
    assert not d.state.exists()
    check = subprocess.run(
        [DAEMON, "--config", str(d.config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 2 and check.stdout.startswith("daemon.control: "), check


@pytest.mark.parametrize(
    ("key_file", "expected"),
    [
        ("absent.key_secret", "cannot be read: No such file or directory"),
        ("server.key", "holds no secret key"),
    ],
)
def test_a_listen_key_file_that_is_no_key_pair_is_refused(
    tmp_path: Path, key_file: str, expected: str
) -> None:
    zmq.auth.create_certificates(tmp_path, "server")
    keys = f'listen = "tcp://127.0.0.1:{free_port()}"\ncurve_secret_key_file = "{key_file}"\n'
    d = Daemon(tmp_path, daemon=keys)
    check = subprocess.run(
        [DAEMON, "--config", str(d.config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 2, check
    assert check.stdout.startswith("daemon.curve_secret_key_file: ") and expected in check.stdout
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) == 2, d.stderr()
    assert expected in d.stderr() and not d.state.exists()


# ---------------------------------------------------------------------------------------------
# the rights table


def test_every_role_has_rights_and_every_op_a_name() -> None:
    assert set(rights.ALLOWED) | {rights.ADMIN} == set(ROLES)
    ops = {cls.__name__.lower() for cls in typing.get_args(protocol.Request)}
    assert ops == set(protocol.OP_NAMES.values())
    assert all(
        allowed <= set(typing.get_args(protocol.Request)) for allowed in rights.ALLOWED.values()
    )
