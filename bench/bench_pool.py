"""What does a dry chunk pool cost the audio thread, and a status request the table lock?

Starts a call on every stereo line (one in ten sampled, so kept), 128 lines to a
device (a device has at most 256 channels), with a pool of two chunks per line,
and feeds every device 20 ms blocks until every line has needed a chunk from
another call a few times. All lines start together, so every line needs its
next chunk in the same block period: the worst case of a dry pool. The devices'
callbacks share the table lock, so a period costs the sum of its callbacks.
Then asks for the status of all lines, quiet and with a busy thread competing
for the GIL. The baseline, measured in the same run, is the table as it was: a
scan of every live call per stolen chunk, and status rows built under the lock.
Run: ``.venv/bin/python bench/bench_pool.py [--quick]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from hindsight.config import Config, LineConfig, parse_config
from hindsight.daemon.buffer import CHUNK_SAMPLES, Int16Array, Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.replies import LineStatus

RATE = 16000
BLOCK = 320  # 20 ms, the contract's default
PERIOD = BLOCK / RATE
CHUNKS_PER_LINE = 2
LINES_PER_DEVICE = 128


class OldTable(CallTable):
    """The baseline: the table as it was before the ranking and the status snapshot."""

    def _append(
        self, slot: int, call: Call, block: Int16Array, columns: slice | tuple[int, ...]
    ) -> None:
        written = call.buffer.write(block, columns)
        while written < len(block):
            if not self._relieve(slot, call):
                self.dropped_frames += len(block) - written
                call.buffer.skip(len(block) - written)
                return
            written += call.buffer.write(block[written:], columns)

    def _relieve(self, slot: int, requester: Call) -> bool:
        candidates = [c for c in self._slots if c is not None and c.buffer.chunks >= 2]
        if not candidates:
            if requester.buffer.chunks:
                requester.buffer.roll_own()
                self.pool_steals += 1
                return True
            return False
        victim = max(candidates, key=lambda c: (not c.kept, c.buffer.held_frames))
        self.pool_steals += 1
        if victim is requester:
            requester.buffer.roll_own()
            return True
        index = victim.buffer.surrender_oldest()
        assert index is not None
        requester.buffer.adopt(index)
        return True

    def status(self) -> list[LineStatus]:
        with self.lock:
            return [old_line_status(line, self._slots[i]) for i, line in enumerate(self._lines)]


def old_line_status(line: LineConfig, call: Call | None) -> LineStatus:
    if call is None:
        return LineStatus(line.name, None, 0.0, False, line.device, 0, 0.0)
    rate = call.samplerate
    return LineStatus(
        line.name,
        call.call_id,
        round(call.seconds(), 3),
        call.marked,
        line.device,
        call.status_flags,
        round(call.gap_frames / rate, 3),
    )


class Timed(CallTable):
    """Adds up the time spent choosing a victim and moving its chunk."""

    steal_seconds = 0.0

    def _relieve(self, slot: int, requester: Call) -> bool:
        start = time.perf_counter()
        try:
            return super()._relieve(slot, requester)
        finally:
            self.steal_seconds += time.perf_counter() - start


class TimedOld(Timed, OldTable):
    pass


class HoldTimer:
    """A lock that records how long each hold lasted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = 0.0
        self.holds: list[float] = []

    def __enter__(self) -> None:
        self._lock.acquire()
        self._since = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.holds.append(time.perf_counter() - self._since)
        self._lock.release()


@dataclass(frozen=True)
class Figures:
    steals: int
    per_steal: float
    worst_callback: float
    worst_period: float
    steady_period: float
    status_quiet: list[float]
    status_busy: list[float]


