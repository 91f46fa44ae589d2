"""The control socket: who may bind it, floods, and clients that do not read their replies."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq

from hindsight.daemon.server import (
    FORGET_AFTER,
    PER_CLIENT,
    REPLY_OVERHEAD,
    SEGMENT,
    TOTAL,
    TRACKER_OVERHEAD,
    RecentSet,
    ReplyLedger,
)
from tests.harness import Daemon

# What the daemon's VmRSS may grow by beyond the ledger's budget: transient
# request garbage, pyzmq's garbage thread (started by the first tracked reply).
RSS_SLACK = 2 << 20


def test_a_second_daemon_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with Daemon(tmp_path / "one") as first:
        second = Daemon(tmp_path / "two")
        second.config.write_text(
            second.config.read_text().replace(str(tmp_path / "two"), str(tmp_path / "one"), 1)
        )
        second.endpoint = first.endpoint
        second.start(wait=False)
        assert second.proc is not None and second.proc.wait(15) == 1
        assert "already listening" in second.stderr()
        assert first.ok({"op": "ping"})
    assert not (tmp_path / "one" / "ctl.sock").exists()


def test_a_file_in_the_sockets_place_is_left_alone(tmp_path: Path) -> None:
    victim = tmp_path / "ctl.sock"
    victim.write_text("not a socket")
    d = Daemon(tmp_path)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) == 1
    assert "not a socket" in d.stderr() and "Traceback" not in d.stderr()
    assert victim.read_text() == "not a socket"


def test_a_flood_of_requests_does_not_delay_shutdown(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.start()
    stop = threading.Event()

    def flood() -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(d.endpoint)
        frame = json.dumps({"op": "status"}).encode()
        sent = 0
        while not stop.is_set() and sent < 200_000:
            try:
                sock.send_multipart([b"", frame], zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
            while sock.poll(0):
                sock.recv_multipart()
        sock.close(linger=0)

    workers = [threading.Thread(target=flood) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        assert d.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - started < 5
    except subprocess.TimeoutExpired:
        assert d.proc is not None
        d.proc.kill()
        raise
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert d.entries()[-1]["event"] == "daemon_stopped"
    # The flooding clients read all along: none of their replies was refused (only
    # wait_ready's first probe may have left before its reply).
    assert all("Host unreachable" in line for line in _drop_warnings(d))


def test_a_client_that_never_reads_costs_the_daemon_bounded_memory(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        before = _rss(d)
        hog = _flood_without_reading(d, b"hog", 40_000)
        try:
            _wait_for_warning(d, b"hog")
            assert d.request({"op": "ping"}, timeout=2.0)["ok"]
            grown = _rss(d) - before
            warnings = _drop_warnings(d, b"hog")
        finally:
            hog.close(linger=0)
    # The old server queued all 40,000 replies: ~13 MiB.
    assert grown < PER_CLIENT + RSS_SLACK, f"VmRSS grew by {grown >> 10} KiB"
    assert len(warnings) == 1, warnings
    assert "KiB of unread replies" in warnings[0]


def test_two_clients_that_never_read_cost_the_daemon_bounded_memory_together(
    tmp_path: Path,
) -> None:
    # 64 lines make a status reply ~7 KB: bytes, not the count of replies, fill the budget.
    with Daemon(tmp_path, lines=[(f"desk-{n:02}", [1, 2]) for n in range(64)]) as d:
        before = _rss(d)
        hogs = []
        try:
            for name in (b"first", b"second"):
                hogs.append(_flood_without_reading(d, name, 3_000))
                _wait_for_warning(d, name)
            assert d.request({"op": "ping"}, timeout=2.0)["ok"]
            grown = _rss(d) - before
            first, second = _drop_warnings(d, b"first"), _drop_warnings(d, b"second")
            # Replies still held (tracked ones among them) do not hold up a clean stop.
            assert d.stop(timeout=10) == 0
        finally:
            for hog in hogs:
                hog.close(linger=0)
    # The old server queued all 6,000 replies: ~42 MiB.
    assert grown < TOTAL + RSS_SLACK, f"VmRSS grew by {grown >> 10} KiB"
    assert len(first) == 1 and "KiB of unread replies" in first[0], first
    assert len(second) == 1 and "KiB of replies in all" in second[0], second


def test_a_client_that_leaves_before_its_replies_is_warned_about_once(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        gone = _flood_without_reading(d, b"gone", 5_000)
        gone.close(linger=0)
        _wait_for_warning(d, b"gone")
        assert d.request({"op": "ping"}, timeout=2.0)["ok"]
        time.sleep(0.5)
        warnings = _drop_warnings(d, b"gone")
    # The old server logged one warning per reply that reached it (hundreds here).
    assert len(warnings) == 1 and "Host unreachable" in warnings[0], warnings


def _flood_without_reading(d: Daemon, name: bytes, count: int) -> zmq.Socket[bytes]:
    """A DEALER called ``name`` that sends ``count`` status requests and reads no reply."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, name)
    # Take one reply in, so that the rest stays with the daemon.
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(d.endpoint)
    frame = json.dumps({"op": "status"}).encode()
    for _ in range(count):
        sock.send_multipart([b"", frame])
    return sock


