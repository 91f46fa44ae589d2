from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hindsight import audit
from hindsight.commitlog import CommitLog, read_chain
from hindsight.daemon.recovery import settle_open_calls
from hindsight.record import COMMITTED_FIELDS


def landed_recording(state: Path, call_id: str) -> dict[str, object]:
    folder = state / "recordings/2026/11/28"
    folder.mkdir(parents=True, exist_ok=True)
    audio = b"fLaC pretend audio of " + call_id.encode()
    (folder / f"{call_id}.flac").write_bytes(audio)
    fields: dict[str, object] = {key: None for key in COMMITTED_FIELDS}
    fields.update(
        call_id=call_id,
        line="desk-01",
        reasons=["marked"],
        purposes=["escalation"],
        retention={"escalation": "2028-11-28T00:00:00Z"},
        retain_until="2028-11-28T00:00:00Z",
        path=f"recordings/2026/11/28/{call_id}.flac",
        sha256=hashlib.sha256(audio).hexdigest(),
    )
    (folder / f"{call_id}.json").write_text(json.dumps({**fields, "samplerate": 16000}))
    return fields


def crashed_log(state: Path, *call_ids: str) -> None:
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="test")
        for call_id in call_ids:
            log.append("call_started", call_id=call_id, line="desk-01", agent=None)


def test_a_recording_that_landed_before_the_crash_is_committed_not_lost(tmp_path: Path) -> None:
    crashed_log(tmp_path, "c1")
    fields = landed_recording(tmp_path, "c1")
    with CommitLog.open(tmp_path / "commit.log") as log:
        log.append("daemon_started", version="test")
        settle_open_calls(log, tmp_path)
        assert not log.open_calls
    (entry,) = [e for e in audit_entries(tmp_path) if e["event"] == "call_committed"]
    assert entry["recovered"] is True
    assert {k: entry[k] for k in COMMITTED_FIELDS} == fields
    assert audit.verify(tmp_path).ok


def test_partial_files_of_a_call_lost_in_a_crash_are_removed(tmp_path: Path) -> None:
    crashed_log(tmp_path, "c2", "c3")
    folder = tmp_path / "recordings/2026/11/28"
    folder.mkdir(parents=True)
    (folder / ".c2.flac.1a2b3c4d.tmp").write_bytes(b"half a recording")
    (folder / "c3.flac").write_bytes(b"a recording without its sidecar")
    landed_recording(tmp_path, "other")  # not an open call: must stay
    with CommitLog.open(tmp_path / "commit.log") as log:
        log.append("daemon_started", version="test")
        settle_open_calls(log, tmp_path)
    wiped = [e for e in audit_entries(tmp_path) if e["event"] == "call_wiped"]
    assert [(e["call_id"], e["why"]) for e in wiped] == [
        ("c2", "lost_in_crash"),
        ("c3", "lost_in_crash"),
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["other.flac", "other.json"]


def audit_entries(state: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state / "commit.log").read_text().splitlines()]


def test_a_sidecar_missing_a_field_is_not_taken_for_a_landed_recording(tmp_path: Path) -> None:
    crashed_log(tmp_path, "c1")
    landed_recording(tmp_path, "c1")
    sidecar = tmp_path / "recordings/2026/11/28/c1.json"
    data = json.loads(sidecar.read_text())
    del data["retention"]
    sidecar.write_text(json.dumps(data))
    with CommitLog.open(tmp_path / "commit.log") as log:
        settle_open_calls(log, tmp_path)
    assert not sidecar.exists()
    (outcome,) = [e for e in read_chain(tmp_path / "commit.log") if e["event"] == "call_wiped"]
    assert outcome["why"] == "lost_in_crash"
