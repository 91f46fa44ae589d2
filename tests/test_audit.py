from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hindsight.audit import report, verify
from hindsight.audit.text import render
from hindsight.commitlog import GENESIS, RESERVED_FIELDS, CommitLog, entry_hash
from hindsight.errors import CommitLogError

DAY = "recordings/2026/11/28"
NOW = datetime(2026, 11, 29, tzinfo=UTC)
TRAIN = "2027-02-28T10:00:00.000Z"


def write_recording(state: Path, call_id: str, audio: bytes) -> dict[str, Any]:
    """A small recording plus sidecar; returns the file fields of its ``call_committed``."""
    rel = f"{DAY}/{call_id}.flac"
    (state / DAY).mkdir(parents=True, exist_ok=True)
    (state / rel).write_bytes(audio)
    digest = hashlib.sha256(audio).hexdigest()
    sidecar = {"call_id": call_id, "sha256": digest, "path": rel, "samplerate": 16000}
    (state / f"{DAY}/{call_id}.json").write_text(json.dumps(sidecar))
    return {"path": rel, "sha256": digest}


def write_sidecar(state: Path, entry: dict[str, Any], marks: tuple[str, ...] = ()) -> None:
    """The sidecar as the daemon writes it: every field of its call_committed line, and more
    (verify compares the two)."""
    fields = {key: value for key, value in entry.items() if key not in RESERVED_FIELDS}
    notes = [{"purpose": purpose, "time": entry["time"], "note": None} for purpose in marks]
    sidecar = {**fields, "samplerate": 16000, "marks": notes}
    (state / f"{DAY}/{entry['call_id']}.json").write_text(json.dumps(sidecar))


def commit(
    log: CommitLog,
    state: Path,
    call_id: str,
    line: str,
    purposes: dict[str, str],
    *,
    marks: tuple[str, ...] = (),
    **more: Any,
) -> None:
    entry = log.append(
        "call_committed",
        call_id=call_id,
        line=line,
        purposes=list(purposes),
        retention=purposes,
        retain_until=max(purposes.values()),
        **write_recording(state, call_id, f"fLaC {call_id}".encode() * 100),
        **more,
    )
    write_sidecar(state, entry, marks)


def start(log: CommitLog, call_id: str, line: str, agent: str | None) -> None:
    log.append("call_started", call_id=call_id, line=line, agent=agent)


def wipe(log: CommitLog, call_id: str, line: str, seconds: float, why: str = "not_kept") -> None:
    log.append("call_wiped", call_id=call_id, line=line, seconds=seconds, why=why)


def build_state(state: Path) -> Path:
    """Two daemon runs, the first ending in a crash; every kind of outcome once or more.

    c1 desk-01 ann   marked     escalation  12.5 s kept
    c2 desk-02 -     wiped                  30 s
    c3 desk-01 bob   sampled    training    40 s kept, 2.5 rolled; later erased
    c4 desk-02 ann   open when the first run crashed; closed as lost_in_crash
    c5 desk-01 ann   sampled+marked  training, escalation  7.25 s kept
    """
    esc, train = "2028-11-28T10:00:00.000Z", TRAIN
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c1", "desk-01", "ann")
        log.append("call_marked", call_id="c1", line="desk-01", purpose="escalation")
        commit(
            log, state, "c1", "desk-01", {"escalation": esc}, marks=("escalation",),
            reasons=["marked"], seconds=12.5,
        )  # fmt: skip
        start(log, "c2", "desk-02", None)
        wipe(log, "c2", "desk-02", 30)
        start(log, "c3", "desk-01", "bob")
        commit(
            log, state, "c3", "desk-01", {"training": train},
            reasons=["sampled"], seconds=40, rolled_seconds=2.5,
        )  # fmt: skip
        start(log, "c4", "desk-02", "ann")
        log.append("daemon_started", version="0.1.0")
        wipe(log, "c4", "desk-02", 0, why="lost_in_crash")
        erase(log, "c3")
        start(log, "c5", "desk-01", "ann")
        commit(
            log, state, "c5", "desk-01", {"training": train, "escalation": esc},
            reasons=["sampled", "marked"], seconds=7.25, rolled_seconds=0,
        )  # fmt: skip
        log.append("daemon_stopped", version="0.1.0")
    (state / f"{DAY}/c3.flac").unlink()
    (state / f"{DAY}/c3.json").unlink()
    return state / "commit.log"


