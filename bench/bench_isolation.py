"""Can an agent tell from the replies' timing whether a call was kept?

Starts the real daemon (``hindsightd``) on a synthetic signal with N stereo
lines and sampling off, so that only a ``mark`` keeps a call and the bench
knows which calls are kept. Every line runs calls back to back, all lines at
once: each call lasts a random 45-60 s, half of them (chosen at random) get a
``mark`` at a random moment, then ``end``; right after ``end``'s reply the same
client sends ``status``. It times both replies and compares kept calls with
wiped ones: median, p90, p99 and max; the ratio of the medians; a one-sided
Mann-Whitney U test (is a kept call's reply slower?); and how often the best
single latency threshold guesses kept/wiped right (50% means it cannot tell).
PASS when both p-values are at least 0.001. The commit log's count of
committed and wiped calls checks that the marked calls, and only those, were
kept; the daemon must exit 0 on SIGTERM.

``--ref COMMIT`` runs the same workload (same seed, same plan) first against
that commit's daemon, checked out in a temporary git worktree, as the
baseline measured in the same run. The workload takes about
``calls / lines * 53 s`` per daemon (12.5 minutes at the defaults).
Run: ``.venv/bin/python bench/bench_isolation.py [--quick] [--ref 03e0d95]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from scipy.stats import mannwhitneyu

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
LINE_BYTES_PER_SECOND = RATE * 2 * 2  # stereo int16
ALPHA = 0.001
REPLY_TIMEOUT = 10.0  # seconds; a reply this late is a failure, not a figure
SHUFFLES = 1000


class BenchError(Exception):
    """The bench could not measure: the daemon failed, refused or did not answer."""


@dataclass(frozen=True)
class PlannedCall:
    pause: float  # seconds idle on the line before the call starts
    seconds: float
    mark_at: float | None  # seconds into the call; None: not kept


@dataclass(frozen=True)
class Workload:
    lines: int
    min_seconds: float
    max_seconds: float
    per_line: tuple[tuple[PlannedCall, ...], ...]

    @property
    def calls(self) -> int:
        return sum(len(calls) for calls in self.per_line)

    @property
    def marked(self) -> int:
        return sum(c.mark_at is not None for calls in self.per_line for c in calls)


@dataclass(frozen=True)
class Daemon:
    """How to run one daemon: its label, its command (before ``--config``), cwd and env."""

    label: str
    argv: tuple[str, ...]
    cwd: Path | None = None
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Sample:
    kept: bool
    end: float  # seconds from sending ``end`` to its reply
    after: float  # the same for the ``status`` sent right after


@dataclass(frozen=True)
class Run:
    samples: tuple[Sample, ...]
    committed: int
    wiped: int
    exit_code: int


def plan(lines: int, calls: int, low: float, high: float, seed: int) -> Workload:
    """Exactly half the calls (rounded down) marked; lines take turns, so counts differ by one."""
    rng = random.Random(seed)
    kept = [i < calls // 2 for i in range(calls)]
    rng.shuffle(kept)
    per_line: list[list[PlannedCall]] = [[] for _ in range(lines)]
    for i, keep in enumerate(kept):
        seconds = rng.uniform(low, high)
        mark_at = rng.uniform(0.0, seconds) if keep else None
        per_line[i % lines].append(PlannedCall(rng.uniform(0.1, 1.0), seconds, mark_at))
    return Workload(lines, low, high, tuple(tuple(calls) for calls in per_line))


def config_text(work: Workload, endpoint: str) -> str:
    # The pool holds every line's longest call with room to spare: no call rolls.
    memory_mb = math.ceil(1.5 * work.lines * work.max_seconds * LINE_BYTES_PER_SECOND / 2**20)
    lines = "".join(
        f'\n[[lines]]\nname = "{line_name(i)}"\nchannels = [{2 * i + 1}, {2 * i + 2}]\n'
        for i in range(work.lines)
    )
    return f"""
[daemon]
state_dir = "state"
control = "{endpoint}"

[audio]
source = "synthetic"
channels = {2 * work.lines}
samplerate = {RATE}
blocksize = 320

[buffer]
max_call_seconds = {math.ceil(work.max_seconds) + 60}
memory_mb = {memory_mb + 16}

