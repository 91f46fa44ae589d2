"""What parsing and hashing one commit-log line costs: the reference path against logline.

Writes a commit log of ``--lines`` lines with the real ``CommitLog`` (its fsyncs skipped: only
the writing is sped up, every line is the daemon's own, hash-chained canonically): runs of
calls on 64 desks as in bench_audit, each run a ``daemon_started``, a sampling epoch, calls
started and then committed (1 in 10) or wiped, the seed revealed and a ``daemon_stopped``.

Then times, in the same run, each line's bytes held in memory and every result dropped at
once as a reader's would be: a bare SHA-256 pass over the whole file (1 MiB blocks, the
floor), one SHA-256 hex digest per line, the reference (``commitlog.DECODER.decode`` of the
decoded text, then ``safe_hash``, as ``read_chain`` does) and ``logline.parse_line``; then
``read_chain`` as it is today, and a loop over the file's lines with ``parse_line``, for the
cost around the parse; last the worst case, every line given a float that the fast path
hands to the reference (``1e-05``), both ways. Each is the best of ``--repeat`` rounds, the
cases taken in turn. Checks that ``parse_line`` returned the reference's objects and hashes
for every line, and counts the lines it handed to the reference. Prints each time per line,
the lines and MiB per second, and its ratios to the floor and to the reference.
Run: ``.venv/bin/python bench/bench_logline.py [--lines N] [--repeat N] [--quick]``.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_audit import sha256_pass, write_log  # the same log, made the same way

from hindsight import logline
from hindsight.commitlog import LOG_NAME, read_chain
from hindsight.logline import parse_line, reference_line


def each(parse: Callable[[bytes], Any], lines: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        for data in lines:
            parse(data)

    return run


def read_file(path: Path) -> None:
    with path.open("rb") as handle:
        for data in handle:
            parse_line(data)


def best(cases: list[tuple[str, Callable[[], Any]]], repeat: int) -> dict[str, float]:
    """Each case's best time of ``repeat`` rounds, the cases taken in turn in every round, so
    that a busy spell of the machine does not fall on one case alone."""
    times = dict.fromkeys((name for name, _ in cases), float("inf"))
    for _ in range(repeat):
        for name, case in cases:
            started = time.perf_counter()
            case()
            times[name] = min(times[name], time.perf_counter() - started)
    return times


def check(lines: list[bytes]) -> int:
    """Asserts parse_line's answers are the reference's; returns how many lines fell back."""
    fell_back = 0
    real = logline.reference_line

    def counted(data: bytes) -> tuple[dict[str, Any], str | None]:
        nonlocal fell_back
        fell_back += 1
        return real(data)

    logline.reference_line = counted
    try:
        for data in lines:
            obj, digest = parse_line(data)
            ref, ref_digest = reference_line(data)
            assert digest == ref_digest and obj == ref, data
            assert list(obj) == list(ref) and list(map(type, obj.values())) == list(
                map(type, ref.values())
            ), data
    finally:
        logline.reference_line = real
    return fell_back


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="log lines (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    parser.add_argument("--quick", action="store_true", help="10,000 lines, best of 2: tests")
    args = parser.parse_args()
    lines_wanted, repeat = (10_000, 2) if args.quick else (args.lines, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LOG_NAME
        started = time.perf_counter()
        written = write_log(path, lines_wanted)
        size = path.stat().st_size
        print(f"wrote {written:,} lines ({size / 2**20:.1f} MiB, {size / written:.0f} bytes a "
              f"line) in {time.perf_counter() - started:.1f} s")  # fmt: skip
        lines = path.read_bytes().splitlines(keepends=True)
        fell_back = check(lines)
        for data in lines:  # and every line's hash is its own: the chain holds
            obj, digest = parse_line(data)
            assert digest == obj["hash"], data
        slow = [b'{"x":1e-05,' + data[1:] for data in lines]
        assert check(slow) == len(slow)
        print(f"parse_line agreed with the reference on all {len(lines):,} lines; "
              f"{fell_back:,} went to the reference")  # fmt: skip

        cases: list[tuple[str, Callable[[], Any]]] = [
            ("SHA-256 of the bytes (floor)", lambda: sha256_pass(path)),
            ("SHA-256 hex digest per line", each(lambda d: hashlib.sha256(d).hexdigest(), lines)),
            ("reference: decode + safe_hash", each(reference_line, lines)),
            ("logline.parse_line", each(parse_line, lines)),
            ("read_chain (today, whole file)", lambda: sum(1 for _ in read_chain(path))),
            ("file lines + parse_line", lambda: read_file(path)),
            ("reference, a 1e-05 in every line", each(reference_line, slow)),
            ("parse_line, a 1e-05 in every line", each(parse_line, slow)),
        ]
        times = best(cases, repeat)
        floor, ref = times[cases[0][0]], times[cases[2][0]]
        print(f"{'':32} {'us/line':>8} {'lines/s':>10} {'MiB/s':>7} {'x floor':>8} {'x ref':>6}")
        for name, seconds in times.items():
            print(f"{name:32} {seconds / written * 1e6:8.2f} {written / seconds:10,.0f} "
                  f"{size / 2**20 / seconds:7.1f} {seconds / floor:8.1f} "
                  f"{seconds / ref:6.2f}")  # fmt: skip
        speed_up = times[cases[2][0]] / times[cases[3][0]]
        print(f"parse_line is {speed_up:.1f}x faster than the reference per line")


if __name__ == "__main__":
    main()
