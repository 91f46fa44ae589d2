"""The daemon as a service: systemd's notify protocol and watchdog, signals, SIGHUP reload."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from hindsight.daemon.systemd import Flow, watchdog_interval
from tests.harness import Daemon, config_text
from tests.pulse import PulseServer
from tests.test_worker import wait_until


class NotifySocket:
    """A NOTIFY_SOCKET of our own: every datagram the daemon sends, with when it came."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.got: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for state in data.decode().splitlines():
                self.got.append((time.monotonic(), state))

    def states(self, prefix: str, since: float = 0.0) -> list[str]:
        return [s for t, s in list(self.got) if s.startswith(prefix) and t >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_the_watchdog_interval_is_half_of_what_systemd_asks_and_only_for_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 1.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_a_running_source_that_delivers_nothing_is_stalled_a_lost_one_is_not() -> None:
    now = [100.0]
    flow = Flow(["a", "b"], clock=lambda: now[0])
    delivered: list[int] = []
    feed_a = flow.wrap("a", lambda block, flagged: delivered.append(block))
    now[0] = 101.0
    feed_a(1, False)
    now[0] = 102.5
    assert flow.stalled({"a": "running", "b": "running"}) == ["b"]
    assert flow.stalled({"a": "running", "b": "lost"}) == []
    assert delivered == [1]


def test_ready_status_watchdog_while_audio_flows_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    env_extra = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}
    try:
        with PulseServer(tmp_path / "pulse") as server:
            env = {**server.client_env(), **env_extra}
            d = Daemon(tmp_path, env=env, source="sounddevice", device="pulse", channels=2)
            with d:
                wait_until(lambda: notify.states("READY=1"), what="READY=1")
                d.ok({"op": "start", "line": "desk-01"})
                wait_until(
                    lambda: any("1 live call" in s for s in notify.states("STATUS=")),
                    what="a STATUS= with the live call",
                )
                wait_until(lambda: len(notify.states("WATCHDOG=1")) >= 3, what="pings")
                # The audio server hangs: the capture stalls, the pings stop.
                assert server.pid is not None
                os.kill(server.pid, signal.SIGSTOP)
                try:
                    wait_until(lambda: "capture is stuck" in d.stderr(), timeout=10, what="stall")
                    time.sleep(0.3)  # a ping sent just before the stall may still be in the reader
                    quiet = time.monotonic()
                    time.sleep(1.5)
                    assert notify.states("WATCHDOG=1", since=quiet) == []
                    assert d.ok({"op": "ping"})["ok"], "the control loop still answers"
                finally:
                    os.kill(server.pid, signal.SIGCONT)
                back = time.monotonic()
                wait_until(
                    lambda: notify.states("WATCHDOG=1", since=back),
                    timeout=10,
                    what="pings again once audio flows",
                )
                d.ok({"op": "end", "line": "desk-01"})
                d.wait_for_event("call_wiped", timeout=15)
            assert d.proc is not None and d.proc.returncode == 0
            wait_until(lambda: notify.states("STOPPING=1"), timeout=5, what="STOPPING=1")
            ready = notify.states("READY=1")
            assert len(ready) == 1
    finally:
        notify.close()


IGNORED = (
    *("SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGTSTP", "SIGTTIN"),
    *("SIGTTOU", "SIGWINCH", "SIGCONT", "SIGXCPU", "SIGTRAP"),
)


def test_no_signal_a_sysadmin_might_send_kills_the_daemon_or_its_calls(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        assert d.proc is not None
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        for name in ("SIGUSR1", *IGNORED):
            os.kill(d.proc.pid, signal.Signals[name])
            time.sleep(0.05)
        wait_until(lambda: "SIGTRAP received: ignored" in d.stderr(), what="the last signal")
        assert d.proc.poll() is None
        assert d.ok({"op": "status"})["lines"][0]["call_id"] == call_id
        d.ok({"op": "end", "line": "desk-01"})
        (wiped,) = d.wait_for_event("call_wiped", timeout=15)
        assert d.stop() == 0
    assert wiped["why"] == "not_kept" and wiped["seconds"] > 0.2
    log = d.stderr()
    assert "SIGUSR1: 1 live call(s) on 1 line(s); worker pid" in log
    for name in IGNORED:
        assert f"{name} received: ignored" in log, name


def test_sigquit_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        d.ok({"op": "start", "line": "desk-01"})
        assert d.stop(signal.SIGQUIT) == 0
    assert d.events("call_wiped")[0]["why"] == "not_kept"
    assert d.events("daemon_stopped")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reload(d: Daemon, text: str) -> None:
    assert d.proc is not None
    d.config.write_text(text)
    os.kill(d.proc.pid, signal.SIGHUP)


def test_sighup_adds_a_line_and_changes_sampling_without_dropping_a_live_call(
    tmp_path: Path,
) -> None:
    one = [("desk-01", [1, 2])]
    two = [("desk-01", [1, 2]), ("desk-02", [1, 2])]
    with Daemon(tmp_path, lines=one) as d:
        started = d.events("daemon_started")[0]
        assert started["config_sha256"] == sha256_of(d.config)
        live = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        assert d.request({"op": "start", "line": "desk-02"})["error"]["code"] == "unknown_line"
        reload(d, config_text(tmp_path, lines=two, one_in=1))
        (reloaded,) = d.wait_for_event("config_reloaded", timeout=10)
        assert reloaded["config_sha256"] == sha256_of(d.config)
        sampled = d.ok({"op": "start", "line": "desk-02"})["call_id"]
        time.sleep(0.5)
        for line in ("desk-01", "desk-02"):
            d.ok({"op": "end", "line": line})
        d.wait_for_event("call_committed", timeout=15)
        d.wait_for_event("call_wiped", timeout=15)
        assert d.stop() == 0
    (committed,) = d.events("call_committed")
    assert committed["call_id"] == sampled and committed["reasons"] == ["sampled"]
    (wiped,) = d.events("call_wiped")
    assert wiped["call_id"] == live and wiped["seconds"] > 0.4, "the live call went on"
    assert "SIGHUP: config reloaded" in d.stderr()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"memory_mb": 32}, "[buffer] changed: it takes a restart"),
        ({"control": "ipc://{tmp}/other.sock"}, "[daemon] changed: it takes a restart"),
        ({"lines": [("desk-02", [1, 2])]}, "lines: desk-01 has a live call"),
        ({"lines": [("desk-01", [2, 1])]}, "lines: desk-01 has a live call; change the line"),
        ({"one_in": -1}, "sampling.one_in: must be at least 0"),
        (
            {"extra": '[purposes.escalation]\nlegal_basis = "contract"\nretention_days = 1\n'},
            "purposes.training: still announced to 1 unsettled call(s)",
        ),
    ],
)
def test_sighup_refuses_a_config_it_cannot_apply_and_keeps_the_old_one(
    tmp_path: Path, change: dict[str, object], reason: str
) -> None:
    over = {k: str(v).format(tmp=tmp_path) if k == "control" else v for k, v in change.items()}
    with Daemon(tmp_path) as d:
        d.ok({"op": "start", "line": "desk-01"})
        reload(d, config_text(tmp_path, **over))
        wait_until(lambda: reason in d.stderr(), what=reason)
        assert "config not reloaded, the old one stays" in d.stderr()
        time.sleep(0.3)
        assert not d.events("config_reloaded")
        d.ok({"op": "end", "line": "desk-01"})
        assert d.ok({"op": "status"})["lines"][0]["line"] == "desk-01"
        d.wait_for_event("call_wiped", timeout=15)
