"""How the auditor's reads and the daemon's start-up scale with the log's length.

Issue "Audit", point 7 (scale). Writes a commit log of ``--lines`` lines with the real
``CommitLog`` (its fsyncs skipped: only the writing is sped up, every line is the daemon's
own, hash-chained canonically): runs of 20,000 calls on 64 desks, each run a
``daemon_started``, a purge of the recordings of the run two before (retention), a sampling
epoch (1 in 10, the seed revealed at the run's end), calls started and committed when the
draw picks them, else wiped.

Then times, in the same run, against the floor of a bare SHA-256 pass over the same bytes
(1 MiB blocks): ``read_chain`` (the chain checked, every line parsed), the auditor's read of
the same (``hindsight.chaincheck.entries``: the garbage collector paused; on one core, then
with the hashes checked in a second process), ``audit verify``'s walk
of the log (the call rules, retention and every draw; the recordings, which this log does not
have on disk, aside), ``audit report``, and the daemon's start-up reads: once without an
index (the first start after an upgrade: every line checked, as every start did before), and
once with it (the lines since its head, none here, and the retention lines of the recordings
that exist). Prints each time, its ratio to the floor, and the peak memory traced.
``--keep-log FILE`` keeps the log, to time other code on the same bytes; ``--log FILE`` times
a kept log instead of writing one.
Run: ``.venv/bin/python bench/bench_audit.py [--lines N | --log FILE] [--quick] [--keep-log FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hindsight import audit
from hindsight.audit.verify import _walk
from hindsight.chaincheck import entries
from hindsight.commitlog import LOG_NAME, CommitLog, index_path, read_chain
from hindsight.retention import ledger_of
from hindsight.sampling import commitment, picked

DESKS = [f"desk-{i:02d}" for i in range(64)]
CALLS_PER_RUN = 20_000
KEPT_RUNS = 2  # a run's recordings are purged when the run two later starts
ONE_IN = 10


def write_log(path: Path, lines: int) -> int:
    """A daemon's log of about ``lines`` lines; returns how many it wrote."""
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # only while writing: the lines are the same
    try:
        with CommitLog.open(path) as log:
            return _fill(log, lines)
    finally:
        os.fsync = real_fsync


def _fill(log: CommitLog, lines: int) -> int:
    epoch = 0
    kept: dict[int, list[str]] = {}  # the recordings each run committed
    while log.last_seq < lines:
        epoch += 1
        seed = secrets.token_bytes(32)
        log.append("daemon_started", version="bench", config_sha256=None)
        for call_id in kept.pop(epoch - KEPT_RUNS, []):  # retention: a purge of the expired
            log.append(
                "recording_deleted", call_id=call_id, why="expired",
                path=f"recordings/2026/11/29/{call_id}.flac",
            )  # fmt: skip
        log.append(
            "sampling_epoch", epoch=epoch, one_in=ONE_IN, purpose="training",
            commitment=commitment(seed),
        )  # fmt: skip
        for n in range(CALLS_PER_RUN):
            if log.last_seq >= lines - 4:
                break
            call_id = f"e{epoch}-{n:06d}"
            desk = DESKS[n % len(DESKS)]
            log.append(
                "call_started", call_id=call_id, line=desk, agent=f"agent-{n % 80}",
                announced=["training", "escalation"], epoch=epoch,
            )  # fmt: skip
            if picked(seed, call_id, ONE_IN):
                _commit(log, call_id, desk)
                kept.setdefault(epoch, []).append(call_id)
            else:
                log.append("call_wiped", call_id=call_id, line=desk, seconds=52.0, why="not_kept")
        log.append("sampling_reveal", epoch=epoch, seed=seed.hex())
        log.append("daemon_stopped", version="bench")
    return log.last_seq


def _commit(log: CommitLog, call_id: str, desk: str) -> None:
    until = "2026-01-01T00:00:00.000Z"  # due: purged two runs later
    log.append(
        "call_committed", call_id=call_id, line=desk, agent="agent", reasons=["sampled"],
        purposes=["training"], retention={"training": until}, retain_until=until,
        path=f"recordings/2026/11/29/{call_id}.flac", sha256="0" * 64, seconds=52.0,
        rolled_seconds=0.0, lost_seconds=0.0, status_flags=0,
        ended="2026-11-29T10:00:00.000Z", caller_ref=None,
    )  # fmt: skip


def sha256_pass(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)


def timed(what: Callable[[], Any]) -> tuple[float, float]:
    """Seconds and peak traced MiB of one call of ``what`` (timed without tracing)."""
    started = time.perf_counter()
    what()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    what()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=400_000, help="log lines (default 400,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 lines: for the tests")
    parser.add_argument("--keep-log", type=Path, metavar="FILE", help="copy the log there")
    parser.add_argument("--log", type=Path, metavar="FILE", help="time this log instead")
    args = parser.parse_args()
    lines = 20_000 if args.quick else args.lines
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        path = state / LOG_NAME
        started = time.perf_counter()
        if args.log is not None:  # the same bytes as an earlier run (or older code's)
            shutil.copyfile(args.log, path)
            written = sum(1 for _ in path.open("rb"))
            print(f"read {written:,} lines from {args.log}")
        else:
            written = write_log(path, lines)
            print(f"wrote {written:,} lines in {time.perf_counter() - started:.1f} s")
        size = path.stat().st_size
        print(f"{size / 2**20:.1f} MiB, {size / written:.0f} bytes a line")
        if args.keep_log is not None:
            shutil.copyfile(path, args.keep_log)

        def walk() -> None:
            rules, problem = _walk(path, (), {}, None)
            rules.calls.close()
            assert problem is None, problem
            assert rules.draws.checked > 0 and not rules.draws.unverified

        def start_up() -> None:
            """What the daemon reads of its log at start: the lines after the index's head
            (none here), and the retention lines of the recordings that exist."""
            with CommitLog.open(path) as log:
                ledger_of(log.kept_entries())

        def first_start_up() -> None:
            """The same without an index (the first start after an upgrade): every line."""
            index_path(path).unlink(missing_ok=True)
            start_up()

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("SHA-256 of the bytes (floor)", lambda: sha256_pass(path)),
            ("read_chain (chain checked)", lambda: sum(1 for _ in read_chain(path))),
            ("the same on one core, no GC", lambda: sum(1 for _ in entries(path, aside=False))),
            ("the same, hashes aside", lambda: sum(1 for _ in entries(path, aside=True))),
            ("audit verify, the log's walk", walk),
            ("audit report", lambda: audit.report(state)),
            ("daemon start-up, no index yet", first_start_up),
            ("daemon start-up reads", start_up),
        ]
        floor = 0.0
        print(f"{'':34} {'seconds':>9} {'x floor':>8} {'lines/s':>10} {'peak MiB':>9}")
        for name, case in cases:
            seconds, peak = timed(case)
            floor = floor or seconds
            print(f"{name:34} {seconds:9.2f} {seconds / floor:8.1f} "
                  f"{written / seconds:10,.0f} {peak:9.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
