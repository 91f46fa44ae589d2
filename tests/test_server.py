"""The control socket against a real daemon: who may bind it, and floods."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import zmq

from tests.harness import Daemon


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
