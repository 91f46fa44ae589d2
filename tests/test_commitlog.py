from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hindsight.commitlog import (
    GENESIS,
    CommitLog,
    entry_hash,
    index_path,
    read_chain,
    read_entries,
)
from hindsight.errors import CommitLogError


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def started(log: CommitLog, call_id: str, line: str = "desk-01") -> dict[str, Any]:
    return log.append("call_started", call_id=call_id, line=line, agent=None)


def test_entry_hash_is_sha256_of_the_canonical_form_without_hash() -> None:
    obj = {"seq": 1, "event": "x", "b": "é", "a": [1, 2], "prev": GENESIS}
    canonical = '{"a":[1,2],"b":"é","event":"x","prev":"' + GENESIS + '","seq":1}'
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert entry_hash(obj) == expected
    assert entry_hash({**obj, "hash": "anything"}) == expected


def test_appended_lines_form_a_chain(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        first = log.append("daemon_started", version="1")
        second = started(log, "c1")
    entries = lines_of(path)
    assert entries == [first, second]
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["prev"] == GENESIS
    assert entries[1]["prev"] == entries[0]["hash"]
    assert all(e["hash"] == entry_hash(e) for e in entries)
    assert list(read_chain(path)) == entries


def test_line_holds_common_fields_then_event_fields_compact_and_non_ascii_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("call_started", call_id="c1", line="desk-01", agent="Zoë")
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.count("\n") == 1
    assert "Zoë" in text and " " not in text
    assert list(json.loads(text)) == [
        *("seq", "time", "event", "call_id", "line", "agent", "prev", "hash"),
    ]
    assert json.loads(text)["time"].endswith("Z")


def test_new_file_is_0640_in_a_made_parent_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "commit.log"
    old_umask = os.umask(0o077)
    try:
        CommitLog.open(path).close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.read_bytes() == b""


def test_reopen_resumes_seq_prev_and_calls(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="1")
        started(log, "c1")
        started(log, "c2", line="desk-02")
        log.append("call_wiped", call_id="c1", line="desk-01", seconds=1.5, why="not_kept")
        last_hash = log.last_hash
    with CommitLog.open(path) as log:
        assert log.last_seq == 4
        assert log.knows("c1") and log.knows("c2") and not log.knows("c3")
        assert log.open_calls == {"c2": "desk-02"}
        entry = log.append("daemon_stopped", version="1")
    assert entry["seq"] == 5 and entry["prev"] == last_hash
    assert [e["seq"] for e in read_chain(path)] == [1, 2, 3, 4, 5]


def test_append_keeps_open_calls_up_to_date(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path / "commit.log") as log:
        started(log, "c1")
        assert log.open_calls == {"c1": "desk-01"}
        log.append("call_marked", call_id="c1", line="desk-01", purpose="escalation")
        assert log.open_calls == {"c1": "desk-01"}
        log.append("call_committed", call_id="c1", line="desk-01", reasons=["marked"])
        assert log.open_calls == {}
        assert log.knows("c1") and not log.knows("c2")


@pytest.mark.parametrize(
    ("event", "fields", "why"),
    [
        ("call_started", {"call_id": "c1", "line": "desk-02", "agent": None}, "used before"),
        ("call_wiped", {"call_id": "c1", "line": "desk-01", "seconds": 0}, "not open"),
        ("call_marked", {"call_id": "nope", "line": "desk-01", "purpose": "x"}, "not open"),
        ("call_committed", {"line": "desk-01"}, "string call_id"),
        ("daemon_started", {"seq": 9}, "reserved"),
        ("", {}, "non-empty"),
        ("daemon_started", {"version": object()}, "not JSON serializable"),
        ("daemon_started", {"seconds": float("nan")}, "Out of range"),
    ],
)
def test_append_refuses_lines_that_would_break_the_log(
    tmp_path: Path, event: str, fields: dict[str, Any], why: str
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        started(log, "c1")
        log.append("call_wiped", call_id="c1", line="desk-01", seconds=0, why="not_kept")
        before = path.read_bytes()
        with pytest.raises(CommitLogError, match=why):
            log.append(event, **fields)
        assert path.read_bytes() == before
        assert log.append("daemon_stopped", version="1")["seq"] == 3


def test_any_new_event_kind_is_chained_like_the_others(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("retention_reviewed", by="dpo", items=(1, 2), notes={"k": "ü"})
    (entry,) = read_chain(path)
    assert entry["items"] == [1, 2] and entry["notes"] == {"k": "ü"}


def test_every_append_is_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    with CommitLog.open(tmp_path / "commit.log") as log:
        monkeypatch.setattr(os, "fsync", counting)
        for n in range(3):
            log.append("tick", n=n)
            assert len(synced) == n + 1


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:

        def work(worker: int) -> None:
            for n in range(25):
                log.append("tick", worker=worker, n=n)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [e["seq"] for e in read_chain(path)] == list(range(1, 101))


def test_a_failed_write_raises_and_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "commit.log"

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with CommitLog.open(path) as log:
        log.append("tick", n=1)
        with monkeypatch.context() as patch:
            patch.setattr(os, "write", full)
            with pytest.raises(CommitLogError, match="No space left"):
                log.append("tick", n=2)
        assert log.append("tick", n=3)["seq"] == 2
    assert [e["n"] for e in read_chain(path)] == [1, 3]


def half_then_full(real_write: Callable[[int, bytes], int]) -> Callable[[int, bytes], int]:
    def write(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_write_cut_short_is_rolled_back_and_the_log_stays_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("tick", n=1)
        before = path.read_bytes()
        with monkeypatch.context() as patch:
            patch.setattr(os, "write", half_then_full(os.write))
            with pytest.raises(CommitLogError):
                log.append("tick", n=2)
        assert path.read_bytes() == before
        assert log.append("tick", n=3)["seq"] == 2
    assert [e["n"] for e in read_chain(path)] == [1, 3]
    CommitLog.open(path).close()


def test_a_write_cut_short_that_cannot_be_rolled_back_stops_all_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "commit.log"

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with CommitLog.open(path) as log:
        log.append("tick", n=1)
        with monkeypatch.context() as patch:
            patch.setattr(os, "write", half_then_full(os.write))
            patch.setattr(os, "ftruncate", no_truncate)
            with pytest.raises(CommitLogError):
                log.append("tick", n=2)
        with pytest.raises(CommitLogError, match="will not be extended"):
            log.append("tick", n=3)
    with pytest.raises(CommitLogError, match="torn"):
        CommitLog.open(path)


def test_second_appender_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path), pytest.raises(CommitLogError, match="another process"):
        CommitLog.open(path)
    CommitLog.open(path).close()


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    log = CommitLog.open(tmp_path / "commit.log")
    log.close()
    log.close()
    with pytest.raises(CommitLogError, match="closed"):
        log.append("tick")


def make_log(path: Path, count: int = 3) -> bytes:
    """A log as a daemon wrote it, without its index: as an auditor reads it, and as the
    daemon reads it when it has no index (every line checked)."""
    with CommitLog.open(path) as log:
        for n in range(count):
            log.append("tick", n=n, note="Zoë")
    index_path(path).unlink()
    return path.read_bytes()


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(lambda whole: whole[:-1], id="final-newline-missing"),
        pytest.param(lambda whole: whole[:-40], id="cut-mid-line"),
        pytest.param(lambda whole: whole + b'{"seq":4,"ti', id="half-a-line-appended"),
        pytest.param(lambda whole: whole + b"\x00\x00\x00\n", id="garbage-line-with-newline"),
    ],
)
def test_torn_tail_is_reported_and_the_file_left_alone(tmp_path: Path, tail: Any) -> None:
    path = tmp_path / "commit.log"
    whole = make_log(path)
    torn = tail(whole)
    path.write_bytes(torn)
    offset = torn[:-1].rindex(b"\n") + 1  # where the last, torn line begins
    with pytest.raises(CommitLogError) as caught:
        CommitLog.open(path)
    message = str(caught.value)
    assert "torn" in message and f"byte offset {offset}" in message
    assert "will not be extended" in message
    assert path.read_bytes() == torn
    with pytest.raises(CommitLogError, match="torn"):
        list(read_entries(path))


def test_a_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    lines = make_log(path).splitlines(keepends=True)
    path.write_bytes(lines[0] + b"not json\n" + lines[1])
    with pytest.raises(CommitLogError, match=r"commit\.log line 2: not valid JSON"):
        list(read_entries(path))


def test_a_line_that_is_not_an_object_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    lines = make_log(path).splitlines(keepends=True)
    path.write_bytes(lines[0] + b"[1, 2]\n" + lines[1])
    with pytest.raises(CommitLogError, match=r"commit\.log line 2: not a JSON object"):
        list(read_entries(path))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        pytest.param(lambda ls: [ls[0], ls[2]], r"line 2: seq is 3, expected 2", id="drop"),
        pytest.param(lambda ls: [ls[0], ls[2], ls[1]], r"line 2: seq is 3", id="swap"),
        pytest.param(lambda ls: [ls[1], ls[2]], r"line 1: seq is 2, expected 1", id="drop-head"),
        pytest.param(lambda ls: [ls[0], ls[1], ls[1]], r"line 3: seq is 2", id="duplicate"),
        pytest.param(
            lambda ls: [ls[0], ls[1].replace(b'"n":1', b'"n":7'), ls[2]],
            r"line 2: hash does not match",
            id="edit",
        ),
    ],
)
def test_open_refuses_a_broken_chain_naming_the_line(
    tmp_path: Path, damage: Any, match: str
) -> None:
    path = tmp_path / "commit.log"
    lines = make_log(path).splitlines(keepends=True)
    path.write_bytes(b"".join(damage(lines)))
    with pytest.raises(CommitLogError, match=match):
        CommitLog.open(path)