def config_for(lines: int) -> Config:
    memory_mb = lines * CHUNKS_PER_LINE * CHUNK_SAMPLES * 2 // 2**20
    devices = -(-lines // LINES_PER_DEVICE)
    return parse_config(
        {
            "audio": {"samplerate": RATE, "blocksize": BLOCK},
            "devices": [
                {"name": f"card-{d}", "channels": 2 * min(LINES_PER_DEVICE, lines)}
                for d in range(devices)
            ],
            "buffer": {"memory_mb": max(1, memory_mb)},
            "lines": [line_entry(i) for i in range(lines)],
        },
        Path("."),
    )


def line_entry(i: int) -> dict[str, object]:
    first = 2 * (i % LINES_PER_DEVICE) + 1
    device = f"card-{i // LINES_PER_DEVICE}"
    return {"name": f"desk-{i:04d}", "device": device, "channels": [first, first + 1]}


def live_table(kind: type[Timed], config: Config) -> Timed:
    sampled = itertools.cycle([True] + [False] * 9)
    table = kind(config, Pool(config.buffer.memory_mb), draw=lambda _: (None, next(sampled)))
    for line in config.lines:
        table.start(line.name, None, None)
    return table


def feed_until_dry(table: Timed, block: Int16Array, rounds: int) -> tuple[float, float, float]:
    """Feed until every line needed ``rounds`` chunks from a dry pool.

    Returns the worst callback, the worst period and the median period without a steal.
    """
    devices = [device.name for device in table.config.audio.devices]
    blocks = (CHUNKS_PER_LINE + rounds) * (CHUNK_SAMPLES // 2) // BLOCK
    worst = 0.0
    periods: list[tuple[float, int]] = []
    for _ in range(blocks):
        steals, period = table.pool_steals, 0.0
        for device in devices:
            start = time.perf_counter()
            table.feed(device, block, False)
            took = time.perf_counter() - start
            worst, period = max(worst, took), period + took
        periods.append((period, table.pool_steals - steals))
    steady = [t for t, stole in periods if not stole]
    return worst, max(t for t, _ in periods), statistics.median(steady)


def status_holds(table: CallTable, repeats: int, busy: bool) -> list[float]:
    """How long each of ``repeats`` status requests held the lock.

    ``busy``: another thread wants the GIL meanwhile; every 5 ms (the switch
    interval) it takes it, and a request that is holding the lock then holds it
    until the GIL comes back.
    """
    timer = HoldTimer()
    table.lock = cast(threading.Lock, timer)  # the table only ever uses ``with self.lock``
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(stop,), daemon=True)
    if busy:
        spinner.start()
    for _ in range(repeats):
        table.status()
    stop.set()
    if busy:
        spinner.join()
    return timer.holds


def spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def conserved(table: CallTable, config: Config) -> bool:
    held = 0
    for line in config.lines:
        call = table.live_call(line.name)
        held += call.buffer.chunks if call is not None else 0
    return table.pool.free + held == table.pool.size


def measure(kind: type[Timed], lines: int, rounds: int, repeats: int) -> Figures:
    config = config_for(lines)
    table = live_table(kind, config)
    rng = np.random.default_rng(1)
    width = 2 * min(LINES_PER_DEVICE, lines)
    block = rng.integers(-3000, 3000, size=(BLOCK, width), dtype=np.int16)
    worst, worst_period, steady = feed_until_dry(table, block, rounds)
    assert table.pool.free == 0 and table.dropped_frames == 0
    assert conserved(table, config), "chunks went missing"
    quiet = status_holds(table, repeats, busy=False)
    busy = status_holds(table, repeats, busy=True)
    per_steal = table.steal_seconds / max(1, table.pool_steals)
    return Figures(table.pool_steals, per_steal, worst, worst_period, steady, quiet, busy)


def report(lines: int, rounds: int, old: Figures, new: Figures) -> None:
    assert old.steals == new.steals, "both tables must do the same work"
    devices = -(-lines // LINES_PER_DEVICE)
    print(
        f"{lines} stereo lines on {devices} device(s), dry pool: "
        f"{old.steals} chunks taken from calls in {rounds} round(s)"
    )
    row("per steal", old.per_steal, new.per_steal, "us", 1e6)
    row("worst callback", old.worst_callback, new.worst_callback, "ms", 1e3)
    row("worst period", old.worst_period, new.worst_period, "ms", 1e3)
    row("steady period", old.steady_period, new.steady_period, "ms", 1e3)
    print(f"  (a period is {PERIOD * 1e3:.0f} ms: all devices' callbacks for one block)")
    row("status lock median", median(old.status_quiet), median(new.status_quiet), "us", 1e6)
    row("status lock max", max(old.status_quiet), max(new.status_quiet), "us", 1e6)
    row("  busy, median", median(old.status_busy), median(new.status_busy), "us", 1e6)
    row("  busy, max", max(old.status_busy), max(new.status_busy), "us", 1e6)
    print(
        f"  {'  busy, over 1 ms':22}old {over(old.status_busy, 1e-3):9.0%}      "
        f"new {over(new.status_busy, 1e-3):9.0%}      of status requests"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def over(values: list[float], limit: float) -> float:
    return sum(v > limit for v in values) / len(values)


def row(name: str, old: float, new: float, unit: str, scale: float) -> None:
    print(
        f"  {name:22}old {old * scale:9.1f} {unit}   new {new * scale:9.1f} {unit}"
        f"   ratio {old / new:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", default="256,1024", help="comma-separated line counts")
    parser.add_argument("--rounds", type=int, default=3, help="chunks each line takes when dry")
    parser.add_argument("--repeats", type=int, default=200, help="status requests to time")
    parser.add_argument("--quick", action="store_true", help="small and short, for the tests")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.rounds, args.repeats = "32,160", 1, 20
    counts = [int(n) for n in args.lines.split(",")]
    if any(n % 8 for n in counts):
        parser.error("line counts must be multiples of 8: the pool is whole megabytes")
    for lines in counts:
        old = measure(TimedOld, lines, args.rounds, args.repeats)
        new = measure(Timed, lines, args.rounds, args.repeats)
        report(lines, args.rounds, old, new)


if __name__ == "__main__":
    main()
