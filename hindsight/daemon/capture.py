"""PortAudio capture through python-sounddevice: one supervised input stream per device.

This is the one module that touches sounddevice, so it is the one place that
wraps its errors.

The stream callback (``_callback``) is the audio path. PortAudio calls it on
its own real-time thread, once per block, and a late return overflows the
device's buffer and loses audio on every line of that device. So, like the
model in python-sounddevice's ``rec_unlimited.py``, it does almost nothing:

- It hands the block to ``CallTable.feed``, which copies each line's
  channels with plain slices into chunks taken from the preallocated pool.
  Plain slices, because fancy indexing allocates a new array per block.
- It never logs: logging takes locks and may write to a pipe that blocks.
- It never allocates audio memory and never waits on a lock that anyone
  holds across I/O: the call table's lock is held for microseconds only.
- It notes the time of the block, so that the supervisor can tell a
  stalled device from a quiet one.

The supervisor thread does everything slow: opening and closing streams,
noticing a vanished device (no block for ``STALL_SECONDS``, or a stream that
stopped), filling the live calls of that device with silence for the time lost
(so a recording keeps its timeline), and reopening with a backoff. Each change
of state is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import sounddevice as sd

from hindsight.config import AudioConfig, DeviceConfig
from hindsight.daemon.sources import Deliver, Gap
from hindsight.errors import SourceError

log = logging.getLogger(__name__)

STALL_SECONDS = 1.0
# A fresh stream may take a while for its first block (an idle PulseAudio
# null sink renders in 2 s periods), so silence is judged only after one.
FIRST_BLOCK_SECONDS = 5.0
TICK_SECONDS = 0.1
RETRY_FIRST = 0.5
RETRY_MAX = 30.0


class Stream(Protocol):
    active: bool

    def start(self) -> None: ...

    def close(self, ignore_errors: bool = True) -> None: ...


StreamFactory = Callable[..., Stream]


def input_devices() -> list[dict[str, Any]]:
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise SourceError(f"PortAudio cannot list devices: {exc}") from exc
    return [dict(d) for d in devices if d["max_input_channels"] > 0]


def describe_input_devices() -> str:
    rows = [
        f"{d['index']:>3}  {d['name']}  ({d['max_input_channels']} in, "
        f"{d['default_samplerate']:.0f} Hz)"
        for d in input_devices()
    ]
    return "\n".join(rows) if rows else "(PortAudio sees no input device)"


def check_devices(devices: tuple[DeviceConfig, ...], samplerate: int) -> None:
    """Fail start-up, listing what PortAudio sees, when a device is unknown or cannot
    capture the configured channels at the configured rate."""
    problems = [p for p in (_device_problem(d, samplerate) for d in devices) if p]
    if problems:
        raise SourceError(
            "; ".join(problems) + f"\ninput devices PortAudio sees:\n{describe_input_devices()}"
        )


def _device_problem(device: DeviceConfig, samplerate: int) -> str | None:
    try:
        info = sd.query_devices(device.device, "input")
    except (ValueError, sd.PortAudioError) as exc:
        return f"device {device.name} ({device.device!r}): {exc}"
    if info["max_input_channels"] < device.channels:
        return (
            f"device {device.name} ({info['name']}) has {info['max_input_channels']} input "
            f"channels, the config opens {device.channels}"
        )
    try:
        sd.check_input_settings(
            device.device, channels=device.channels, dtype="int16", samplerate=samplerate
        )
    except (ValueError, sd.PortAudioError) as exc:
        return f"device {device.name} ({info['name']}) cannot capture at {samplerate} Hz: {exc}"
    return None


class DeviceSource:
    """One configured device: its stream, its state, and the thread that keeps it alive."""

    def __init__(
        self, audio: AudioConfig, device: DeviceConfig, factory: StreamFactory | None = None
    ) -> None:
        self.name = device.name
        self.config = device
        self.samplerate = audio.samplerate
        self.blocksize = audio.blocksize
        self._factory: StreamFactory = factory or sd.InputStream
        self._stream: Stream | None = None
        self._deliver: Deliver | None = None
        self._on_gap: Gap | None = None
        self._state = "stopped"
        self.last_block = 0.0
        self._opened_at = 0.0
        self._lost_since = 0.0
        self._gap_filled = 0
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def state(self) -> str:
        return self._state

    def start(self, deliver: Deliver, on_gap: Gap) -> None:
        self._deliver, self._on_gap = deliver, on_gap
        self._stop.clear()
        if not self._open():
            self._lost(time.monotonic(), "could not be opened")
        self._thread = threading.Thread(
            target=self._supervise, name=f"capture-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()
        self._state = "stopped"

    def _callback(self, indata: np.ndarray[Any, Any], frames: int, when: Any, status: Any) -> None:
        self.last_block = time.monotonic()
        assert self._deliver is not None
        self._deliver(indata, bool(status))

    def _open(self) -> bool:
        try:
            stream = self._factory(
                device=self.config.device,
                channels=self.config.channels,
                samplerate=self.samplerate,
                blocksize=self.blocksize,
                dtype="int16",
                callback=self._callback,
            )
            stream.start()
        except (sd.PortAudioError, ValueError, OSError) as exc:
            log.debug("device %s: open failed: %s", self.name, exc)
            return False
        self._stream = stream
        self._opened_at = time.monotonic()
        self.last_block = 0.0
        self._state = "running"
        return True

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close(ignore_errors=True)
            except (sd.PortAudioError, OSError) as exc:
                log.debug("device %s: close failed: %s", self.name, exc)

    def _supervise(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        """One supervisor step: notice a failure, account for lost time, retry when due."""
        if self._state == "running":
            stream = self._stream
            since = self.last_block or self._opened_at
            limit = STALL_SECONDS if self.last_block else FIRST_BLOCK_SECONDS
            if stream is None or not stream.active:
                self._lost(now, "its stream stopped")
            elif now - since > limit:
                self._lost(now, f"no audio for {now - since:.1f} s")
        if self._state == "lost":
            self._fill_gap(now)
            if now >= self._retry_at:
                self._retry(now)

    def _lost(self, now: float, why: str) -> None:
        self._close()
        self._state = "lost"
        self._lost_since = min(now, self.last_block or self._opened_at or now)
        self._gap_filled = 0
        self._backoff = RETRY_FIRST
        self._retry_at = now + self._backoff
        log.warning("device %s lost: %s; live calls get silence until it returns", self.name, why)

    def _fill_gap(self, now: float) -> None:
        due = int((now - self._lost_since) * self.samplerate) - self._gap_filled
        if due > 0:
            assert self._on_gap is not None
            self._on_gap(due)
            self._gap_filled += due

    def _retry(self, now: float) -> None:
        if self._open():
            seconds = self._gap_filled / self.samplerate
            log.warning("device %s is back after %.1f s without audio", self.name, seconds)
            return
        self._backoff = min(self._backoff * 2, RETRY_MAX)
        self._retry_at = now + self._backoff