def erase(log: CommitLog, call_id: str) -> None:
    log.append(
        "recording_deleted", call_id=call_id, path=f"{DAY}/{call_id}.flac", why="erased",
        actor="dpo", reason="the caller asked",
    )  # fmt: skip


def append_raw(path: Path, event: str, /, **fields: Any) -> None:
    """Chain a line by hand, bypassing CommitLog's refusals, as a buggy or hostile writer would."""
    lines = path.read_bytes().splitlines()
    last: dict[str, Any] = json.loads(lines[-1]) if lines else {"seq": 0, "hash": GENESIS}
    entry = {"seq": last["seq"] + 1, "time": "2026-11-28T23:00:00.000Z", "event": event}
    entry.update(fields, prev=last["hash"])
    entry["hash"] = entry_hash(entry)
    with path.open("ab") as handle:
        handle.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


def assert_fails(state: Path, *needles: str, now: datetime = NOW) -> str:
    result = verify(state, now)
    assert not result.ok and result.problem is not None
    for needle in needles:
        assert needle in result.problem
    assert "\n" not in result.problem
    return result.problem


# --- verify: the intact case ---------------------------------------------------------------


def test_intact_state_verifies(tmp_path: Path) -> None:
    build_state(tmp_path)
    result = verify(tmp_path, NOW)
    assert result.ok, result.problem
    assert (result.problem, result.entries, result.recordings) == (None, 15, 2)


def test_empty_log_verifies(tmp_path: Path) -> None:
    CommitLog.open(tmp_path / "commit.log").close()
    assert verify(tmp_path, NOW).ok


def test_missing_log_fails(tmp_path: Path) -> None:
    assert_fails(tmp_path, "commit.log is missing")


# --- verify: tampering with the log ---------------------------------------------------------


def nth(data: bytes, needle: bytes, n: int = 1) -> int:
    at = -1
    for _ in range(n):
        at = data.index(needle, at + 1)
    return at


FLIP_POSITIONS: dict[str, Callable[[bytes], int]] = {
    "first-byte": lambda d: 0,
    "inside-seq": lambda d: nth(d, b'"seq":', 4) + 6,
    "inside-time": lambda d: nth(d, b'"time":"', 2) + 12,
    "inside-event-name": lambda d: nth(d, b"call_wiped") + 5,
    "inside-a-field-value": lambda d: nth(d, b'"agent":"bob"') + 10,
    "inside-seconds": lambda d: nth(d, b'"seconds":30') + 10,
    "inside-prev": lambda d: nth(d, b'"prev":"', 3) + 30,
    "inside-a-hash": lambda d: nth(d, b'"hash":"', 5) + 20,
    "inside-the-last-hash": lambda d: d.rindex(b'"hash":"') + 40,
    "a-newline": lambda d: nth(d, b"\n", 7),
    "the-final-newline": lambda d: len(d) - 1,
}


@pytest.mark.parametrize("where", FLIP_POSITIONS.values(), ids=FLIP_POSITIONS.keys())
def test_flipping_one_byte_of_the_log_fails_naming_a_line(
    tmp_path: Path, where: Callable[[bytes], int]
) -> None:
    path = build_state(tmp_path)
    data = bytearray(path.read_bytes())
    data[where(bytes(data))] ^= 0x01
    path.write_bytes(bytes(data))
    assert_fails(tmp_path, "commit.log line ")


def test_flipping_any_byte_of_the_log_fails(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c1", "desk-01", "Zoë")
        commit(log, tmp_path, "c1", "desk-01", {"training": TRAIN}, reasons=["sampled"])
        log.append("daemon_stopped", version="0.1.0")
    good = path.read_bytes()
    assert verify(tmp_path, NOW).ok
    missed = []
    for at in range(len(good)):
        data = bytearray(good)
        data[at] ^= 0x01
        path.write_bytes(bytes(data))
        if verify(tmp_path, NOW).ok:
            missed.append(at)
    assert missed == []


def test_dropping_a_line_fails_naming_it(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:5] + lines[6:]))
    assert_fails(tmp_path, "commit.log line 6:", "seq is 7, expected 6")


