"""The commit log's index (hindsight.logindex): start-up reads only what is new, and keeps
every guarantee of the chain it can see: the verified head must still be there, byte for byte.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from hindsight import audit
from hindsight.commitlog import CommitLog, entry_hash, index_path, read_chain
from hindsight.daemon.systemd import StartProgress
from hindsight.errors import CommitLogError
from hindsight.logindex import LogIndex
from tests.harness import Daemon
from tests.test_operations import NotifySocket
from tests.test_worker import wait_until


def started(log: CommitLog, call_id: str, line: str = "desk-01") -> None:
    log.append("call_started", call_id=call_id, line=line, agent=None)


def call(log: CommitLog, call_id: str, outcome: str = "call_wiped") -> None:
    started(log, call_id)
    log.append(outcome, call_id=call_id, line="desk-01", seconds=1)


def committed(log: CommitLog, call_id: str) -> None:
    started(log, call_id)
    log.append(
        "call_committed",
        call_id=call_id,
        line="desk-01",
        reasons=["marked"],
        purposes=["escalation"],
        path=f"recordings/2026/11/29/{call_id}.flac",
        sha256="ab" * 32,
        seconds=3,
        retain_until="2027-01-01T00:00:00Z",
        ended="2026-11-29T10:00:00Z",
    )


def open_counting(path: Path) -> tuple[CommitLog, list[int]]:
    """Open the log, counting the lines start-up read."""
    read: list[int] = []
    log = CommitLog.open(path, on_line=lambda lines, _bytes: read.append(lines))
    return log, read


def test_a_restart_reads_no_line_the_daemon_verified_before(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        for n in range(50):
            call(log, f"c{n}")
        started(log, "live")
    log, read = open_counting(path)
    with log:
        assert read == []  # nothing new since the index's head
        assert log.last_seq == 101
        assert log.open_calls == {"live": "desk-01"}
        assert log.knows("c0") and log.knows("c49") and log.knows("live")
        assert not log.knows("c50")
        with pytest.raises(CommitLogError, match="call id 'c7' was used before"):
            started(log, "c7")
        entry = log.append("daemon_stopped")
    assert entry["seq"] == 102
    assert [e["seq"] for e in read_chain(path)] == list(range(1, 103))


def test_an_index_behind_its_log_catches_up_on_the_lines_after_its_head(tmp_path: Path) -> None:
    # A crash between a line's fsync and the index's update leaves the index behind.
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "early")
    behind = tmp_path / "behind.index"
    shutil.copy(index_path(path), behind)
    with CommitLog.open(path) as log:
        call(log, "late")
        started(log, "open-late")
        log.append("sampling_epoch", epoch=4)
    shutil.copy(behind, index_path(path))
    log, read = open_counting(path)
    with log:
        assert read == [1, 2, 3, 4]  # the four lines after the old head, and only those
        assert log.knows("early") and log.knows("late") and log.knows("open-late")
        assert log.open_calls == {"open-late": "desk-01"}
        assert log.last_epoch == 4
        assert log.last_seq == 6
    log, read = open_counting(path)  # caught up for good
    log.close()
    assert read == []


def test_a_log_cut_short_behind_the_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        for n in range(5):
            call(log, f"c{n}")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-2]))  # whole lines: a chain that is still valid
    with pytest.raises(CommitLogError, match="lines were removed since") as caught:
        CommitLog.open(path)
    assert "move" in str(caught.value) and "commit.index" in str(caught.value)
    assert path.read_bytes() == b"".join(lines[:-2])  # refused, never touched
    # An operator who restored the log on purpose moves the index aside: checked whole.
    index_path(path).rename(tmp_path / "old.index")
    log, read = open_counting(path)
    with log:
        assert read[-1] == 8 and log.last_seq == 8


def test_a_log_rechained_behind_the_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        for n in range(3):
            log.append("tick", n=n)
    # Rewrite line 2 and re-chain line 3 after it: a valid chain, but not the verified one.
    entries = [json.loads(line) for line in path.read_bytes().splitlines()]
    entries[1]["n"] = 7
    entries[1]["hash"] = entry_hash(entries[1])
    entries[2]["prev"] = entries[1]["hash"]
    entries[2]["hash"] = entry_hash(entries[2])
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
    assert len(list(read_chain(path))) == 3  # the chain alone cannot tell
    with pytest.raises(CommitLogError, match="line 3 is not the line the daemon verified"):
        CommitLog.open(path)


def test_a_torn_append_after_the_head_is_still_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
    whole = path.read_bytes()
    with path.open("ab") as handle:
        handle.write(b'{"seq":3,"time":"2026-')  # a crash mid-append: never indexed
    with pytest.raises(CommitLogError, match=f"torn at byte offset {len(whole)}") as caught:
        CommitLog.open(path)
    assert "hindsight audit repair" in str(caught.value)
    path.write_bytes(whole)  # what `audit repair` leaves (the torn bytes moved aside)
    with CommitLog.open(path) as log:
        assert log.last_seq == 2


def test_an_unreadable_index_is_made_anew_from_the_whole_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
        started(log, "c2")
    index_path(path).write_bytes(b"this is not an SQLite database, but it is long enough" * 20)
    with caplog.at_level(logging.WARNING):
        log, read = open_counting(path)
    with log:
        assert read[-1] == 3  # every line checked again
        assert log.knows("c1") and log.open_calls == {"c2": "desk-01"}
    assert "cannot be read" in caplog.text and "made anew" in caplog.text


def test_an_index_of_another_version_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
    with sqlite3.connect(index_path(path)) as db:
        db.execute("UPDATE head SET version = 999")
    db.close()
    log, read = open_counting(path)
    with log:
        assert read[-1] == 2 and log.knows("c1")


def test_a_new_log_beside_an_old_index_is_refused(tmp_path: Path) -> None:
    # Deleting the log is exactly what the index is there to notice.
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
    path.unlink()
    with pytest.raises(CommitLogError, match="is 0 bytes, but the daemon had verified"):
        CommitLog.open(path)


def test_the_ledger_lines_are_those_of_recordings_that_exist(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        committed(log, "kept")
        committed(log, "gone")
        call(log, "wiped")
        log.append(
            "recording_held", call_id="kept", actor="legal", reason="case 7", retain_until=None
        )
        log.append(
            "recording_deleted",
            call_id="gone",
            path="recordings/2026/11/29/gone.flac",
            why="erased",
            actor="dpo",
            reason="art. 17",
        )
        log.append("recording_resolved", call_id="gone", purpose="x", retain_until=None)
    with CommitLog.open(path) as log:
        kept = log.kept_entries()
        assert [(e["event"], e["call_id"]) for e in kept] == [
            ("call_committed", "kept"),
            ("recording_held", "kept"),
        ]
        gone = log.deleted_entry("gone")
        assert gone is not None and gone["why"] == "erased"
        assert log.deleted_entry("kept") is None
        assert [e["call_id"] for e in log.pending_deletions()] == ["gone"]
        log.deletions_done()
        assert log.pending_deletions() == []
    with CommitLog.open(path) as log:
        assert log.pending_deletions() == []  # done stays done across a restart
        assert [e["event"] for e in log.kept_entries()] == ["call_committed", "recording_held"]


def test_a_recording_committed_again_is_indexed_once(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        committed(log, "c1")
        log.append(
            "recording_deleted",
            call_id="c1",
            path="recordings/2026/11/29/c1.flac",
            why="expired",
        )
    with CommitLog.open(path) as log:
        assert log.kept_entries() == []
        assert [e["call_id"] for e in log.pending_deletions()] == ["c1"]


def test_a_kept_line_altered_behind_the_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        committed(log, "c1")
        log.append("tick")
    data = path.read_bytes()
    path.write_bytes(data.replace(b'"seconds":3', b'"seconds":4'))
    with CommitLog.open(path) as log, pytest.raises(CommitLogError, match="altered since"):
        log.kept_entries()


def test_an_index_that_cannot_be_written_is_left_behind_and_caught_up_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "commit.log"
    log = CommitLog.open(path)
    call(log, "before")

    def full(*_: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(LogIndex, "note", full)
    with caplog.at_level(logging.ERROR):
        started(log, "during")  # the log goes on: the index is not the truth
    assert "cannot be written" in caplog.text
    assert log.knows("during") and log.knows("before")
    with pytest.raises(CommitLogError, match="'during' was used before"):
        started(log, "during")
    log.append("call_wiped", call_id="during", line="desk-01", seconds=1)
    log.close()
    monkeypatch.undo()
    log, read = open_counting(path)
    with log:
        assert read == [1, 2, 3, 4]  # every line since the last saved head
        assert log.knows("during") and log.open_calls == {}


def test_a_second_appender_is_refused_before_the_index_is_touched(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
        with pytest.raises(CommitLogError, match="another process has the commit log open"):
            CommitLog.open(path)
        started(log, "c2")  # the first appender's index still works
    with CommitLog.open(path) as log:
        assert log.open_calls == {"c2": "desk-01"}


def test_a_long_first_check_pushes_out_systemds_start_timeout_and_says_how_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        for n in range(40):
            log.append("tick", n=n)
    index_path(path).unlink()  # the first start after an upgrade: every line is checked
    notify = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    ticks = iter(range(0, 10_000, 2))  # two seconds pass per line
    progress = StartProgress(
        "checking the commit log", path.stat().st_size, clock=lambda: float(next(ticks))
    )
    try:
        with caplog.at_level(logging.INFO, logger="hindsight.daemon.systemd"):
            CommitLog.open(path, progress).close()
        wait_until(lambda: len(notify.states("STATUS=")) == 13)  # every third line of 40
    finally:
        notify.close()
    assert set(notify.states("EXTEND_TIMEOUT_USEC=")) == {"EXTEND_TIMEOUT_USEC=30000000"}
    percents = [int(s.split(": ")[1].split("%")[0]) for s in notify.states("STATUS=")]
    assert percents == sorted(percents) and 0 < percents[0] < 15 and percents[-1] >= 90
    assert "checking the commit log: " in caplog.text and "% (3 lines in 6 s)" in caplog.text


def test_an_index_that_cannot_be_written_at_start_stops_the_start_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        call(log, "c1")
    index_path(path).unlink()

    def full(*_: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(LogIndex, "note", full)
    with pytest.raises(CommitLogError, match=r"commit\.index: the commit log.s index cannot be "):
        CommitLog.open(path)
    monkeypatch.undo()
    with CommitLog.open(path) as log:  # room again: it starts
        assert log.knows("c1")


def test_a_daemon_killed_before_its_index_was_saved_still_refuses_a_used_call_id(
    tmp_path: Path,
) -> None:
    # SIGKILL within the index's save interval: the index is behind its log, and the next
    # start must learn the ids from the lines after its head.
    with Daemon(tmp_path) as d:
        d.ok({"op": "start", "line": "desk-01", "call_id": "early"})
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped")
        time.sleep(1.5)  # saved
        d.ok({"op": "start", "line": "desk-01", "call_id": "late"})
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped", count=2)
        d.stop(signal.SIGKILL)
        d.start()
        for used in ("early", "late"):
            refused = d.request({"op": "start", "line": "desk-01", "call_id": used})
            assert refused["error"]["code"] == "bad_request", refused
            assert f"call id {used} was already used" in refused["error"]["message"]
        assert d.ok({"op": "start", "line": "desk-01", "call_id": "new"})["call_id"] == "new"
    result = audit.verify(d.state)
    assert result.ok, result.problem
