"""How much does the audio path cost, and how many lines can one core carry?

Drives the real PortAudio callback (``DeviceSource._callback`` into
``CallTable.feed``) with blocks for many live calls, as fast as it can, and
measures in the same run a baseline: the bare numpy slice copies the path
cannot do without. Prints the cost per block per line, the ratio to the
baseline, and the number of 16 kHz stereo lines one core could carry in real
time. Run: ``.venv/bin/python bench/bench_capture.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from hindsight.config import parse_config
from hindsight.daemon.buffer import Int16Array, Pool
from hindsight.daemon.calls import CallTable
from hindsight.daemon.capture import DeviceSource

RATE = 16000
BLOCK = 320  # 20 ms, the contract's default


class NoStream:
    """The bench calls the callback itself; no PortAudio stream is opened."""

    active = True

    def __init__(self, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self, ignore_errors: bool = True) -> None:
        pass


def setup(lines: int) -> tuple[DeviceSource, CallTable]:
    config = parse_config(
        {
            "audio": {"samplerate": RATE, "blocksize": BLOCK, "channels": 2 * lines},
            "buffer": {"memory_mb": 512},
            "lines": [
                {"name": f"desk-{i:02d}", "channels": [2 * i + 1, 2 * i + 2]} for i in range(lines)
            ],
        },
        Path("."),
    )
    table = CallTable(config, Pool(config.buffer.memory_mb), draw=lambda _: (None, False))
    for line in config.lines:
        table.start(line.name, None, None)
    source = DeviceSource(config.audio, config.audio.devices[0], factory=NoStream)
    source.start(lambda block, flagged: table.feed("default", block, flagged), lambda n: None)
    source.stop()  # no supervisor thread: the bench is the only caller
    source._deliver = lambda block, flagged: table.feed("default", block, flagged)
    return source, table


def time_path(source: DeviceSource, block: Int16Array, blocks: int) -> float:
    start = time.perf_counter()
    for _ in range(blocks):
        source._callback(block, BLOCK, None, 0)
    return time.perf_counter() - start


def time_baseline(block: Int16Array, lines: int, blocks: int) -> float:
    """Each line's two channels copied with a plain slice into a preallocated ring."""
    ring = np.zeros((lines, blocks * BLOCK, 2), dtype=np.int16)
    start = time.perf_counter()
    for n in range(blocks):
        at = n * BLOCK
        for i in range(lines):
            ring[i, at : at + BLOCK] = block[:, 2 * i : 2 * i + 2]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=16, help="stereo lines on one device")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per line to push")
    args = parser.parse_args()
    blocks = int(args.seconds * RATE / BLOCK)
    rng = np.random.default_rng(1)
    block = rng.integers(-3000, 3000, size=(BLOCK, 2 * args.lines), dtype=np.int16)
    source, table = setup(args.lines)
    path = time_path(source, block, blocks)
    base = time_baseline(block, args.lines, blocks)
    per_line_block = path / (blocks * args.lines)
    base_per = base / (blocks * args.lines)
    period = BLOCK / RATE
    print(
        f"{args.lines} stereo lines, {blocks} blocks of {BLOCK} frames ({args.seconds:.0f} s each)"
    )
    print(f"audio path   {per_line_block * 1e6:8.2f} us per block per line")
    print(f"baseline     {base_per * 1e6:8.2f} us per block per line (bare slice copy)")
    print(f"ratio        {per_line_block / base_per:8.1f} x baseline")
    print(f"real time    {period / (path / blocks):8.0f} x for {args.lines} lines")
    print(f"capacity     {period / per_line_block:8.0f} lines of 16 kHz stereo on one core")
    held = sum(s.seconds for s in table.status())
    assert abs(held - args.lines * blocks * period) < 1e-3 * held, "audio went missing"


if __name__ == "__main__":
    main()
