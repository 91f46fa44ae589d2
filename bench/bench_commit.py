"""How late does the audio path run while a long kept call is committed?

Builds the daemon's real parts in this process, as ``Daemon._run`` does: the
config, a commit log in a temporary state folder, the shared chunk pool
(``PoolMemory``), the call table, the keeper with the real worker process,
and synthetic loop sources that feed N live stereo lines in real time (a call
live on every line, so each block is really copied into the pool). Every
block a source delivers is timed into arrays made once. A long stereo call
(2 h by default), on a device of its own that no source drives, is filled in
at once, marked and ended; then, while the live lines run:

- (a) worker process: ``Keeper.submit``, until its ``call_committed`` is in the
  log: what the daemon does now;
- (b) in-process thread: ``Store.keep`` in a thread of this process, as the
  old committer thread did;
- (c) idle: the same live lines, no commit, for as long as the longer of the two.

Per scenario it prints the wall time, the blocks measured and, in ms, the
worst and p99 lateness of a block: its interval since the previous block
minus the period (a source paces against an absolute clock, so a late block
is followed by a short one); the same against the schedule t0 + n * period
(t0 taken as the earliest a block ever came, so this is a lower bound by a
wake-up's latency); and the longest time a block spent in the callback. Then
the ratios to idle. Both recordings are checked to be the whole call and the
same bytes. Run: ``.venv/bin/python bench/bench_commit.py [--lines 64]
[--hours 2] [--devices 1] [--quick]``; the default run takes about a minute on
2 cores and 2 GB of memory (the pool is sized for the long call plus 300 s of
every live line).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from hindsight.commitlog import CommitLog, read_entries
from hindsight.config import Config, parse_config
from hindsight.daemon.buffer import CHUNK_SAMPLES, Int16Array, Pool, chunk_count
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.keeper import Keeper, process_spawner
from hindsight.daemon.kept import describe
from hindsight.daemon.memory import PoolMemory
from hindsight.daemon.sources import Deliver, LoopSource, loop_source, synthetic_table
from hindsight.daemon.store import Store
from hindsight.errors import ConfigError, HindsightError
from hindsight.record import Committed

RATE = 16000
BLOCK = 320  # 20 ms, the contract's default
PERIOD = BLOCK / RATE
STEREO_BYTES_PER_SECOND = RATE * 2 * 2
LONG = "long"  # the long call's device and line: no source drives it
LIVE_SECONDS = 300.0  # audio each live call may gather in one scenario before the pool runs dry
RECORD_SECONDS = 4 * 3600.0  # blocks per device the timing arrays hold
FILL_SECONDS = 10.0  # audio per feed while the long call is filled in at once
WARM_UP = 1.0  # seconds the live calls run before a measurement
POLL = 0.02  # how often the main thread looks whether a scenario is over
WORKER_START = 20.0
SETTLE_TIMEOUT = 600.0

FloatArray = npt.NDArray[np.float64]
Done = Callable[[], bool]


class BenchError(Exception):
    """The bench could not measure: a commit failed, or calls did not settle."""


def make_config(lines: int, devices: int, hours: float, root: Path) -> Config:
    """Lines dealt round-robin over ``devices`` floor devices, plus the long call's own."""
    floors = [f"floor-{k}" for k in range(devices)]
    line_entries: list[dict[str, Any]] = []
    for i in range(lines):
        first = 2 * (i // devices) + 1
        line = {
            "name": f"desk-{i:02d}",
            "device": floors[i % devices],
            "channels": [first, first + 1],
        }
        line_entries.append(line)
    device_entries = [
        {"name": name, "device": name, "channels": 2 * len(range(k, lines, devices))}
        for k, name in enumerate(floors)
    ]
    device_entries.append({"name": LONG, "device": LONG, "channels": 2})
    line_entries.append({"name": LONG, "device": LONG, "channels": [1, 2]})
    seconds = hours * 3600 + 60  # the long call never rolls
    data = {
        "daemon": {"state_dir": str(root / "state"), "control": f"ipc://{root}/control.sock"},
        "audio": {"source": "synthetic", "samplerate": RATE, "blocksize": BLOCK},
        "buffer": {"max_call_seconds": seconds, "memory_mb": memory_mb(lines, seconds)},
        "sampling": {"one_in": 0},  # only the mark keeps a call
        "devices": device_entries,
        "lines": line_entries,
    }
    return parse_config(data, root)


def memory_mb(lines: int, long_seconds: float) -> int:
    """The long call whole, and every live line for ``LIVE_SECONDS``, each with spare chunks."""
    spare = 2 * CHUNK_SAMPLES * 2
    total = long_seconds * STEREO_BYTES_PER_SECOND + spare
    total += lines * (LIVE_SECONDS * STEREO_BYTES_PER_SECOND + spare)
    return math.ceil(total / 2**20)


class Clocks:
    """When each block arrived in the callback and when it left, per device, in arrays made once."""

    def __init__(self, devices: int, capacity: int) -> None:
        self.arrived: FloatArray = np.zeros((devices, capacity))
        self.left: FloatArray = np.zeros((devices, capacity))
        self.counts = [0] * devices  # blocks delivered so far, timed or not

    def wrap(self, device: int, deliver: Deliver) -> Deliver:
        arrived, left, counts = self.arrived[device], self.left[device], self.counts
        capacity = len(arrived)

        def timed(block: Int16Array, flagged: bool) -> None:
            n = counts[device]
            if n < capacity:
                arrived[n] = time.monotonic()
                deliver(block, flagged)
                left[n] = time.monotonic()
            else:
                deliver(block, flagged)
            counts[device] = n + 1

        return timed

    def mark(self) -> tuple[int, ...]:
        return tuple(self.counts)

    def origins(self) -> FloatArray:
        """Each device's t0: the earliest any timed block came against t0 + n * period."""
        found = np.zeros(len(self.counts))
        for d, count in enumerate(self.counts):
            n = min(count, self.arrived.shape[1])
            found[d] = np.min(self.arrived[d, :n] - np.arange(1, n + 1) * PERIOD)
        return found


@dataclass(frozen=True)
class Window:
    label: str
    seconds: float
    starts: tuple[int, ...]
    ends: tuple[int, ...]


@dataclass(frozen=True)
class Figures:
    """One scenario's lateness, in ms."""

    label: str
    seconds: float
    blocks: int
    worst: float
    p99: float
    late_worst: float
    late_p99: float
    callback: float


def figures(clocks: Clocks, window: Window, origins: FloatArray) -> Figures:
    excess, late, inside = [], [], []
    capacity = clocks.arrived.shape[1]
    for d, (start, end) in enumerate(zip(window.starts, window.ends, strict=True)):
        end = min(end, capacity)
        if end <= start:
            continue
        arrived = clocks.arrived[d]
        excess.append(np.diff(arrived[max(start - 1, 0) : end]) - PERIOD)
        late.append(arrived[start:end] - np.arange(start + 1, end + 1) * PERIOD - origins[d])
        inside.append(clocks.left[d, start:end] - arrived[start:end])
    if not late:
        raise BenchError(f"{window.label}: no block was timed")
    gaps, delays = np.concatenate(excess) * 1e3, np.concatenate(late) * 1e3
    return Figures(
        window.label,
        window.seconds,
        sum(len(x) for x in late),
        float(gaps.max()),
        float(np.percentile(gaps, 99)),
        float(delays.max()),
        float(np.percentile(delays, 99)),
        float(np.concatenate(inside).max() * 1e3),
    )


class Bench:
    """The daemon's parts, built and started as ``Daemon._run`` and ``Daemon._start`` do."""

    def __init__(self, config: Config, commit_log: CommitLog, hours: float) -> None:
        self.config = config
        self.log = commit_log
        self.frames = round(hours * 3600 * RATE)
        count = chunk_count(config.buffer.memory_mb)
        self.memory = PoolMemory.create(count * CHUNK_SAMPLES * 2)
        self.pool = Pool(config.buffer.memory_mb, data=self.memory.array(CHUNK_SAMPLES))
        self.table = CallTable(config, self.pool, known=commit_log.knows)
        spawn = process_spawner(self.memory, CHUNK_SAMPLES, config.daemon.state_dir)
        self.keeper = Keeper(
            self.table, commit_log, config, spawn, hang_seconds=config.worker.hang_seconds
        )
        floors = [device for device in config.audio.devices if device.name != LONG]
        self.sources: list[LoopSource] = [loop_source(config.audio, d) for d in floors]
        self.live = [line.name for line in config.lines if line.name != LONG]
        self.speech = synthetic_table(RATE, 2, FILL_SECONDS)
        self.clocks = Clocks(len(self.sources), round(RECORD_SECONDS / PERIOD))
        self.long_calls: list[str] = []

    def start(self) -> None:
        for index, source in enumerate(self.sources):
            feed = functools.partial(self.table.feed, source.name)
            source.start(
                self.clocks.wrap(index, feed),
                functools.partial(self.table.fill_silence, source.name),
            )
        self.keeper.start()
        if not self.keeper.wait_ready(WORKER_START):
            raise BenchError(f"the worker process did not start within {WORKER_START:g} s")

    def stop(self) -> None:
        for source in self.sources:
            source.stop()
        self.keeper.finish()
        self.keeper.wait(SETTLE_TIMEOUT)
        os.close(self.memory.fd)

    def worker_policy(self) -> str:
        pid = self.keeper.state().pid
        if pid is None:
            return "worker: restarting"
        policy = os.sched_getscheduler(pid)
        return f"worker pid {pid}, {'SCHED_IDLE' if policy == os.SCHED_IDLE else policy}"

    # -- the calls ----------------------------------------------------------

    def long_call(self) -> Call:
        """A marked, ended call of ``frames`` on its own line, filled in at once."""
        call = self.table.start(LONG, None, None)
        self.log.append("call_started", call_id=call.call_id, line=LONG, agent=None)
        purpose = self.config.marking.purpose
        self.log.append("call_marked", call_id=call.call_id, line=LONG, purpose=purpose)
        self.table.mark(LONG, purpose, None)
        for at in range(0, self.frames, len(self.speech)):
            self.table.feed(LONG, self.speech[: self.frames - at], False)
        self.long_calls.append(call.call_id)
        return self.table.end(LONG)

    def start_live(self) -> None:
        for name in self.live:
            call = self.table.start(name, None, None)
            self.log.append("call_started", call_id=call.call_id, line=name, agent=None)

    def end_live(self) -> None:
        for name in self.live:
            self.keeper.submit(self.table.end(name))

    def settle(self) -> None:
        """Wait until every call has its outcome and every chunk is back in the pool."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.log.open_calls or self.pool.free < self.pool.size:
            if time.monotonic() > deadline:
                raise BenchError(f"calls did not settle within {SETTLE_TIMEOUT:g} s")
            time.sleep(POLL)

    # -- the scenarios ------------------------------------------------------

    def measure(self, label: str, begin: Callable[[], Done]) -> Window:
        """Live calls on every line; time the blocks from ``begin`` until what it returns is
        true; end the live calls."""
        self.start_live()
        time.sleep(WARM_UP)
        starts, t0 = self.clocks.mark(), time.monotonic()
        done = begin()
        while not done():
            time.sleep(POLL)
        seconds, ends = time.monotonic() - t0, self.clocks.mark()
        self.end_live()
        return Window(label, seconds, starts, ends)

    def by_worker(self) -> Window:
        call = self.long_call()

        def begin() -> Done:
            self.keeper.submit(call)
            return lambda: call.call_id not in self.log.open_calls

        window = self.measure("(a) worker process", begin)
        self.settle()
        return window

    def in_thread(self) -> Window:
        call = self.long_call()
        results: list[Committed] = []

        def keep() -> None:
            store = Store(self.config.daemon.state_dir)
            results.append(
                store.keep(
                    describe(call, self.config), call.buffer.views(), call.buffer.kept_frames
                )
            )

        def begin() -> Done:
            thread = threading.Thread(target=keep, name="committer")
            thread.start()
            return lambda: not thread.is_alive()

        window = self.measure("(b) in-process thread", begin)
        if not results:
            raise BenchError("the in-process commit failed (its traceback is above)")
        # Its recording landed already: the worker finds it whole, the keeper logs it, and
        # the chunks are zeroed, as for any call.
        self.keeper.submit(call)
        self.settle()
        return window

    def idle(self, seconds: float) -> Window:
        def begin() -> Done:
            until = time.monotonic() + seconds
            return lambda: time.monotonic() >= until

        window = self.measure("(c) idle, no commit", begin)
        self.settle()
        return window

    def recordings(self) -> list[dict[str, Any]]:
        """The ``call_committed`` entries of the long calls, in the order they were made."""
        entries = {
            entry["call_id"]: entry
            for entry in read_entries(self.log.path)
            if entry["event"] == "call_committed"
        }
        missing = [call_id for call_id in self.long_calls if call_id not in entries]
        if missing:
            raise BenchError(f"no call_committed for {', '.join(missing)}")
        return [entries[call_id] for call_id in self.long_calls]


def report(args: argparse.Namespace, bench: Bench, rows: list[Figures]) -> None:
    pool = bench.pool
    print(
        f"audio path during the commit of a {args.hours:.2f} h stereo call, {args.lines} live "
        f"stereo lines on {args.devices} device(s), {RATE} Hz, blocks of {BLOCK} frames "
        f"({PERIOD * 1e3:.0f} ms)"
    )
    print(
        f"pool {pool.size * pool.chunk_samples * 2 >> 20} MiB ({pool.size} chunks, "
        f"{'locked' if bench.memory.locked else 'not locked'}); {bench.worker_policy()}"
    )
    print()
    print(
        f"{'scenario':<24}{'wall s':>8}{'blocks':>8}{'worst':>9}{'p99':>8}"
        f"{'sched worst':>13}{'sched p99':>11}{'callback':>10}"
    )
    for row in rows:
        print(
            f"{row.label:<24}{row.seconds:8.2f}{row.blocks:8d}{row.worst:9.2f}{row.p99:8.2f}"
            f"{row.late_worst:13.2f}{row.late_p99:11.2f}{row.callback:10.2f}"
        )
    print(
        "ms; worst, p99: a block's interval minus the period; sched: its delay past "
        "t0 + n * period;\ncallback: the longest a block spent in it; wall: submit to "
        "call_committed (a), the thread's run (b)"
    )
    print()
    idle = rows[-1]
    print(f"{'vs idle':<24}{'worst':>9}{'p99':>8}{'sched worst':>13}{'sched p99':>11}")
    for row in rows[:-1]:
        print(
            f"{row.label:<24}{ratio(row.worst, idle.worst):>9}{ratio(row.p99, idle.p99):>8}"
            f"{ratio(row.late_worst, idle.late_worst):>13}"
            f"{ratio(row.late_p99, idle.late_p99):>11}"
        )
    print()
    print(check_recordings(bench, args.hours))
    table = bench.table
    print(f"pool: {table.pool_steals} chunks stolen, {table.dropped_frames} frames dropped")


def ratio(value: float, idle: float) -> str:
    return f"{value / idle:.1f}x" if idle > 0 else "n/a"


def check_recordings(bench: Bench, hours: float) -> str:
    worker, thread = bench.recordings()
    for entry in (worker, thread):
        if abs(entry["seconds"] - hours * 3600) > 1e-3:
            raise BenchError(f"a recording holds {entry['seconds']} s, not {hours * 3600:g} s")
    size = (bench.config.daemon.state_dir / worker["path"]).stat().st_size
    same = "the same bytes" if worker["sha256"] == thread["sha256"] else "DIFFERENT bytes"
    return (
        f"recordings: {worker['seconds']:.3f} s each, FLAC of {size / 1e6:.1f} MB; "
        f"(a) and (b) wrote {same}"
    )


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp:
        config = make_config(args.lines, args.devices, args.hours, Path(tmp))
        with CommitLog.open(config.daemon.state_dir / "commit.log") as commit_log:
            bench = Bench(config, commit_log, args.hours)
            try:
                bench.start()
                windows = [bench.by_worker(), bench.in_thread()]
                windows.append(bench.idle(max(w.seconds for w in windows)))
                origins = bench.clocks.origins()
                rows = [figures(bench.clocks, window, origins) for window in windows]
                report(args, bench, rows)
            finally:
                bench.stop()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=64, help="live stereo lines")
    parser.add_argument("--hours", type=float, default=2.0, help="length of the committed call")
    parser.add_argument("--devices", type=int, default=1, help="floor devices, lines dealt over")
    parser.add_argument("--quick", action="store_true", help="8 lines, 0.05 h: a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.hours = 8, 0.05
    if not 1 <= args.devices <= args.lines:
        parser.error("--devices must be between 1 and --lines")
    if not 0 < args.hours <= 23:
        parser.error("--hours must be above 0 and at most 23")
    return args


def main() -> int:
    args = parse_args()
    try:
        run(args)
    except ConfigError as exc:
        print(f"bench_commit: {exc}", file=sys.stderr)
        return 2
    except (BenchError, HindsightError, OSError) as exc:
        print(f"bench_commit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
