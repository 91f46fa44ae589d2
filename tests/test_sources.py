from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hindsight.daemon.buffer import Int16Array
from hindsight.daemon.sources import LoopSource, read_loop_file, synthetic_table
from hindsight.errors import SourceError


def test_the_loop_wraps_around_without_a_gap_or_a_repeat() -> None:
    table = np.arange(10, dtype=np.int16).reshape(5, 2)
    source = LoopSource("t", table, samplerate=16000, blocksize=3)
    position = 0
    seen = []
    for _ in range(5):
        position = source._fill(position)
        seen.append(source._block[:, 0].copy())
    assert np.concatenate(seen).tolist() == [0, 2, 4, 6, 8] * 3


def test_a_running_loop_delivers_blocks_in_order(tmp_path: Path) -> None:
    table = np.arange(64, dtype=np.int16).reshape(64, 1)
    source = LoopSource("t", table, samplerate=8000, blocksize=16)
    got: list[Int16Array] = []
    done = threading.Event()

    def deliver(block: Int16Array, flagged: bool) -> None:
        got.append(block.copy())
        if len(got) == 8:
            done.set()

    source.start(deliver, lambda frames: None)
    try:
        assert done.wait(5)
    finally:
        source.stop()
    assert source.state() == "stopped"
    first = np.concatenate(got[:8])[:, 0]
    assert first.tolist() == list(range(64)) * 2


def test_the_synthetic_signal_is_audible_and_differs_per_channel() -> None:
    table = synthetic_table(16000, 4, seconds=2.0)
    assert table.shape == (32000, 4)
    rms = np.sqrt((table.astype(np.float64) ** 2).mean(axis=0))
    assert (rms > 500).all()
    corr = np.asarray(np.corrcoef(table.T.astype(np.float64)))
    assert (np.abs(corr[np.triu_indices(4, 1)]) < 0.5).all()


def test_a_loop_file_must_match_rate_and_channels(tmp_path: Path) -> None:
    path = tmp_path / "in.flac"
    sf.write(str(path), np.zeros((800, 2), dtype=np.int16), 8000, subtype="PCM_16")
    assert read_loop_file(path, 8000, 2).shape == (800, 2)
    assert read_loop_file(path, 8000, 1).shape == (800, 1)
    with pytest.raises(SourceError, match="8000 Hz"):
        read_loop_file(path, 16000, 2)
    with pytest.raises(SourceError, match="2 channels"):
        read_loop_file(path, 8000, 4)
    with pytest.raises(SourceError, match="cannot read"):
        read_loop_file(tmp_path / "missing.wav", 8000, 2)


class LateClock:
    """A clock whose every wait oversleeps by 4 ms, as a busy machine does."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.blocks = 0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds + 0.004
        return False

    def is_set(self) -> bool:
        return self.blocks >= 500


def test_pacing_follows_an_absolute_clock_and_never_drifts() -> None:
    clock = LateClock()
    source = LoopSource("t", np.zeros((320, 1), np.int16), 16000, 320, clock=clock)
    source._stop = clock  # type: ignore[assignment]

    def deliver(block: Int16Array, flagged: bool) -> None:
        clock.blocks += 1

    source._run(deliver)
    # 500 blocks of 20 ms are due by 10 s: oversleeping must not add up.
    assert abs((clock.now - 1000.0) - 500 * 0.020) < 0.02