def test_swapping_two_lines_fails_naming_them(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[4], lines[5] = lines[5], lines[4]
    path.write_bytes(b"".join(lines))
    assert_fails(tmp_path, "commit.log line 5:", "seq is 6, expected 5")


def test_editing_a_field_and_rehashing_its_line_fails_at_the_next_line(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    edited = json.loads(lines[5])
    assert edited["event"] == "call_wiped"
    edited["seconds"] = 3
    edited["hash"] = entry_hash(edited)
    lines[5] = json.dumps(edited, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(lines))
    assert_fails(tmp_path, "commit.log line 7:", "hash of line 6")


def test_a_torn_tail_fails_and_the_log_is_left_as_it_was(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    torn = path.read_bytes()[:-25]
    path.write_bytes(torn)
    offset = torn.rindex(b"\n") + 1
    assert_fails(tmp_path, "commit.log line 15:", "torn", f"byte offset {offset}")
    assert path.read_bytes() == torn


def test_a_line_that_is_not_a_json_object_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:3], b'"just a string"\n', *lines[3:]]))
    assert_fails(tmp_path, "commit.log line 4: not a JSON object")


def test_a_chain_problem_outranks_an_earlier_call_problem(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "call_wiped", call_id="c2", line="desk-02", seconds=1)
    path.write_bytes(path.read_bytes().replace(b'"seconds":40', b'"seconds":41'))
    assert_fails(tmp_path, "line 8:", "hash does not match")


# --- verify: recordings --------------------------------------------------------------------


def test_a_recording_whose_bytes_changed_fails(tmp_path: Path) -> None:
    build_state(tmp_path)
    flac = tmp_path / DAY / "c5.flac"
    data = bytearray(flac.read_bytes())
    data[len(data) // 2] ^= 0x40
    flac.write_bytes(bytes(data))
    assert_fails(tmp_path, "commit.log line 14:", "c5.flac", "sha256")


def test_a_missing_recording_fails(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / DAY / "c1.flac").unlink()
    assert_fails(tmp_path, "commit.log line 4:", "c1.flac", "missing")


def test_a_missing_sidecar_fails(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / DAY / "c1.json").unlink()
    assert_fails(tmp_path, "commit.log line 4:", "sidecar", "c1.json", "missing")


def test_a_sidecar_of_another_recording_fails(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / DAY / "c1.json").write_bytes((tmp_path / DAY / "c5.json").read_bytes())
    assert_fails(tmp_path, "commit.log line 4:", "sidecar", "disagrees")


def test_a_recording_deleted_with_recording_deleted_is_fine(tmp_path: Path) -> None:
    build_state(tmp_path)
    assert not (tmp_path / DAY / "c3.flac").exists()
    assert verify(tmp_path, NOW).ok


def test_a_recording_logged_as_deleted_but_still_there_fails(tmp_path: Path) -> None:
    build_state(tmp_path)
    write_recording(tmp_path, "c3", b"fLaC c3" * 100)
    assert_fails(tmp_path, "commit.log line 12:", "c3.flac", "still exists")


def test_a_recording_path_outside_the_state_dir_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "call_started", call_id="c6", line="desk-01", agent=None)
    append_raw(path, "call_committed", call_id="c6", line="desk-01", path="../x", sha256="0")
    assert_fails(tmp_path, "commit.log line 17:", "not a relative path inside")


# --- verify: deletions, retention, and every file under recordings/ --------------------------


def commit_one(
    path: Path, call_id: str, retain_until: str, *more: tuple[str, dict[str, Any]]
) -> None:
    """Start and commit ``call_id`` for training until ``retain_until``, then log ``more``."""
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, call_id, "desk-01", None)
        commit(
            log, path.parent, call_id, "desk-01", {"training": retain_until}, reasons=["sampled"]
        )
        for event, fields in more:
            log.append(event, call_id=call_id, **fields)
        log.append("daemon_stopped", version="0.1.0")


def held(actor: str = "legal") -> tuple[str, dict[str, Any]]:
    return "recording_held", {"actor": actor, "reason": "litigation"}


def purged(call_id: str) -> tuple[str, dict[str, Any]]:
    return "recording_deleted", {"path": f"{DAY}/{call_id}.flac", "why": "expired"}


def test_a_sidecar_left_after_a_deletion_fails_verify(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / DAY / "c3.json").write_text("{}")
    assert_fails(tmp_path, "commit.log line 12:", "sidecar", f"{DAY}/c3.json", "still exists")


