"""DeviceSource's supervision, driven by a fake stream that pushes blocks into the real callback.

The real PortAudio path is tested through PulseAudio in test_pulse_capture.py;
here the fake lets each fault happen at an exact moment.
"""

from __future__ import annotations

import functools
import logging
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import sounddevice as sd

from hindsight.config import Config, parse_config
from hindsight.daemon import capture
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import CallTable
from hindsight.daemon.capture import DeviceSource
from hindsight.errors import SourceError


class FakeStream:
    """Stands in for sd.InputStream: the test calls ``push`` where PortAudio would call back."""

    opened: ClassVar[list[FakeStream]] = []
    fail_opens: ClassVar[int] = 0

    def __init__(self, callback: Any, channels: int, blocksize: int, **kwargs: Any) -> None:
        if FakeStream.fail_opens:
            FakeStream.fail_opens -= 1
            raise sd.PortAudioError("Device unavailable")
        self.callback = callback
        self.channels = channels
        self.blocksize = blocksize
        self.active = False
        self.closed = False
        FakeStream.opened.append(self)

    def start(self) -> None:
        self.active = True

    def close(self, ignore_errors: bool = True) -> None:
        self.active = False
        self.closed = True

    def push(self, status: int = 0) -> None:
        block = np.ones((self.blocksize, self.channels), dtype=np.int16)
        self.callback(block, self.blocksize, None, status)


@pytest.fixture(autouse=True)
def fresh_fake() -> None:
    FakeStream.opened = []
    FakeStream.fail_opens = 0


def config() -> Config:
    data = {
        "audio": {"samplerate": 16000, "blocksize": 160},
        "devices": [{"name": "headset", "device": "pulse", "channels": 2}],
        "lines": [{"name": "desk-01", "channels": [1, 2]}],
    }
    return parse_config(data, Path("/tmp"))


class Sink:
    def __init__(self) -> None:
        self.blocks = 0
        self.flagged = 0
        self.gap = 0

    def deliver(self, block: Any, flagged: bool) -> None:
        self.blocks += 1
        self.flagged += flagged

    def on_gap(self, frames: int) -> None:
        self.gap += frames


def source() -> tuple[DeviceSource, Sink]:
    cfg = config()
    src = DeviceSource(cfg.audio, cfg.audio.devices[0], factory=FakeStream)
    sink = Sink()
    src.start(sink.deliver, sink.on_gap)
    return src, sink


def test_blocks_and_their_status_flags_reach_the_sink() -> None:
    src, sink = source()
    try:
        stream = FakeStream.opened[0]
        stream.push()
        stream.push(status=2)
        assert (sink.blocks, sink.flagged) == (2, 1)
        assert src.state() == "running"
    finally:
        src.stop()
    assert stream.closed and src.state() == "stopped"


def test_a_stalled_device_is_lost_once_filled_with_silence_and_reopened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "hindsight.daemon.capture")
    src, sink = source()
    src.stop()  # drive the supervisor by hand with exact times
    src._state = "running"
    src._stream = FakeStream.opened[0]
    FakeStream.opened[0].active = True
    src.last_block = 100.0
    FakeStream.fail_opens = 2
    src.check(100.5)
    assert src.state() == "running"
    src.check(101.5)  # 1.5 s without a block
    assert src.state() == "lost" and FakeStream.opened[0].closed
    src.check(102.0)  # first retry fails
    src.check(103.0)  # second retry fails; backoff grows
    assert src.state() == "lost"
    assert sink.gap == int(3.0 * 16000)
    src.check(104.5)  # backoff: the next try is due at 105.0
    assert src.state() == "lost" and len(FakeStream.opened) == 1
    src.check(105.0)  # third retry opens
    assert src.state() == "running" and len(FakeStream.opened) == 2
    assert sink.gap == int(5.0 * 16000)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("lost" in m for m in messages) == 1
    assert sum("is back" in m for m in messages) == 1


def test_a_stream_that_stops_is_noticed_at_once() -> None:
    src, _ = source()
    src.stop()
    src._state = "running"
    src._stream = FakeStream.opened[0]
    src.last_block = 50.0
    FakeStream.opened[0].active = False
    src.check(50.1)
    assert src.state() == "lost"


def test_a_device_missing_at_start_up_is_retried_not_fatal() -> None:
    FakeStream.fail_opens = 1000  # still lost however late the assertion runs
    src, _ = source()
    try:
        assert src.state() == "lost"
    finally:
        src.stop()


