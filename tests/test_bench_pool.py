from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_pool_benchmark_runs_and_both_tables_do_the_same_work() -> None:
    # The bench asserts that old and new tables took as many chunks and lost none.
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_pool.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bench.returncode == 0, bench.stderr
    assert "per steal" in bench.stdout and "status lock median" in bench.stdout