@pytest.mark.parametrize(
    "stray",
    [f"{DAY}/notes.txt", "recordings/2026/12/01/c9.flac", f"{DAY}/c9.json", "recordings/x"],
)
def test_a_file_the_log_does_not_account_for_fails_verify(tmp_path: Path, stray: str) -> None:
    build_state(tmp_path)
    (tmp_path / stray).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / stray).write_bytes(b"fLaC")
    assert_fails(tmp_path, stray, "not accounted for by the log")


def test_a_folder_linked_into_recordings_is_not_accounted_for(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / DAY / "more").symlink_to(tmp_path / "elsewhere")
    assert_fails(tmp_path, f"{DAY}/more", "not accounted for")


def test_a_leftover_temp_file_fails_verify_saying_recovery_removes_it(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / DAY / ".c6.flac.0a1b2c3d.tmp").write_bytes(b"fLaC")
    assert_fails(tmp_path, f"{DAY}/.c6.flac.0a1b2c3d.tmp", "temp file", "removes it at its next")


def test_files_of_a_call_the_live_daemon_is_still_writing_are_accounted_for(
    tmp_path: Path,
) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c6", "desk-01", None)
    (tmp_path / DAY / ".c6.flac.0a1b2c3d.tmp").write_bytes(b"fLaC")
    (tmp_path / DAY / "c6-2.flac").write_bytes(b"fLaC")
    assert verify(tmp_path, NOW).ok
    with CommitLog.open(path) as log:
        wipe(log, "c6", "desk-01", 0, why="lost_in_crash")
    assert_fails(tmp_path, f"{DAY}/.c6.flac.0a1b2c3d.tmp", "temp file")


def test_an_empty_day_folder_left_by_deletions_is_fine(tmp_path: Path) -> None:
    build_state(tmp_path)
    (tmp_path / "recordings/2026/11/27").mkdir()
    assert verify(tmp_path, NOW).ok


def test_a_recording_a_day_past_its_retention_fails_verify_unless_held(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    commit_one(path, "c1", "2026-11-20T00:00:00.000Z")
    assert verify(tmp_path, datetime(2026, 11, 21, tzinfo=UTC)).ok  # a day: the purge may lag
    late = datetime(2026, 11, 22, 3, tzinfo=UTC)
    assert_fails(
        tmp_path, "commit.log line 3:", "'c1'", "overdue by 2 days, 3:00:00",
        "retain_until is 2026-11-20T00:00:00.000Z", "not held", now=late,
    )  # fmt: skip
    with CommitLog.open(path) as log:
        log.append("recording_held", call_id="c1", actor="legal", reason="litigation")
    assert verify(tmp_path, late).ok
    with CommitLog.open(path) as log:
        log.append("recording_released", call_id="c1", actor="legal", reason="settled")
    assert_fails(tmp_path, "'c1'", "overdue", now=late)


def test_a_recording_kept_until_resolved_is_never_overdue_and_has_no_end(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path / "commit.log") as log:
        start(log, "c1", "desk-01", None)
        entry = log.append(
            "call_committed", call_id="c1", line="desk-01", purposes=["escalation"],
            retention={"escalation": None}, retain_until=None,
            **write_recording(tmp_path, "c1", b"fLaC c1"),
        )  # fmt: skip
        write_sidecar(tmp_path, entry)
    assert verify(tmp_path, datetime(2100, 1, 1, tzinfo=UTC)).ok
    purpose = report(tmp_path, NOW).to_json()["retention"]["by_purpose"]["escalation"]
    assert (purpose["no_end"], purpose["due_now"], purpose["latest_retain_until"]) == (1, 0, None)


def test_a_recording_purged_when_due_verifies(tmp_path: Path) -> None:
    commit_one(tmp_path / "commit.log", "c1", "2026-11-01T00:00:00.000Z", purged("c1"))
    (tmp_path / DAY / "c1.flac").unlink()
    (tmp_path / DAY / "c1.json").unlink()
    assert verify(tmp_path, NOW).ok


@pytest.mark.parametrize(
    ("until", "before", "needle"),
    [
        ("2099-01-01T00:00:00.000Z", [], "not due until 2099-01-01T00:00:00.000Z"),
        ("2026-11-01T00:00:00.000Z", [held("legal")], "held by 'legal'"),
    ],
    ids=["not-yet-due", "held"],
)
def test_a_premature_purge_fails_verify(
    tmp_path: Path, until: str, before: list[tuple[str, dict[str, Any]]], needle: str
) -> None:
    commit_one(tmp_path / "commit.log", "c1", until, *before, purged("c1"))
    (tmp_path / DAY / "c1.flac").unlink()
    (tmp_path / DAY / "c1.json").unlink()
    line = 4 + len(before)
    assert_fails(tmp_path, f"commit.log line {line}:", "'c1'", "purged as expired", needle)


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"why": "retention"}, "why 'retention', not expired or erased"),
        ({"why": "erased", "actor": "dpo"}, "who asked (actor) and why (reason)"),
        ({"why": "erased", "actor": "", "reason": "asked"}, "who asked (actor)"),
    ],
)
def test_a_deletion_must_say_why_and_an_erasure_who_asked(
    tmp_path: Path, fields: dict[str, Any], needle: str
) -> None:
    path = build_state(tmp_path)
    append_raw(path, "recording_deleted", call_id="c1", path=f"{DAY}/c1.flac", **fields)
    assert_fails(tmp_path, "commit.log line 16:", needle)