def _rss(d: Daemon) -> int:
    assert d.proc is not None
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS in /proc/PID/status")


def _drop_warnings(d: Daemon, name: bytes | None = None) -> list[str]:
    client = "" if name is None else f"client {name.hex()} "
    return [line for line in d.stderr().splitlines() if client in line and "dropping" in line]


def _wait_for_warning(d: Daemon, name: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not _drop_warnings(d, name):
        assert time.monotonic() < deadline, f"no warning about {name!r}: {d.stderr()}"
        time.sleep(0.05)


@dataclass
class FakeTracker:
    done: bool = False


def _reply(ledger: ReplyLedger, peer: bytes, size: int, read: bool) -> str | None:
    """Send one reply through ``ledger`` as the server does; the refusal, if any."""
    why = ledger.refusal(peer, size)
    if why is None:
        tracker = FakeTracker(done=read) if ledger.wants_tracker(peer, size) else None
        ledger.sent(peer, size, tracker)
    return why


def test_a_client_that_reads_is_never_refused() -> None:
    ledger = ReplyLedger()
    stuck = [_reply(ledger, b"hog", 7000, read=False) for _ in range(2000)]
    assert stuck[-1] is not None and ledger.total <= TOTAL
    for size in (30, 190, 7000, 150_000):
        assert all(_reply(ledger, b"reader", size, read=True) is None for _ in range(2000))


def test_small_replies_are_tracked_once_per_segment() -> None:
    ledger = ReplyLedger()
    tracked = 0
    for _ in range(10_000):
        tracked += ledger.wants_tracker(b"reader", 30)
        _reply(ledger, b"reader", 30, read=True)
    per_segment = -(-SEGMENT // (30 + REPLY_OVERHEAD))
    assert tracked == 10_000 // per_segment


def test_a_client_that_never_reads_is_refused_at_its_share() -> None:
    ledger = ReplyLedger()
    while _reply(ledger, b"hog", 190, read=False) is None:
        pass
    largest = 190 + REPLY_OVERHEAD + TRACKER_OVERHEAD
    assert PER_CLIENT - largest < ledger.total <= PER_CLIENT
    assert all(_reply(ledger, b"hog", 190, read=False) for _ in range(1000))


def test_once_the_total_is_spent_only_clients_holding_little_are_answered() -> None:
    ledger = ReplyLedger()
    for hog in (b"one", b"two"):
        while _reply(ledger, hog, 7000, read=False) is None:
            pass
    assert ledger.total <= TOTAL
    assert "in all" in (_reply(ledger, b"two", 7000, read=False) or "")
    assert _reply(ledger, b"newcomer", 7000, read=False) is None


def test_clients_that_left_are_forgotten() -> None:
    ledger = ReplyLedger()
    for n in range(1000):
        _reply(ledger, n.to_bytes(4, "big"), 190, read=False)
    ledger.sweep(time.monotonic())
    assert ledger.clients() == 1000
    ledger.sweep(time.monotonic() + FORGET_AFTER + 1)
    assert ledger.clients() == 0 and ledger.total == 0


def test_whom_the_server_warned_is_remembered_in_bounded_memory() -> None:
    warned = RecentSet(2)
    added = [warned.add(key) for key in (b"a", b"a", b"b", b"c", b"a")]
    assert added == [True, False, True, True, True]  # "c" pushed "a" out
