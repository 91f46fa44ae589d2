"""Tampering with a finished state dir, and repairing a log a crash tore.

The state dir is made by the real daemon (a marked call, an extension, a clean stop); each
test tampers with a copy of it. ``hindsight.audit.verify`` must see every edit of a sidecar
field the log also holds, and an emptied log; ``hindsight audit repair`` must move a torn
tail aside, for the daemon to log at its next start, and refuse anything else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hindsight.audit import repair as repair_module
from hindsight.audit import verify
from hindsight.audit.repair import repair
from hindsight.commitlog import CommitLog, read_chain
from hindsight.daemon.recovery import settle_open_calls
from hindsight.daemon.repaired import RECORD_PREFIX, TORN_PREFIX, log_repairs
from hindsight.errors import CommitLogError
from tests.harness import Daemon, cli
from tests.test_recovery import crashed_log, landed_recording

# Half a line, as a crash leaves it: the start of the next entry, cut mid-way.
TORN = b'{"seq":9,"time":"2026-11-29T10:00:00.000Z","event":"call_sta'


@dataclass(frozen=True)
class Finished:
    """A state dir the daemon left after a clean stop."""

    state: Path
    call_id: str
    committed: dict[str, Any]  # its call_committed line
    extended: str  # the call's retain_until once extended, later in the log


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    tmp = tmp_path_factory.mktemp("finished")
    with Daemon(tmp) as d:
        call_id = d.ok({"op": "start", "line": "desk-01", "agent": "ann"})["call_id"]
        time.sleep(0.3)  # some audio, or the call is wiped as no_audio
        d.ok({"op": "mark", "line": "desk-01", "note": "shouting"})
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        (committed,) = d.wait_for_event("call_committed")
        extend = {"call_id": call_id, "purpose": "escalation", "days": 1000}
        extended = d.ok({"op": "extend", **extend, "actor": "qa", "reason": "QA-7"})
    assert d.proc is not None and d.proc.returncode == 0
    assert extended["retain_until"] > committed["retain_until"]
    return Finished(d.state, call_id, committed, extended["retain_until"])


@pytest.fixture
def state(finished: Finished, tmp_path: Path) -> Path:
    """A copy of the finished state dir, for one test to tamper with (modes kept)."""
    copy = tmp_path / "state"
    shutil.copytree(finished.state, copy)
    return copy


def sidecar_of(state: Path, finished: Finished) -> Path:
    recording: str = finished.committed["path"]
    return (state / recording).with_name(f"{finished.call_id}.json")


def problem(state: Path) -> str:
    result = verify(state)
    assert not result.ok and result.problem is not None
    return result.problem


def log_of(state: Path) -> Path:
    return state / "commit.log"


def made_by_repair(state: Path) -> list[str]:
    return sorted(p.name for p in state.iterdir() if p.name.startswith((TORN_PREFIX, ".")))


# --- verify: sidecars ------------------------------------------------------------------------


def test_the_finished_state_verifies_though_the_log_extended_its_retention(
    state: Path, finished: Finished
) -> None:
    """The sidecar keeps the commit's retain_until; the log's later extension must not count."""
    sidecar = json.loads(sidecar_of(state, finished).read_text())
    assert sidecar["retain_until"] == finished.committed["retain_until"] != finished.extended
    result = verify(state)
    assert result.ok, result.problem
    assert result.recordings == 1


Edit = Callable[[dict[str, Any], Finished], object]
EDITS: dict[str, Edit] = {
    # The ledger's value now, after the extension: still not what the commit said.
    "retain_until": lambda sidecar, f: f.extended,
    "purposes": lambda sidecar, f: [*sidecar["purposes"], "training"],
    "marks": lambda sidecar, f: [
        *sidecar["marks"],
        {"purpose": "training", "time": sidecar["end"], "note": None},
    ],
    "reasons": lambda sidecar, f: ["sampled"],
}


@pytest.mark.parametrize("field", list(EDITS))
def test_an_edited_sidecar_field_fails_verify_naming_it(
    state: Path, finished: Finished, field: str
) -> None:
    path = sidecar_of(state, finished)
    sidecar = json.loads(path.read_text())
    was = sidecar[field]
    sidecar[field] = EDITS[field](sidecar, finished)
    path.write_text(json.dumps(sidecar, indent=2))
    seq, call = finished.committed["seq"], repr(finished.call_id)
    if field == "marks":
        expected = (
            f"sidecar of call {call} says marks for ['escalation', 'training'] but commit.log "
            f"marks it for ['escalation'] (its call_marked lines before line {seq})"
        )
    else:
        expected = (
            f"sidecar of call {call} says {field} {sidecar[field]!r} "
            f"but commit.log line {seq} says {was!r}"
        )
    assert problem(state) == expected


def test_a_sidecar_without_a_field_its_log_line_holds_fails(
    state: Path, finished: Finished
) -> None:
    path = sidecar_of(state, finished)
    sidecar = json.loads(path.read_text())
    del sidecar["agent"]
    path.write_text(json.dumps(sidecar))
    assert problem(state) == (
        f"sidecar of call {finished.call_id!r} has no agent, yet commit.log line "
        f"{finished.committed['seq']} says 'ann'"
    )


def test_a_type_change_is_an_edit_too(state: Path, finished: Finished) -> None:
    path = sidecar_of(state, finished)
    sidecar = json.loads(path.read_text())
    assert sidecar["status_flags"] == 0
    sidecar["status_flags"] = False  # equal in Python, not in JSON
    path.write_text(json.dumps(sidecar))
    assert "says status_flags False but" in problem(state)


def test_a_sidecar_from_before_ended_and_caller_ref_verifies_when_recovered(
    tmp_path: Path,
) -> None:
    """An old sidecar lacks them; recovery logs their defaults, which then match."""
    crashed_log(tmp_path, "c1")
    landed_recording(tmp_path, "c1")
    path = tmp_path / "recordings/2026/11/28/c1.json"
    old = json.loads(path.read_text())
    del old["ended"], old["caller_ref"]
    path.write_text(json.dumps(old))
    with CommitLog.open(log_of(tmp_path)) as log:
        log.append("daemon_started", version="test")
        settle_open_calls(log, tmp_path)
    (committed,) = [e for e in read_chain(log_of(tmp_path)) if e["event"] == "call_committed"]
    assert committed["recovered"] is True and committed["ended"] is None
    assert verify(tmp_path).ok, verify(tmp_path).problem


# --- verify: an emptied or cut log ---------------------------------------------------------


def test_an_emptied_log_beside_recordings_fails(state: Path) -> None:
    log_of(state).write_bytes(b"")
    assert problem(state) == "commit.log is empty, yet recordings/ holds 2 files"


def test_a_log_cut_short_by_whole_lines_before_the_call_fails(
    state: Path, finished: Finished
) -> None:
    """Cut before the call started: its recording is accounted for by nothing. (A cut after
    the commit goes unseen here; a witness's checkpoints catch that.)"""
    lines = log_of(state).read_bytes().splitlines(keepends=True)
    log_of(state).write_bytes(b"".join(lines[:2]))
    assert problem(state) == (
        f"{finished.committed['path']} is not accounted for by the log: it is not the "
        "recording or sidecar of a committed call that was not deleted since"
    )


# --- repair ----------------------------------------------------------------------------------


def test_a_torn_log_is_repaired_and_the_daemon_logs_the_repair_once(
    state: Path, tmp_path: Path
) -> None:
    whole = log_of(state).read_bytes()
    whole_lines = len(whole.splitlines())
    log_of(state).write_bytes(whole + TORN)
    d = Daemon(tmp_path)
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(15) == 1
    assert f"run `hindsight audit repair --state-dir {state}`" in d.stderr()
    assert log_of(state).read_bytes() == whole + TORN

    done = cli("audit", "repair", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    (kept,) = state.glob(f"{TORN_PREFIX}*")
    assert re.fullmatch(rf"commit\.log\.torn-\d{{8}}T\d{{6}}Z-{whole_lines + 1}", kept.name)
    assert kept.read_bytes() == TORN
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert log_of(state).read_bytes() == whole
    assert f"moved {len(TORN)} torn byte(s)" in done.stdout and kept.name in done.stdout
    assert len(list(state.glob(f"{RECORD_PREFIX}*"))) == 1

    for _ in range(2):  # the second start must not log it again
        d.start()
        assert d.stop() == 0
    entries = list(read_chain(log_of(state)))
    repaired = [e for e in entries if e["event"] == "log_repaired"]
    assert len(repaired) == 1
    (entry,) = repaired
    assert entries[entry["seq"] - 2]["event"] == "daemon_started"  # the line just before
    assert entry["seq"] == whole_lines + 2
    fields = {key: entry[key] for key in ("torn_bytes", "torn_sha256", "kept_as", "after_seq")}
    assert fields == {
        "torn_bytes": len(TORN),
        "torn_sha256": hashlib.sha256(TORN).hexdigest(),
        "kept_as": kept.name,
        "after_seq": whole_lines,
    }
    assert not list(state.glob(f"{RECORD_PREFIX}*"))
    checked = cli("audit", "verify", "--state-dir", str(state))
    assert checked.returncode == 0, checked.stderr


def repaired_and_logged(state: Path) -> Path:
    """Tear the log, repair it, and log the repair as the daemon does; the kept copy."""
    with log_of(state).open("ab") as handle:
        handle.write(TORN)
    done = repair(state)
    with CommitLog.open(log_of(state)) as log:
        log.append("daemon_started", version="test")
        log_repairs(log, state)
        log.append("daemon_stopped", version="test")
    return state / done.repair.kept_as


def test_verify_accepts_a_logged_repair_whose_copy_is_kept(state: Path) -> None:
    repaired_and_logged(state)
    assert verify(state).ok, verify(state).problem


@pytest.mark.parametrize("change", ["removed", "altered"])
def test_verify_fails_when_the_torn_bytes_kept_for_the_auditor_are_not(
    state: Path, change: str
) -> None:
    kept = repaired_and_logged(state)
    seq = len(log_of(state).read_bytes().splitlines()) - 1
    if change == "removed":
        kept.unlink()
        needle = f"commit.log line {seq}: {kept.name}, the torn tail a repair moved aside, cannot"
    else:
        kept.write_bytes(TORN.replace(b"call_sta", b"call_end"))
        needle = f"commit.log line {seq}: {kept.name} is not the torn tail the repair moved aside"
    assert problem(state).startswith(needle)


def test_repair_refuses_a_whole_log(state: Path) -> None:
    before = log_of(state).read_bytes()
    refused = cli("audit", "repair", "--state-dir", str(state))
    assert refused.returncode == 1
    assert refused.stderr.startswith("hindsight: ") and "is whole" in refused.stderr
    assert log_of(state).read_bytes() == before and made_by_repair(state) == []


def alter_a_line(lines: list[bytes]) -> None:
    lines[4] = lines[4].replace(b'"agent":"ann"', b'"agent":"bob"')


def remove_a_line(lines: list[bytes]) -> None:
    del lines[3]


def insert_garbage(lines: list[bytes]) -> None:
    lines.insert(3, b"not json\n")


@pytest.mark.parametrize("damage", [alter_a_line, remove_a_line, insert_garbage])
def test_repair_refuses_damage_in_the_middle_even_with_a_torn_tail(
    state: Path, damage: Callable[[list[bytes]], None]
) -> None:
    lines = log_of(state).read_bytes().splitlines(keepends=True)
    damage(lines)
    before = b"".join(lines) + TORN
    log_of(state).write_bytes(before)
    refused = cli("audit", "repair", "--state-dir", str(state))
    assert refused.returncode == 1
    assert "not repaired: only a tail torn by a crash is" in refused.stderr
    assert "commit.log line 4:" in refused.stderr or "commit.log line 5:" in refused.stderr
    assert log_of(state).read_bytes() == before and made_by_repair(state) == []


def test_repair_refuses_a_log_a_running_daemon_holds(state: Path, tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        refused = cli("audit", "repair", "--state-dir", str(state))
        assert d.ok({"op": "ping"})
    assert refused.returncode == 1
    assert "is held by a running daemon" in refused.stderr
    assert made_by_repair(state) == []
    assert not [e for e in read_chain(log_of(state)) if e["event"] == "log_repaired"]


def test_a_repair_cut_short_before_the_cut_is_finished_by_running_it_again(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = log_of(state).read_bytes()
    log_of(state).write_bytes(whole + TORN)

    def power_cut(fd: int, offset: int, state_dir: Path) -> None:
        raise OSError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(repair_module, "_cut", power_cut)
        with pytest.raises(CommitLogError, match="power cut"):
            repair(state)
    assert log_of(state).read_bytes() == whole + TORN
    done = repair(state)
    assert done.resumed
    assert log_of(state).read_bytes() == whole
    kept = [p.name for p in state.glob(f"{TORN_PREFIX}*")]
    assert kept == [done.repair.kept_as]
    assert len(list(state.glob(f"{RECORD_PREFIX}*"))) == 1


# --- the daemon's side -----------------------------------------------------------------------


def test_a_repair_not_logged_before_a_crash_is_logged_at_the_next_start(state: Path) -> None:
    with log_of(state).open("ab") as handle:
        handle.write(TORN)
    done = repair(state)
    log = CommitLog.open(log_of(state))
    log.close()  # the daemon died: its append fails
    with pytest.raises(CommitLogError):
        log_repairs(log, state)
    assert len(list(state.glob(f"{RECORD_PREFIX}*"))) == 1
    with CommitLog.open(log_of(state)) as log:
        log.append("daemon_started", version="test")
        log_repairs(log, state)
    (entry,) = [e for e in read_chain(log_of(state)) if e["event"] == "log_repaired"]
    assert entry["kept_as"] == done.repair.kept_as
    assert not list(state.glob(f"{RECORD_PREFIX}*"))


def test_an_unreadable_repair_record_never_stops_the_daemon(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = state / f"{RECORD_PREFIX}20261129T100000Z-9.json"
    record.write_text('{"torn_bytes": "many"}')
    before = log_of(state).read_bytes()
    with caplog.at_level(logging.ERROR), CommitLog.open(log_of(state)) as log:
        log_repairs(log, state)
    assert log_of(state).read_bytes() == before
    assert record.exists()
    assert "cannot be read, left in place" in caplog.text