def test_an_unknown_device_is_an_error_that_lists_the_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def query(device: object = None, kind: object = None) -> Any:
        if device is None:
            return [
                {
                    "index": 0,
                    "name": "Scarlett 18i20",
                    "max_input_channels": 18,
                    "default_samplerate": 48000.0,
                }
            ]
        raise ValueError(f"No input device matching {device!r}")

    monkeypatch.setattr(sd, "query_devices", query)
    with pytest.raises(SourceError) as caught:
        capture.check_devices(config().audio.devices, 16000)
    assert "No input device matching 'pulse'" in str(caught.value)
    assert "Scarlett 18i20" in str(caught.value)


def test_a_fresh_stream_gets_time_for_its_first_block() -> None:
    src, _ = source()
    src.stop()
    src._state = "running"
    src._stream = FakeStream.opened[0]
    FakeStream.opened[0].active = True
    src._opened_at, src.last_block = 10.0, 0.0
    src.check(10.0 + capture.STALL_SECONDS + 1.0)
    assert src.state() == "running"
    src.check(10.0 + capture.FIRST_BLOCK_SECONDS + 0.1)
    assert src.state() == "lost"


def test_a_device_that_cannot_take_the_rate_stops_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = {
        "index": 3,
        "name": "USB Headset",
        "max_input_channels": 2,
        "default_samplerate": 48000.0,
    }

    def refuse(*args: object, **kwargs: object) -> None:
        raise sd.PortAudioError("Invalid sample rate")

    monkeypatch.setattr(
        sd, "query_devices", lambda device=None, kind=None: info if device else [info]
    )
    monkeypatch.setattr(sd, "check_input_settings", refuse)
    with pytest.raises(SourceError) as caught:
        capture.check_devices(config().audio.devices, 16000)
    assert "cannot capture at 16000 Hz" in str(caught.value)
    assert "USB Headset" in str(caught.value)


def two_device_table_and_sources() -> tuple[CallTable, list[DeviceSource]]:
    cfg = parse_config(
        {
            "audio": {"samplerate": 16000, "blocksize": 160},
            "buffer": {"memory_mb": 4},
            "devices": [
                {"name": "interface", "device": "hw-a", "channels": 4},
                {"name": "headset", "device": "hw-b", "channels": 2},
            ],
            "lines": [
                {"name": "desk-01", "channels": [1, 2], "device": "interface"},
                {"name": "desk-02", "channels": [4, 3], "device": "interface"},
                {"name": "desk-03", "channels": [1, 2], "device": "headset"},
            ],
        },
        Path("/tmp"),
    )
    table = CallTable(cfg, Pool(cfg.buffer.memory_mb), draw=lambda _: (None, False))
    sources = [DeviceSource(cfg.audio, d, factory=FakeStream) for d in cfg.audio.devices]
    for src in sources:
        src.start(
            functools.partial(table.feed, src.name), functools.partial(table.fill_silence, src.name)
        )
        src.stop()  # the test drives the supervisor by hand
        src._state, src._stream = "running", FakeStream.opened[-1]
        FakeStream.opened[-1].active = True
    return table, sources


def test_a_failing_device_leaves_the_other_devices_lines_recording() -> None:
    table, (interface, headset) = two_device_table_and_sources()
    calls = [table.start(line, None, None) for line in ("desk-01", "desk-02", "desk-03")]
    interface_stream, headset_stream = FakeStream.opened
    interface.last_block = headset.last_block = 100.0
    headset_stream.active = False  # the headset is unplugged, and stays away
    FakeStream.fail_opens = 1000
    headset.check(100.05)
    interface.check(100.05)
    for _ in range(50):
        interface_stream.push()
    headset.check(100.55)
    assert (interface.state(), headset.state()) == ("running", "lost")
    assert [c.buffer.total_frames for c in calls[:2]] == [50 * 160] * 2
    assert [c.gap_frames for c in calls[:2]] == [0, 0]
    assert abs(calls[2].gap_frames - 0.55 * 16000) <= 1


def test_the_callback_neither_logs_nor_allocates_audio_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, _ = two_device_table_and_sources()
    for line in ("desk-01", "desk-02"):
        table.start(line, None, None)
    stream = FakeStream.opened[0]
    # Large blocks (0.5 s), so that any copy of a line's audio (32 KB) would stand out
    # from the few small view objects that slicing makes.
    block = np.ones((8000, 4), dtype=np.int16)
    caplog.set_level(logging.DEBUG)
    tracemalloc.start()
    try:
        peaks = []
        for _ in range(20):  # 10 s of audio: several new chunks per call
            tracemalloc.reset_peak()
            base, _ = tracemalloc.get_traced_memory()
            stream.callback(block, 8000, None, 0)
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    assert max(peaks) < 8 * 1024, peaks
    assert caplog.records == []