[sampling]
one_in = 0
{lines}"""


def line_name(i: int) -> str:
    return f"desk-{i + 1:02d}"


def request(sock: zmq.Socket[bytes], frame: bytes) -> tuple[float, dict[str, Any]]:
    """Send one request on a REQ socket; return the seconds until its reply, and the reply."""
    start = time.perf_counter()
    sock.send(frame)
    if not sock.poll(int(REPLY_TIMEOUT * 1000)):
        raise BenchError(f"no reply within {REPLY_TIMEOUT:.0f} s to {frame.decode()}")
    reply = sock.recv()
    took = time.perf_counter() - start
    answer: dict[str, Any] = json.loads(reply)
    if not answer.get("ok"):
        raise BenchError(f"{frame.decode()} refused: {answer}")
    return took, answer


def frame(op: str, line: str | None = None) -> bytes:
    return json.dumps({"op": op} if line is None else {"op": op, "line": line}).encode()


def run_line(
    ctx: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    line: str,
    calls: Sequence[PlannedCall],
    out: list[Sample],
    stop: threading.Event,
) -> None:
    """One agent's line: its calls back to back, until done or ``stop``.

    Requests are encoded before they are timed.
    """
    start, mark, end = frame("start", line), frame("mark", line), frame("end", line)
    status = frame("status")
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        for call in calls:
            if stop.wait(call.pause):
                return
            request(sock, start)
            began = time.monotonic()
            if call.mark_at is not None:
                if stop.wait(began + call.mark_at - time.monotonic()):
                    return
                request(sock, mark)
            if stop.wait(began + call.seconds - time.monotonic()):
                return
            took_end, _ = request(sock, end)
            took_after, _ = request(sock, status)
            out.append(Sample(call.mark_at is not None, took_end, took_after))
    finally:
        sock.close(linger=0)


def run_workload(endpoint: str, work: Workload) -> list[Sample]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    samples: list[Sample] = []
    errors: list[BaseException] = []
    stop = threading.Event()  # one line failed: the others stop too

    def agent(i: int) -> None:
        try:
            run_line(ctx, endpoint, line_name(i), work.per_line[i], samples, stop)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(work.lines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctx.term()
    if errors:
        raise errors[0]
    return samples


@contextmanager
def running(daemon: Daemon, config: Path, endpoint: str) -> Iterator[subprocess.Popen[bytes]]:
    stderr_path = config.parent / "daemon.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [*daemon.argv, "--config", str(config)],
            cwd=daemon.cwd or config.parent,
            env={**os.environ, **dict(daemon.env)},
            stdin=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_ready(proc, endpoint)
        yield proc
    except BaseException:
        tail = stderr_path.read_text(errors="replace")[-2000:]
        print(f"{daemon.label}: the daemon's log ends with:\n{tail}", file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes], endpoint: str) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the daemon exited {proc.returncode} at start-up")
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send(frame("ping"))
        answered = sock.poll(300)
        sock.close(linger=0)
        if answered:
            return
    raise BenchError("the daemon did not answer a ping within 30 s")


def measure(daemon: Daemon, work: Workload) -> Run:
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
        folder = Path(tmp)
        endpoint = f"ipc://{folder}/ctl.sock"
        config = folder / "hindsight.toml"
        config.write_text(config_text(work, endpoint))
        log = folder / "state" / "commit.log"
        with running(daemon, config, endpoint) as proc:
            samples = run_workload(endpoint, work)
            wait_outcomes(log, work.calls)
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=90.0)
            except subprocess.TimeoutExpired:
                raise BenchError("the daemon did not stop within 90 s of SIGTERM") from None
        committed, wiped = outcomes(log)
        if code != 0:
            raise BenchError(f"the daemon exited {code} on SIGTERM")
    return Run(tuple(samples), committed, wiped, code)


def wait_outcomes(log: Path, calls: int, timeout: float = 120.0) -> None:
    """Give kept calls time to be written before SIGTERM (a stopping daemon hurries)."""
    deadline = time.monotonic() + timeout
    while sum(outcomes(log)) < calls and time.monotonic() < deadline:
        time.sleep(0.5)


def outcomes(log: Path) -> tuple[int, int]:
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    return events.count("call_committed"), events.count("call_wiped")


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """``commit`` checked out in a temporary, detached worktree, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-isolation-ref-") as tmp:
        tree = Path(tmp) / "tree"
        git("worktree", "add", "--quiet", "--detach", str(tree), commit)
        try:
            yield tree
        finally:
            git("worktree", "remove", "--force", str(tree))


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def reference_daemon(commit: str, tree: Path) -> Daemon:
    """The old tree's package, run with this venv's python; checked to be the one imported."""
    env = (("PYTHONPATH", str(tree)),)
    probe = subprocess.run(
        [sys.executable, "-c", "import hindsight; print(hindsight.__file__)"],
        cwd=tree,
        env={**os.environ, **dict(env)},
        capture_output=True,
        text=True,
    )
    imported = Path(probe.stdout.strip()).resolve()
    if probe.returncode != 0 or not imported.is_relative_to(tree.resolve()):
        raise BenchError(f"python imports hindsight from {imported}, not from {tree}")
    label = f"baseline: {git('rev-parse', '--short', commit)}, imported from {imported.parent}"
    argv = (sys.executable, "-m", "hindsight.daemon.main")
    return Daemon(label, argv, cwd=tree, env=env)


def current_daemon() -> Daemon:
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "hindsight")
    state = f"HEAD {head}" + (", with uncommitted changes in hindsight/" if dirty else "")
    hindsightd = Path(sys.executable).parent / "hindsightd"
    return Daemon(f"under test: hindsightd from {ROOT} ({state})", (str(hindsightd),))


