from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_isolation_benchmark_runs_the_daemon_and_reports_both_groups() -> None:
    # Only that it measured and reported: whether it says PASS depends on the machine's noise.
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_isolation.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert bench.returncode == 0, bench.stderr
    out = bench.stdout
    assert "kept" in out and "wiped" in out
    assert out.count("Mann-Whitney p") == 2, out
    assert "commit.log: 12 committed, 12 wiped" in out, out
    assert "PASS" in out or "FAIL" in out
