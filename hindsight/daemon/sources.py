"""Audio sources: where blocks come from, all delivered through one callback shape.

A source calls ``deliver(block, flagged)`` with ``block`` an int16 array of
``(blocksize, channels)`` that is only valid during the call, and ``flagged``
true when the driver reported a problem with the block (an input overflow).
That callback is the audio path: see ``CallTable.feed``. A source whose device
fails calls ``on_gap(frames)`` for the audio it could not deliver, so that
live calls keep their timeline (``CallTable.fill_silence``).

- ``LoopSource`` plays a table of audio as live input, paced in real time
  against an absolute clock (block n is due at t0 + n * blocksize / rate), so
  it never drifts however late one wake-up is. The ``file`` source loops a
  WAV or FLAC; the ``synthetic`` source loops a generated, speech-like signal.
- ``DeviceSource`` (in ``capture``) opens a PortAudio input stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import soundfile as sf

from hindsight.config import AudioConfig, DeviceConfig
from hindsight.daemon.buffer import Int16Array
from hindsight.errors import SourceError

log = logging.getLogger(__name__)

Deliver = Callable[[Int16Array, bool], None]
Gap = Callable[[int], None]  # frames of audio a failed device did not deliver


class Source(Protocol):
    name: str

    def start(self, deliver: Deliver, on_gap: Gap) -> None: ...

    def stop(self) -> None: ...

    def state(self) -> str: ...


class LoopSource:
    """Loops ``table`` (frames x channels) as live input, one block per period."""

    def __init__(
        self,
        name: str,
        table: Int16Array,
        samplerate: int,
        blocksize: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(table) < blocksize:
            table = np.tile(table, (-(-blocksize // max(1, len(table))), 1))
        self.name = name
        self.table = np.ascontiguousarray(table, dtype=np.int16)
        self.samplerate = samplerate
        self.blocksize = blocksize
        self._block: Int16Array = np.zeros((blocksize, table.shape[1]), dtype=np.int16)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, deliver: Deliver, on_gap: Gap) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(deliver,), name=f"source-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def state(self) -> str:
        return "running" if self._thread is not None and self._thread.is_alive() else "stopped"

    def _run(self, deliver: Deliver) -> None:
        period = self.blocksize / self.samplerate
        t0 = self._clock()
        position = 0
        n = 0
        while not self._stop.is_set():
            n += 1
            delay = t0 + n * period - self._clock()
            if delay > 0 and self._stop.wait(delay):
                break
            position = self._fill(position)
            deliver(self._block, False)

    def _fill(self, position: int) -> int:
        """Copy the next block of the loop into the block buffer; return the next position."""
        filled = 0
        while filled < self.blocksize:
            n = min(self.blocksize - filled, len(self.table) - position)
            self._block[filled : filled + n] = self.table[position : position + n]
            filled += n
            position = (position + n) % len(self.table)
        return position


def read_loop_file(path: Path, samplerate: int, channels: int) -> Int16Array:
    """Load a WAV/FLAC to loop: its rate must match, it must have at least ``channels``."""
    try:
        data, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, OSError, RuntimeError) as exc:
        raise SourceError(f"cannot read audio file {path}: {exc}") from exc
    if rate != samplerate:
        raise SourceError(f"{path} is {rate} Hz but audio.samplerate is {samplerate}")
    if data.shape[1] < channels:
        raise SourceError(f"{path} has {data.shape[1]} channels, the device needs {channels}")
    if len(data) == 0:
        raise SourceError(f"{path} holds no audio")
    return np.ascontiguousarray(data[:, :channels])


def synthetic_table(samplerate: int, channels: int, seconds: float = 12.0) -> Int16Array:
    """A speech-like signal: voiced syllables with gliding pitch and pauses, per channel.

    Channel k speaks with its own pitch and rhythm, so that a stereo line
    sounds like two people taking turns, and channels can be told apart.
    """
    rng = np.random.default_rng(20261128)
    t = np.arange(int(samplerate * seconds)) / samplerate
    table = np.zeros((len(t), channels), dtype=np.int16)
    for k in range(channels):
        pitch = (110.0 + 35.0 * k) * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + k))
        phase = 2 * np.pi * np.cumsum(pitch) / samplerate
        voice = sum(np.sin(h * phase) / h for h in range(1, 8))
        syllables = np.clip(np.sin(2 * np.pi * (3.0 + 0.5 * k) * t), 0.0, None) ** 2
        turns = (np.sin(2 * np.pi * t / 6.0 + np.pi * k) > -0.2).astype(np.float64)
        noise = rng.normal(0.0, 0.01, len(t))
        table[:, k] = (8000.0 * (voice * syllables * turns + noise)).astype(np.int16)
    return table


def loop_source(audio: AudioConfig, device: DeviceConfig) -> LoopSource:
    if audio.source == "file":
        assert audio.file is not None
        table = read_loop_file(audio.file, audio.samplerate, device.channels)
    else:
        table = synthetic_table(audio.samplerate, device.channels)
    return LoopSource(device.name, table, audio.samplerate, audio.blocksize)