def test_a_retention_event_the_daemon_cannot_read_fails_verify(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "recording_extended", call_id="c1", purpose="escalation", actor="a")
    assert_fails(tmp_path, "commit.log line 16:", "recording_extended cannot be read")


# --- verify: call rules --------------------------------------------------------------------


def test_a_second_outcome_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "call_wiped", call_id="c1", line="desk-01", seconds=12.5, why="not_kept")
    assert_fails(tmp_path, "commit.log line 16:", "second outcome", "line 4")


@pytest.mark.parametrize("event", ["call_wiped", "call_committed", "call_marked"])
def test_an_event_for_a_call_never_started_fails(tmp_path: Path, event: str) -> None:
    path = build_state(tmp_path)
    append_raw(path, event, call_id="ghost", line="desk-01", seconds=1)
    assert_fails(tmp_path, "commit.log line 16:", "'ghost'", "never started")


def test_a_mark_after_the_outcome_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "call_marked", call_id="c2", line="desk-02", purpose="escalation")
    assert_fails(tmp_path, "commit.log line 16:", "after its outcome")


def test_reusing_a_call_id_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    append_raw(path, "daemon_started", version="0.1.0")
    append_raw(path, "call_started", call_id="c2", line="desk-01", agent=None)
    assert_fails(tmp_path, "commit.log line 17:", "reuses call id 'c2'", "line 5")


