from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_retention_benchmark_runs_and_its_ledger_matches_the_simulation() -> None:
    # The bench asserts that the rebuilt ledger holds what the simulated log made exist,
    # held and deleted, and that no purge in it deleted a recording before it was due.
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_retention.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bench.returncode == 0, bench.stderr
    assert "json.loads floor" in bench.stdout and "rebuild" in bench.stdout
    assert "peak memory" in bench.stdout
