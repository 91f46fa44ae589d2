from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_commit_benchmark_reports_all_three_scenarios() -> None:
    # Only that it measured and reported: the figures depend on the machine's noise.
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_commit.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert bench.returncode == 0, bench.stderr
    out = bench.stdout
    rows = [line for line in out.splitlines() if line.startswith(("(a) ", "(b) ", "(c) "))]
    assert [row[:3] for row in rows] == ["(a)", "(b)", "(c)", "(a)", "(b)"], out
    assert "worker process" in rows[0] and "in-process thread" in rows[1] and "idle" in rows[2]
    assert "vs idle" in out
    assert "180.000 s each" in out and "wrote the same bytes" in out, out
    assert "0 chunks stolen, 0 frames dropped" in out, out
