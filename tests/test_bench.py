"""The benchmarks in bench/ run, quick, and report; their figures depend on the machine's
noise, so only what each one checks of itself and prints is asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_bench(name: str, *args: str, timeout: float = 90) -> str:
    bench = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert bench.returncode == 0, bench.stderr
    return bench.stdout


def test_the_capture_benchmark_runs_and_accounts_for_every_block() -> None:
    out = run_bench("bench_capture.py", "--lines", "2", "--seconds", "2", timeout=60)
    assert "lines of 16 kHz stereo on one core" in out


def test_the_pool_benchmark_runs_and_both_tables_do_the_same_work() -> None:
    # The bench asserts that old and new tables took as many chunks and lost none.
    out = run_bench("bench_pool.py", "--quick", timeout=60)
    assert "per steal" in out and "status lock median" in out


def test_the_commit_benchmark_reports_all_three_scenarios() -> None:
    out = run_bench("bench_commit.py", "--quick")
    rows = [line for line in out.splitlines() if line.startswith(("(a) ", "(b) ", "(c) "))]
    assert [row[:3] for row in rows] == ["(a)", "(b)", "(c)", "(a)", "(b)"], out
    assert "worker process" in rows[0] and "in-process thread" in rows[1] and "idle" in rows[2]
    assert "vs idle" in out
    assert "180.000 s each" in out and "wrote the same bytes" in out, out
    assert "0 chunks stolen, 0 frames dropped" in out, out


def test_the_isolation_benchmark_runs_the_daemon_and_reports_both_groups() -> None:
    # Whether it says PASS depends on the machine's noise.
    out = run_bench("bench_isolation.py", "--quick")
    assert "kept" in out and "wiped" in out
    assert out.count("Mann-Whitney p") == 2, out
    assert "commit.log: 12 committed, 12 wiped" in out, out
    assert "PASS" in out or "FAIL" in out


def test_the_retention_benchmark_runs_and_its_ledger_matches_the_simulation() -> None:
    # The bench asserts that the rebuilt ledger holds what the simulated log made exist,
    # held and deleted, and that no purge in it deleted a recording before it was due.
    out = run_bench("bench_retention.py", "--quick", timeout=120)
    assert "json.loads floor" in out and "rebuild" in out and "peak memory" in out


def test_the_encryption_benchmark_compares_with_the_bare_write_and_checks_the_audio() -> None:
    out = run_bench("bench_encrypt.py", "--quick", timeout=60)
    labels = ("(a) bare", "(b) Hindsight, encrypted", "(c) Hindsight, plain", "(d) before")
    assert all(label in out for label in labels), out
    assert "encrypted commit vs bare write" in out and "extra memory" in out
    assert "decrypted recording equals the call's audio" in out


def test_the_audit_benchmark_reads_a_real_log_every_way_against_its_floor() -> None:
    # The bench asserts that the walk found no problem and recomputed every draw.
    out = run_bench("bench_audit.py", "--quick", timeout=120)
    for case in ("SHA-256 of the bytes (floor)", "read_chain", "audit verify", "audit report"):
        assert case in out, out
    assert "daemon start-up reads" in out and "daemon start-up, no index yet" in out, out
    assert "wrote 20,002 lines" in out and "bytes a line" in out, out


def test_the_line_benchmark_checks_every_line_against_the_reference_first() -> None:
    out = run_bench("bench_logline.py", "--quick", timeout=120)
    assert "reference" in out and "parse_line" in out, out


def test_the_object_store_benchmark_uploads_to_a_real_seaweedfs() -> None:
    out = run_bench("bench_s3.py", "--quick", timeout=180)
    assert "upload_fileobj" in out and "put_stream" in out, out
