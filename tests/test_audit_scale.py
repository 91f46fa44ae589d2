"""The auditor's reads at scale: bounded memory however long the log, and the rules that need
every call ever met (an id never reused, one outcome) kept when settled calls leave memory.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from hindsight import audit, commitlog
from hindsight.audit import callbook
from hindsight.audit.callbook import CallBook, Settled
from hindsight.audit.register import read_log
from hindsight.commitlog import CommitLog, index_path

LINE = "desk-01"


def started(log: CommitLog, call_id: str) -> None:
    log.append("call_started", call_id=call_id, line=LINE, agent="ana")


def wiped(log: CommitLog, call_id: str) -> None:
    log.append("call_wiped", call_id=call_id, line=LINE, seconds=1.25)


def floor_log(path: Path, calls: int, extra: list[dict[str, Any]] | None = None) -> None:
    """``calls`` calls, each started and wiped, between a start and a stop of the daemon;
    then the raw ``extra`` lines, appended as they are (they may break the call rules)."""
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # only while writing: the lines are the same, only sooner
    try:
        with CommitLog.open(path) as log:
            log.append("daemon_started", version="test", config_sha256=None)
            for n in range(calls):
                started(log, f"call-{n}")
                wiped(log, f"call-{n}")
            log.append("daemon_stopped")
    finally:
        os.fsync = real_fsync
    if extra:
        _append_raw(path, extra)
    index_path(path).unlink()


def _append_raw(path: Path, extra: list[dict[str, Any]]) -> None:
    """Lines a daemon would refuse to log, chained properly: only the audit can catch them."""
    index_path(path).unlink()
    log = CommitLog.open(path)
    try:
        for fields in extra:
            event = fields.pop("event")
            # The log's own call rules are the daemon's; bypass them to forge a bad history.
            log._calls.refusal = lambda *_: None  # type: ignore[method-assign]
            log.append(event, **fields)
    finally:
        log.close()


def test_the_call_book_spills_settled_calls_and_still_answers() -> None:
    book = CallBook(batch=3)
    try:
        for n in range(10):
            book.start(f"c{n}", line=n + 1, run=1)
            book.settle(f"c{n}", line=100 + n)
        book.deleted("c2", 500)
        book.deleted("never", 501)  # ignored: it was never settled
        book.start("live", 200, 1)
        assert len(book._pending) < 3  # most went to the file
        assert book.started_line("c0") == 1 and book.started_line("c9") == 10
        assert book.started_line("live") == 200 and book.started_line("nope") is None
        assert book.settled("c2") == Settled(3, 102, 500)
        assert book.settled("c5") == Settled(6, 105, None)
        assert book.settled("never") is None and book.settled("live") is None
    finally:
        book.close()
    assert book._folder is None  # the scratch file is gone


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            [{"event": "call_started", "call_id": "call-3", "line": LINE, "agent": None}],
            "call_started reuses call id 'call-3' of line 8",
        ),
        (
            [{"event": "call_wiped", "call_id": "call-4", "line": LINE, "seconds": 1}],
            "call 'call-4' has a second outcome (call_wiped); its first was on line 11",
        ),
        (
            [{"event": "call_marked", "call_id": "call-0", "line": LINE, "purpose": "x"}],
            "call 'call-0' is marked after its outcome on line 3",
        ),
    ],
)
def test_rules_over_every_call_hold_once_settled_calls_left_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[dict[str, Any]], problem: str
) -> None:
    monkeypatch.setattr(callbook, "BATCH", 2)  # every settled call goes to the file at once
    floor_log(tmp_path / "commit.log", 40, extra)
    result = audit.verify(tmp_path)
    assert not result.ok
    assert result.problem is not None and problem in result.problem


def _peak_of_verify(state: Path) -> int:
    tracemalloc.start()
    try:
        result = audit.verify(state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.ok, result.problem
    return peak


def _peak_of_report(state: Path) -> int:
    tracemalloc.start()
    try:
        found = audit.report(state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.totals.started == found.totals.wiped
    return peak


def test_verify_and_report_hold_no_more_for_ten_times_the_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbook, "BATCH", 100)
    monkeypatch.setattr(commitlog, "BLOCK", 1 << 14)  # both logs span several blocks
    small, big = tmp_path / "small", tmp_path / "big"
    floor_log(small / "commit.log", 400)
    floor_log(big / "commit.log", 4_000)
    verify_small, verify_big = _peak_of_verify(small), _peak_of_verify(big)
    report_small, report_big = _peak_of_report(small), _peak_of_report(big)
    # Ten times the calls: the same memory, give or take a batch (before: ten times as much).
    assert verify_big < 1.5 * verify_small, (verify_small, verify_big)
    assert report_big < 1.5 * report_small, (report_small, report_big)


def kept_and_purged_log(path: Path, calls: int) -> None:
    """``calls`` calls, each committed, then purged as expired: deletions pile up."""
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # only while writing: the lines are the same, only sooner
    until = "2026-01-01T00:00:00.000Z"
    try:
        with CommitLog.open(path) as log:
            log.append("daemon_started", version="test", config_sha256=None)
            for n in range(calls):
                call_id, where = f"call-{n}", f"recordings/2026/01/01/call-{n}.flac"
                started(log, call_id)
                log.append(
                    "call_committed", call_id=call_id, line=LINE, agent="ann",
                    reasons=["marked"], purposes=["escalation"],
                    retention={"escalation": until}, retain_until=until, path=where,
                    sha256="0" * 64, seconds=30.0, rolled_seconds=0.0, lost_seconds=0.0,
                    status_flags=0, ended=until, caller_ref=None,
                )  # fmt: skip
                log.append("recording_deleted", call_id=call_id, why="expired", path=where)
            log.append("daemon_stopped")
    finally:
        os.fsync = real_fsync


def test_the_register_holds_no_more_for_ten_times_the_deletions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commitlog, "BLOCK", 1 << 14)
    peaks = []
    for calls in (200, 2_000):
        state = tmp_path / str(calls)
        kept_and_purged_log(state / "commit.log", calls)
        tracemalloc.start()
        try:
            facts = read_log(state)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert facts.deletions["expired"] == calls and facts.total_recordings == 0
    small, big = peaks
    assert big < 1.5 * small, (small, big)