def test_an_open_call_in_the_live_last_run_is_fine(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c6", "desk-01", None)
    assert verify(tmp_path, NOW).ok


def test_an_open_call_in_a_stopped_run_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c6", "desk-01", None)
        log.append("daemon_stopped", version="0.1.0")
    assert_fails(tmp_path, "commit.log line 17:", "'c6' has no outcome", "stopped on line 18")


def test_an_open_call_left_by_a_crash_and_never_closed_fails(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c6", "desk-01", None)
        log.append("daemon_started", version="0.1.0")
    assert_fails(tmp_path, "commit.log line 17:", "'c6' has no outcome", "run started on line 18")


def test_unknown_events_are_accepted(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("retention_reviewed", by="dpo")
    assert verify(tmp_path, NOW).ok


# --- report --------------------------------------------------------------------------------


def test_report_totals(tmp_path: Path) -> None:
    build_state(tmp_path)
    figures = report(tmp_path).to_json()["totals"]
    assert figures == {
        "started": 5,
        "committed": 3,
        "wiped": 2,
        "lost_in_crash": 1,
        "deleted": 1,
        "open": 0,
        "by_reason": {"sampled": 2, "marked": 2},
        "by_purpose": {"escalation": 2, "training": 2},
        "seconds_kept": 59.75,
        "seconds_wiped": 30.0,
        "rolled_seconds": 2.5,
    }


def test_report_per_line_and_agent(tmp_path: Path) -> None:
    build_state(tmp_path)
    data = report(tmp_path).to_json()
    assert list(data["per_line"]) == ["desk-01", "desk-02"]
    assert list(data["per_agent"]) == ["(none)", "ann", "bob"]
    desk1, desk2 = data["per_line"]["desk-01"], data["per_line"]["desk-02"]
    assert (desk1["started"], desk1["committed"], desk1["wiped"], desk1["deleted"]) == (3, 3, 0, 1)
    assert desk1["by_reason"] == {"sampled": 2, "marked": 2}
    assert desk1["seconds_kept"] == 59.75
    assert (desk2["started"], desk2["wiped"], desk2["lost_in_crash"]) == (2, 2, 1)
    assert desk2["seconds_wiped"] == 30.0
    ann, bob, none = (data["per_agent"][a] for a in ("ann", "bob", "(none)"))
    assert (ann["started"], ann["committed"], ann["lost_in_crash"]) == (3, 2, 1)
    assert ann["by_purpose"] == {"escalation": 2, "training": 1}
    assert (bob["committed"], bob["deleted"], bob["rolled_seconds"]) == (1, 1, 2.5)
    assert bob["by_reason"] == {"sampled": 1, "marked": 0}
    assert (none["started"], none["wiped"], none["committed"]) == (1, 1, 0)


def test_report_json_keys_and_times(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    data = report(tmp_path, NOW).to_json()
    assert list(data) == [
        *("entries", "first_time", "last_time", "totals", "per_line", "per_agent"),
        *("retention", "deletions", "accesses", "per_day", "fairness", "since", "until"),
    ]
    figure_keys = list(data["totals"])
    assert figure_keys == [
        *("started", "committed", "wiped", "lost_in_crash", "deleted", "open"),
        *("by_reason", "by_purpose", "seconds_kept", "seconds_wiped", "rolled_seconds"),
    ]
    assert all(list(f) == figure_keys for f in data["per_line"].values())
    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert data["entries"] == 15
    assert (data["first_time"], data["last_time"]) == (lines[0]["time"], lines[-1]["time"])
    assert json.loads(json.dumps(data)) == data


def test_report_counts_an_open_call(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        start(log, "c6", "desk-03", "cy")
    data = report(tmp_path).to_json()
    assert data["totals"]["open"] == 1
    assert data["per_line"]["desk-03"]["open"] == 1 and data["per_agent"]["cy"]["open"] == 1
    assert data["per_line"]["desk-01"]["open"] == 0


def test_render_shows_the_figures_in_aligned_tables(tmp_path: Path) -> None:
    build_state(tmp_path)
    text = render(report(tmp_path, NOW))
    for heading in ("Totals", "Commits by reason", "Commits by purpose", "Per line", "Per agent"):
        assert f"\n{heading}\n" in text
    before_retention = text.split("\nRetention by purpose\n")[0]
    rows = {line.split()[0]: line.split() for line in before_retention.splitlines() if line.strip()}
    assert rows["desk-01"][1:12] == ["3", "3", "2", "2", "0", "0", "1", "0", "59.8", "0.0", "2.5"]
    assert rows["desk-02"][1:12] == ["2", "0", "0", "0", "2", "1", "0", "0", "0.0", "30.0", "0.0"]
    assert rows["ann"][-2:] == ["escalation=2", "training=1"]
    assert rows["(none)"][1:6] == ["1", "0", "0", "0", "1"]
    assert rows["sampled"] == ["sampled", "2"] and rows["training"] == ["training", "2"]
    header, *body = text.split("\nPer line\n")[1].split("\n\n")[0].splitlines()[1:]
    end = header.index("rolled s") + len("rolled s")
    assert [row[:end].split()[-1] for row in body] == ["2.5", "0.0"]
    assert all(row[end] == " " for row in body)


def test_the_report_shows_retention_by_purpose_and_who_deleted_what(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        log.append(
            "recording_resolved", call_id="c1", purpose="escalation",
            retain_until="2026-12-29T00:00:00.000Z", actor="lead", reason="settled",
        )  # fmt: skip
        log.append("recording_held", call_id="c5", actor="legal", reason="litigation")
        for call_id, until in (("c6", "2026-11-01T00:00:00.000Z"), ("c7", "2026-10-01T00:00Z")):
            start(log, call_id, "desk-02", None)
            commit(log, tmp_path, call_id, "desk-02", {"training": until}, reasons=["sampled"])
        log.append("recording_deleted", call_id="c7", path=f"{DAY}/c7.flac", why="expired")
    data = report(tmp_path, NOW).to_json()
    assert data["retention"] == {
        "as_of": "2026-11-29T00:00:00.000Z",
        "totals": {
            "recordings": 3,
            "held": 1,
            "due_now": 1,
            "overdue": 1,
            "deleted": {"expired": 1, "erased": 1},
        },
        "by_purpose": {
            "escalation": {
                "recordings": 2, "held": 1, "resolved": 1, "due_now": 0, "no_end": 0,
                "earliest_retain_until": "2026-12-29T00:00:00.000Z",
                "latest_retain_until": "2028-11-28T10:00:00.000Z",
            },
            "training": {
                "recordings": 2, "held": 1, "resolved": 0, "due_now": 1, "no_end": 0,
                "earliest_retain_until": "2026-11-01T00:00:00.000Z",
                "latest_retain_until": TRAIN,
            },
        },
    }  # fmt: skip
    erased, expired = data["deletions"]
    times = [e["time"] for e in map(json.loads, path.read_bytes().splitlines())]
    assert erased == {
        "log_line": 12, "call_id": "c3", "why": "erased", "time": times[11],
        "actor": "dpo", "reason": "the caller asked", "premature": False,
    }  # fmt: skip
    assert expired == {
        "log_line": 23, "call_id": "c7", "why": "expired", "time": times[22],
        "actor": None, "reason": None, "premature": False,
    }  # fmt: skip
    text = render(report(tmp_path, NOW))
    for heading in ("Retention by purpose", "Retention totals", "Deletions"):
        assert f"\n{heading}\n" in text
    assert "\nretention as of  2026-11-29T00:00:00.000Z\n" in text
    tail = text.split("\nRetention by purpose\n")[1]
    rows = {line.split()[0]: line.split() for line in tail.splitlines() if line.strip()}
    assert rows["escalation"][1:] == [
        *("2", "1", "1", "0", "0"),
        "2026-12-29T00:00:00.000Z",
        "2028-11-28T10:00:00.000Z",
    ]
    assert rows["training"][1:6] == ["2", "1", "0", "1", "0"]
    assert rows["12"] == ["12", "c3", "erased", times[11], "dpo", "the", "caller", "asked"]
    assert rows["23"] == ["23", "c7", "expired", times[22], "-", "-"]
    deleted = [line.split() for line in tail.splitlines() if line.startswith("deleted: ")]
    assert deleted == [["deleted:", "expired", "1"], ["deleted:", "erased", "1"]]


def test_report_refuses_a_broken_chain(tmp_path: Path) -> None:
    path = build_state(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'"seconds":40', b'"seconds":41'))
    with pytest.raises(CommitLogError, match="line 8"):
        report(tmp_path)


def test_report_on_a_missing_log_raises(tmp_path: Path) -> None:
    with pytest.raises(CommitLogError, match="missing"):
        report(tmp_path)


def test_verify_refuses_a_0_byte_flac_that_its_log_line_vouches_for(tmp_path: Path) -> None:
    build_state(tmp_path)
    flac = tmp_path / DAY / "c5.flac"
    flac.write_bytes(b"")
    digest = hashlib.sha256(b"").hexdigest()
    sidecar = tmp_path / DAY / "c5.json"
    sidecar.write_text(
        sidecar.read_text().replace(json.loads(sidecar.read_text())["sha256"], digest)
    )
    log = tmp_path / "commit.log"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    rebuilt = []
    prev = GENESIS
    for entry in entries:
        if entry.get("call_id") == "c5" and entry["event"] == "call_committed":
            entry["sha256"] = digest
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
        rebuilt.append(json.dumps(entry, ensure_ascii=False, separators=(",", ":")))
    log.write_text("\n".join(rebuilt) + "\n")
    assert_fails(tmp_path, "c5.flac", "is not a FLAC file (0 bytes)")


def test_a_state_dir_of_an_s3_host_points_the_auditor_to_the_bucket(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path / "commit.log") as log:
        start(log, "c1", "desk-01", None)
        log.append(
            "call_committed", call_id="c1", line="desk-01", purposes=["escalation"],
            path="s3://hindsight/rec-01/recordings/2026/11/28/c1.flac", sha256="ab" * 32,
            version_id="v1", sidecar_version_id="v2", retain_until=TRAIN,
            retention={"escalation": TRAIN}, reasons=["marked"],
        )  # fmt: skip
    problem = assert_fails(tmp_path, "line 2: this recording is in an object store")
    assert "hindsight audit verify --s3 s3://hindsight/PREFIX" in problem
