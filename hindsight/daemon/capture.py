"""PortAudio capture through python-sounddevice: the one place that wraps its errors.

The stream callback is the audio path. It does what the model in
python-sounddevice's ``rec_unlimited.py`` does and no more: hand the block
on (``CallTable.feed`` copies it with plain slices into preallocated chunks)
and note the time. It never logs, never allocates audio memory, and never
waits on a lock held across I/O, because PortAudio calls it on a real-time
thread: any stall there overflows the device's buffer and loses audio on
every line of that device.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import sounddevice as sd

from hindsight.config import AudioConfig, DeviceConfig
from hindsight.daemon.sources import Deliver
from hindsight.errors import SourceError

log = logging.getLogger(__name__)


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


class DeviceSource:
    """One PortAudio input stream for one configured device."""

    def __init__(self, audio: AudioConfig, device: DeviceConfig) -> None:
        self.name = device.name
        self.config = device
        self.samplerate = audio.samplerate
        self.blocksize = audio.blocksize
        self._stream: sd.InputStream | None = None
        self._deliver: Deliver | None = None
        self.last_block = 0.0

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        try:
            self._stream = sd.InputStream(
                device=self.config.device,
                channels=self.config.channels,
                samplerate=self.samplerate,
                blocksize=self.blocksize,
                dtype="int16",
                callback=self._callback,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise SourceError(
                f"cannot open device {self.name} ({self.config.device!r}): {exc}\n"
                f"input devices PortAudio sees:\n{describe_input_devices()}"
            ) from exc

    def _callback(self, indata: np.ndarray[Any, Any], frames: int, when: Any, status: Any) -> None:
        self.last_block = time.monotonic()
        assert self._deliver is not None
        self._deliver(indata, bool(status))

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close(ignore_errors=True)
            self._stream = None

    def state(self) -> str:
        return "running" if self._stream is not None and self._stream.active else "stopped"