def best_accuracy(kept: np.ndarray[Any, np.dtype[np.bool_]]) -> np.ndarray[Any, Any]:
    """Per row, the accuracy of the best rule "kept when slower than t".

    Each row of ``kept`` is a labelling of the calls sorted by latency. A
    threshold after position k calls the first k wiped and the rest kept; k = 0
    calls all kept. Ties in latency are rare enough (a nanosecond clock) to
    count as distinct.
    """
    wiped_below = np.cumsum(~kept, axis=1)
    kept_above = kept.sum(axis=1, keepdims=True) - np.cumsum(kept, axis=1)
    best = np.maximum(kept.sum(axis=1), (wiped_below + kept_above).max(axis=1))
    accuracy: np.ndarray[Any, Any] = best / kept.shape[1]
    return accuracy


def threshold_figures(values: list[float], labels: list[bool], seed: int) -> tuple[float, float]:
    """The best threshold's accuracy, and what it stays under for 95% of label shuffles."""
    kept = np.asarray(labels, dtype=bool)[np.argsort(values, kind="stable")]
    rng = np.random.default_rng(seed)
    shuffled = np.array([rng.permutation(kept) for _ in range(SHUFFLES)])
    chance = float(np.quantile(best_accuracy(shuffled), 0.95))
    return float(best_accuracy(kept[np.newaxis])[0]), chance


def describe(name: str, samples: Sequence[Sample], pick: str, seed: int) -> float:
    """Print one request's figures for kept and wiped calls; return the test's p-value."""
    kept = [getattr(s, pick) * 1e3 for s in samples if s.kept]
    wiped = [getattr(s, pick) * 1e3 for s in samples if not s.kept]
    print(f"  {name + ' (ms)':26}{'kept':>10}{'wiped':>10}")
    print(f"  {'n':26}{len(kept):10d}{len(wiped):10d}")
    for label, q in (("median", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        print(f"  {label:26}{np.percentile(kept, q):10.3f}{np.percentile(wiped, q):10.3f}")
    ratio = float(np.median(kept) / np.median(wiped))
    p = float(mannwhitneyu(kept, wiped, alternative="greater").pvalue)
    accuracy, chance = threshold_figures(
        kept + wiped, [True] * len(kept) + [False] * len(wiped), seed
    )
    print(f"  {'ratio of medians':26}{ratio:10.2f}   kept / wiped")
    print(f"  {'Mann-Whitney p':26}{p:10.2g}   one-sided: kept slower than wiped")
    print(
        f"  {'best threshold':26}{accuracy:10.0%}   right (50%: cannot tell; "
        f"chance reaches {chance:.0%} 1 time in 20)"
    )
    return p


def report(daemon: Daemon, work: Workload, run: Run, seed: int) -> bool:
    kept = sum(s.kept for s in run.samples)
    print(daemon.label)
    print(
        f"  {work.lines} stereo lines, {len(run.samples)} calls of "
        f"{work.min_seconds:g}-{work.max_seconds:g} s ({kept} kept by a mark, "
        f"{len(run.samples) - kept} wiped), seed {seed}"
    )
    print(
        f"  commit.log: {run.committed} committed, {run.wiped} wiped "
        f"(expected {work.marked} and {work.calls - work.marked}); "
        f"exit {run.exit_code} on SIGTERM"
    )
    p_end = describe("end", run.samples, "end", seed)
    p_after = describe("status after end", run.samples, "after", seed)
    passed = min(p_end, p_after) >= ALPHA
    verdict = "PASS" if passed else "FAIL"
    told = "cannot" if passed else "can"
    print(
        f"  {verdict}: the replies' timing {told} tell kept calls from wiped ones "
        f"(p = {p_end:.2g} and {p_after:.2g}; PASS needs both >= {ALPHA:g})"
    )
    if (run.committed, run.wiped) != (work.marked, work.calls - work.marked):
        print("  WARNING: the commit log does not match the marks")
    return passed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=16, help="stereo lines, one agent each")
    parser.add_argument("--calls", type=int, help="calls in all (default 200; --quick 24)")
    parser.add_argument("--min-seconds", type=float, default=45.0, help="shortest call")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest call")
    parser.add_argument("--seed", type=int, default=1, help="for the plan of calls and marks")
    parser.add_argument("--quick", action="store_true", help="4 lines, 2-3 s calls: for the tests")
    parser.add_argument("--ref", metavar="COMMIT", help="also run this commit's daemon, first")
    args = parser.parse_args(argv)
    if args.quick:
        args.lines, args.min_seconds, args.max_seconds = 4, 2.0, 3.0
    if args.calls is None:
        args.calls = 24 if args.quick else 200
    if args.lines < 1 or args.calls < 4 or not 0 < args.min_seconds <= args.max_seconds:
        parser.error("need lines >= 1, calls >= 4 and 0 < min-seconds <= max-seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = plan(args.lines, args.calls, args.min_seconds, args.max_seconds, args.seed)
    passed = True
    try:
        if args.ref:
            with worktree(args.ref) as tree:
                old = reference_daemon(args.ref, tree)
                report(old, work, measure(old, work), args.seed)
            print()
        new = current_daemon()
        passed = report(new, work, measure(new, work), args.seed)
    except BenchError as exc:
        print(f"bench_isolation: {exc}", file=sys.stderr)
        return 1
    print(f"\nverdict for the daemon under test: {'PASS' if passed else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
