"""Runs the real daemon as a subprocess on a config written for one test, and talks to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import zmq

from hindsight.daemon.buffer import Int16Array

BIN = Path(sys.executable).parent
RATE = 16000


def noise_wav(path: Path, seconds: float = 3.0, channels: int = 2, seed: int = 7) -> Int16Array:
    """A non-repeating signal, so that any stretch of it can be located exactly."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-20000, 20000, size=(int(RATE * seconds), channels), dtype=np.int16)
    sf.write(str(path), data, RATE, subtype="PCM_16")
    return data


def config_text(tmp: Path, **over: Any) -> str:
    o: dict[str, Any] = {
        "source": "synthetic",
        "file": "",
        "device": "",
        "channels": 2,
        "blocksize": 320,
        "one_in": 0,
        "memory_mb": 16,
        "max_call_seconds": 600,
        "lines": [("desk-01", [1, 2])],
        "devices": [],
        "control": f"ipc://{tmp}/ctl.sock",
        "daemon": "",  # more [daemon] keys, e.g. listen (extra cannot reopen that table)
        "sampling": "",  # more [sampling] keys, e.g. epoch_hours
        "extra": "",
    }
    o.update(over)
    lines = "".join(_line(*line) for line in o["lines"])
    devices = "".join(
        f'\n[[devices]]\nname = "{name}"\ndevice = "{device}"\nchannels = {channels}\n'
        for name, device, channels in o["devices"]
    )
    single = "" if devices else f'device = "{o["device"]}"\nchannels = {o["channels"]}'

    return f"""
[daemon]
state_dir = "state"
control = "{o["control"]}"
{o["daemon"]}

[audio]
source = "{o["source"]}"
file = "{o["file"]}"
{single}
samplerate = {RATE}
blocksize = {o["blocksize"]}

[buffer]
max_call_seconds = {o["max_call_seconds"]}
memory_mb = {o["memory_mb"]}

[sampling]
one_in = {o["one_in"]}
{o["sampling"]}
{devices}
{lines}
{o["extra"]}
"""


def _line(name: str, channels: list[int], device: str | None = None) -> str:
    on = f'device = "{device}"\n' if device else ""
    return f'\n[[lines]]\nname = "{name}"\nchannels = {list(channels)}\n{on}'


@dataclass(frozen=True)
class Span:
    """A call's length bracketed by request times: it lasted between inner and outer."""

    inner: float
    outer: float

    def holds(self, seconds: float, slack: float = 0.1) -> bool:
        """Whether ``seconds`` of audio fit the span (``slack`` for block and pacing jitter)."""
        return self.inner - slack <= seconds <= self.outer + slack


class Daemon:
    """One ``hindsightd`` subprocess; ``with Daemon(...) as d:`` starts and stops it."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str] | None = None,
        wrap: tuple[str, ...] = (),
        **over: Any,
    ) -> None:
        """``wrap`` goes before the command, e.g. to run it in namespaces of its own; it must
        exec the daemon (not fork it), so that ``proc`` is the daemon itself."""
        self.wrap = wrap
        self.tmp = tmp
        self.config = tmp / "hindsight.toml"
        self.config.write_text(config_text(tmp, **over))
        self.state = tmp / "state"
        self.endpoint = str(over.get("control", f"ipc://{tmp}/ctl.sock"))
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = tmp / "daemon.stderr"

    def __enter__(self) -> Daemon:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def start(self, wait: bool = True) -> None:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [*self.wrap, str(BIN / "hindsightd"), "--config", str(self.config)],
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"hindsightd exited {self.proc.returncode}: {self.stderr()}")
            try:
                if self.request({"op": "ping"}, timeout=0.3)["ok"]:
                    return
            except TimeoutError:
                pass
        raise AssertionError(f"hindsightd did not answer within {timeout} s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def send_frames(self, frames: list[bytes], timeout: float = 10.0) -> list[bytes]:
        """Send raw frames from a DEALER; return the reply frames (empty delimiter stripped)."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            sock.send_multipart(frames)
            if not sock.poll(int(timeout * 1000)):
                raise TimeoutError("no reply")
            reply: list[bytes] = sock.recv_multipart()
            return reply[1:] if reply and reply[0] == b"" else reply
        finally:
            sock.close(linger=0)

    def request(self, payload: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        reply = self.send_frames([b"", json.dumps(payload).encode()], timeout)
        assert len(reply) == 1, reply
        result: dict[str, Any] = json.loads(reply[0])
        return result

    def ok(self, payload: dict[str, Any]) -> dict[str, Any]:
        reply = self.request(payload)
        assert reply["ok"], reply
        return reply

    def timed_call(self, line: str, seconds: float, mark_after: float | None = None) -> Span:
        """Run one call; return how long it lasted, seen from outside the requests."""
        before = time.monotonic()
        self.ok({"op": "start", "line": line})
        after = time.monotonic()
        if mark_after is not None:
            time.sleep(mark_after)
            self.ok({"op": "mark", "line": line})
        time.sleep(seconds - (mark_after or 0.0))
        end_sent = time.monotonic()
        self.ok({"op": "end", "line": line})
        return Span(inner=end_sent - after, outer=time.monotonic() - before)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def entries(self) -> list[dict[str, Any]]:
        text = (self.state / "commit.log").read_text()
        # Whole lines only: a line being appended right now may be read half-written.
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e["event"] == kind]

    def wait_for_event(
        self, kind: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(kind)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {kind} in the log: {self.entries()}\n{self.stderr()}")


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "hindsight"), *args], capture_output=True, text=True, timeout=timeout
    )


def find_offset(haystack: Int16Array, needle: Int16Array) -> int:
    """Where ``needle`` starts in the looped ``haystack`` (located by its first 32 frames)."""
    looped = np.concatenate([haystack, haystack])
    probe = needle[:32]
    for start in np.flatnonzero(looped[: len(haystack), 0] == probe[0, 0]):
        if np.array_equal(looped[start : start + 32], probe):
            return int(start)
    raise AssertionError("the recording's start does not occur in the input")


def looped_span(data: Int16Array, start: int, frames: int) -> Int16Array:
    reps = -(-(start + frames) // len(data)) + 1
    return np.concatenate([data] * reps)[start : start + frames]