def test_open_refuses_an_edit_with_a_recomputed_hash(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    lines = make_log(path).splitlines(keepends=True)
    edited = json.loads(lines[1])
    edited["n"] = 7
    edited["hash"] = entry_hash(edited)
    path.write_bytes(lines[0] + json.dumps(edited).encode() + b"\n" + lines[2])
    with pytest.raises(CommitLogError, match=r"line 3: prev does not match the hash of line 2"):
        CommitLog.open(path)


def test_reading_a_missing_log_raises(tmp_path: Path) -> None:
    with pytest.raises(CommitLogError, match="cannot be read"):
        list(read_entries(tmp_path / "commit.log"))


def test_a_line_read_from_the_file_is_seen_by_every_listener_once_the_log_is_still(
    tmp_path: Path,
) -> None:
    # The race a client hit: it read call_committed from the file and asked about the
    # recording before the retention ledger (a listener) had applied that line.
    path = tmp_path / "commit.log"
    applied: list[int] = []
    written = threading.Event()
    release = threading.Event()

    def slow_listener(entry: Any) -> None:
        written.set()  # the line is in the file by now
        release.wait(5)
        applied.append(entry["seq"])

    with CommitLog.open(path) as log:
        log.listen(slow_listener)
        writer = threading.Thread(target=started, args=(log, "c1"))
        writer.start()
        assert written.wait(5)
        assert lines_of(path)[-1]["seq"] == 1 and applied == []
        threading.Timer(0.2, release.set).start()
        with log.still():
            assert applied == [1]
        writer.join()
