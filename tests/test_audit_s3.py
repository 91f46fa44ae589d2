"""``hindsight audit verify --s3`` and ``audit report --s3`` against a real S3 store with Object
Lock (SeaweedFS, run by ``tests.s3server``): a floor of two hosts in one bucket, laid out as
/work/notes/s3-layout.md says, verified from the bucket alone; then what an attacker can do.

The hosts write with the host's credentials (no governance bypass); the tampering is done
with the admin's, who may bypass GOVERNANCE: what a host's credentials are refused is
asserted where it matters.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hindsight.client.cli import main
from hindsight.clock import iso
from hindsight.commitlog import RESERVED_FIELDS, CommitLog
from hindsight.daemon.shipper import Shipper
from hindsight.objectstore import Credentials, ObjectStore, StoreRefused
from hindsight.segments import SHA256_META, parse_segment_key, segment_key
from tests.s3server import S3Credentials, SeaweedServer, lock_bucket, seaweed

__all__ = ["lock_bucket", "seaweed"]  # fixtures used by name

DAY = "recordings/2026/11/28"
HOSTS = ("rec-01/", "rec-02/")


def creds(who: S3Credentials) -> Credentials:
    return Credentials(who.access_key, who.secret_key)


@dataclass
class Host:
    """One recorder host: its log (on the test's disk), its view of the bucket, what it
    committed (call id -> the version ids its call_committed names)."""

    prefix: str
    store: ObjectStore
    admin: ObjectStore
    log_path: Path
    commits: dict[str, dict[str, str]] = field(default_factory=dict)

    def key(self, call_id: str, suffix: str = ".flac.age") -> str:
        return f"{DAY}/{call_id}{suffix}"


def commit(
    host: Host, log: CommitLog, call_id: str, line: str, until: datetime, marks: str
) -> None:
    """Upload a recording and its sidecar as the s3 backend does, then log call_committed."""
    audio = b"age-encryption.org/v1\n" + f"{host.prefix}{call_id}".encode() * 300
    recording = host.store.put_stream(host.key(call_id), io.BytesIO(audio), until)
    fields: dict[str, Any] = {
        "call_id": call_id,
        "line": line,
        "agent": "ann",
        "reasons": ["marked"],
        "purposes": [marks],
        "retention": {marks: iso(until)},
        "retain_until": iso(until),
        "path": host.store.url(host.key(call_id)),
        "sha256": recording.sha256,
        "seconds": 12.5,
        "rolled_seconds": 0.0,
        "lost_seconds": 0.0,
        "status_flags": 0,
        "ended": iso(datetime.now(UTC)),
        "caller_ref": None,
    }
    sidecar = {**fields, "samplerate": 16000, "marks": [{"purpose": marks, "note": None}]}
    side = host.store.put_stream(
        host.key(call_id, ".json"), io.BytesIO(json.dumps(sidecar).encode()), until
    )
    entry = log.append(
        "call_committed",
        **fields,
        version_id=recording.version_id,
        sidecar_version_id=side.version_id,
    )
    assert not RESERVED_FIELDS & set(fields)
    host.commits[call_id] = {
        "recording": recording.version_id,
        "sidecar": side.version_id,
        "seq": str(entry["seq"]),
    }


def build_host(
    server: SeaweedServer, bucket: str, prefix: str, state: Path, *, delete: bool = True
) -> Host:
    """c1 kept; c2 wiped; c3 kept and held; c4 kept then erased (its versions deleted with the
    bypass an erasure credential holds, unless ``delete`` is False); the daemon stops."""
    host = Host(
        prefix,
        ObjectStore(server.endpoint, bucket, prefix, credentials=creds(server.host)),
        ObjectStore(server.endpoint, bucket, prefix, credentials=creds(server.admin)),
        state / "commit.log",
    )
    until = datetime.now(UTC) + timedelta(days=30)
    with CommitLog.open(host.log_path) as log:
        log.append("daemon_started", version="0.3.0")
        for number in (1, 2, 3, 4):
            call_id, line = f"c{number}", f"desk-0{2 - number % 2}"
            log.append("call_started", call_id=call_id, line=line, agent="ann")
            if number == 2:
                log.append("call_wiped", call_id=call_id, line=line, seconds=30, why="not_kept")
                continue
            log.append("call_marked", call_id=call_id, line=line, purpose="training")
            commit(host, log, call_id, line, until, "training")
        log.append("recording_held", call_id="c3", actor="dpo", reason="court case")
        for kind, suffix in (("recording", ".flac.age"), ("sidecar", ".json")):
            host.store.set_legal_hold(host.key("c3", suffix), host.commits["c3"][kind], True)
        log.append(
            "recording_deleted",
            call_id="c4",
            path=host.store.url(host.key("c4")),
            why="erased",
            actor="dpo",
            reason="erasure request",
        )
        if delete:
            for kind, suffix in (("recording", ".flac.age"), ("sidecar", ".json")):
                host.admin.delete_version(
                    host.key("c4", suffix), host.commits["c4"][kind], bypass_governance=True
                )
        log.append("daemon_stopped", version="0.3.0")
        Shipper(host.store, host.log_path, max_lines=5).ship(log.last_seq)
    return host


def build_floor(server: SeaweedServer, bucket: str, tmp: Path, **options: bool) -> list[Host]:
    hosts = []
    for prefix in HOSTS:
        state = tmp / prefix.strip("/")
        state.mkdir()
        hosts.append(build_host(server, bucket, prefix, state, **options))
    return hosts


def run(
    capsys: pytest.CaptureFixture[str], server: SeaweedServer, tmp: Path, *args: str
) -> tuple[int, str, str]:
    """``hindsight audit VERB --s3 … --s3-endpoint … --s3-credentials-file FILE`` as the host."""
    file = tmp / "auditor.credentials"
    file.write_text(server.host.ini())
    code = main(
        ["audit", *args, "--s3-endpoint", server.endpoint, "--s3-credentials-file", str(file)]
    )
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def floor(seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path) -> list[Host]:
    return build_floor(seaweed, lock_bucket, tmp_path)


def segments(host: Host) -> list[tuple[int, int]]:
    spans = [parse_segment_key(key) for key in host.store.keys("log/")]
    return sorted(span for span in spans if span is not None)


def only_version(store: ObjectStore, key: str) -> str:
    return next(v.version_id for v in store.versions(key) if not v.delete_marker)


# --- verify: the intact floor ----------------------------------------------------------------


def test_verify_passes_over_the_floor_and_one_host(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, out, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    entries = sum(1 for _ in floor[0].log_path.open())
    assert lines[0].startswith(
        f"ok: rec-01/: {entries} log entries chained in 3 segment(s), 2 recordings intact"
    )
    assert lines[1].startswith("ok: rec-02/:")
    assert lines[2] == (
        f"ok: s3://{lock_bucket}/: 2 host(s), {2 * entries} log entries, 4 recordings intact, "
        "0 sampling draws recomputed"
    )
    code, out, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}/rec-02")
    assert code == 0
    assert out.splitlines()[0].startswith("ok: rec-02/:")
    assert len(out.splitlines()) == 2


def test_the_floor_is_found_under_a_deeper_prefix(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "a"
    state.mkdir()
    build_host(seaweed, lock_bucket, "site-a/rec-07/", state)
    code, out, _ = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}/site-a/")
    assert code == 0
    assert out.startswith("ok: site-a/rec-07/:")


# --- verify: what an attacker can do to a recording -------------------------------------------


def test_a_new_version_never_alters_the_logged_one_but_is_not_accounted_for(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    host = floor[1]
    key, logged = host.key("c1"), host.commits["c1"]["recording"]
    # With the host's credentials, the logged version cannot be deleted...
    with pytest.raises(StoreRefused, match="AccessDenied"):
        host.store.delete_version(key, logged)
    # ...but a PUT makes a second version, and a plain DELETE adds a marker in front of it.
    forged = host.store.put_stream(key, io.BytesIO(b"age-encryption.org/v1\nforged"), None)
    host.store.client.delete_object(Bucket=lock_bucket, Key=host.store.full_key(key))
    code, out, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    assert out.startswith("ok: rec-01/:")  # the other host holds
    stray = f"s3://{lock_bucket}/rec-02/{key} version {forged.version_id}"
    assert f"host rec-02/: {stray} is not accounted for" in err
    # The logged version is intact: reading it by its id gives the logged bytes.
    with host.store.get_stream(key, logged) as reader:
        assert hashlib.sha256(reader.read()).hexdigest() != forged.sha256


@pytest.mark.parametrize("replace", [False, True], ids=["deleted", "deleted-and-replaced"])
def test_a_recording_deleted_behind_the_log_fails_naming_host_and_line(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], replace: bool,
) -> None:  # fmt: skip
    host = floor[0]
    key, logged = host.key("c1"), host.commits["c1"]["recording"]
    host.admin.delete_version(key, logged, bypass_governance=True)
    if replace:
        host.admin.put_stream(key, io.BytesIO(b"age-encryption.org/v1\nother"), None)
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    seq = host.commits["c1"]["seq"]
    assert "host rec-01/: segment log/" in err
    assert (
        f"commit.log line {seq}: recording s3://{lock_bucket}/rec-01/{key} version {logged}" in err
    )
    assert "is missing (deleted behind the log's back)" in err


def test_a_released_hold_or_a_recording_that_outlived_its_deletion_fails(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosts = build_floor(seaweed, lock_bucket, tmp_path, delete=False)
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    assert "host rec-01/: segment log/" in err
    assert f"recording s3://{lock_bucket}/rec-01/{DAY}/c4.flac.age version" in err
    assert "is logged as deleted (erased) but still exists" in err

    other = seaweed.new_bucket()
    state = tmp_path / "held"
    state.mkdir()
    host = build_host(seaweed, other, "rec-01/", state)
    host.store.set_legal_hold(host.key("c3"), host.commits["c3"]["recording"], False)
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{other}/")
    assert code == 1
    assert "has its legal hold off, but the log holds it (recording_held)" in err
    assert hosts  # the first floor stays as it was


# --- verify: what an attacker can do to the shipped log --------------------------------------


def test_a_segment_altered_fails(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    host = floor[1]
    key = segment_key(6, 10)
    version = only_version(host.store, key)
    with host.store.get_stream(key, version) as reader:
        data = reader.read().replace(b'"agent":"ann"', b'"agent":"bob"', 1)
    assert b"bob" in data
    host.admin.delete_version(key, version, bypass_governance=True)
    host.admin.put_stream(
        key, io.BytesIO(data), None, metadata={SHA256_META: hashlib.sha256(data).hexdigest()}
    )
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    assert f"host rec-02/: segment s3://{lock_bucket}/rec-02/{key}: commit.log line" in err
    assert "hash does not match the line's content (altered)" in err


def test_a_rewritten_second_version_of_a_segment_fails(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    host = floor[0]
    key = segment_key(1, 5)
    host.store.put_stream(key, io.BytesIO(b"{}\n"), None)  # the host can add a version
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    assert "has a later version" in err and "a rewrite of the shipped log" in err


@pytest.mark.parametrize("which", [(1, 5), (6, 10)], ids=["first", "middle"])
def test_a_segment_deleted_fails_naming_the_lines(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], which: tuple[int, int],
) -> None:  # fmt: skip
    host = floor[1]
    key = segment_key(*which)
    host.admin.delete_version(key, only_version(host.store, key), bypass_governance=True)
    code, out, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}")
    assert code == 1
    first, last = which
    assert f"host rec-02/: lines {first}..{last} of commit.log are missing" in err
    assert out.startswith("ok: rec-01/:")


def test_objects_newer_than_the_shipped_log_are_counted_apart(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    host = floor[0]
    host.store.put_stream(host.key("c9"), io.BytesIO(b"age-encryption.org/v1\n"), None)
    code, out, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{lock_bucket}/rec-01/")
    assert code == 0, (out, err)
    assert "1 newer object(s) not in the shipped log yet" in out


# --- report ----------------------------------------------------------------------------------


def test_report_sums_the_floor(
    seaweed: SeaweedServer, lock_bucket: str, floor: list[Host], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, out, _ = run(capsys, seaweed, tmp_path, "report", "--s3", f"s3://{lock_bucket}", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["floor"] == f"s3://{lock_bucket}/"
    assert set(report["hosts"]) == set(HOSTS)
    assert report["hosts"]["rec-01/"]["totals"]["started"] == 4
    totals = report["totals"]
    assert (totals["started"], totals["committed"], totals["wiped"], totals["deleted"]) == (
        8,
        6,
        2,
        2,
    )
    assert totals["seconds_kept"] == 6 * 12.5
    assert set(report["per_line"]) == {f"{h}desk-0{n}" for h in HOSTS for n in (1, 2)}
    assert report["per_agent"]["ann"]["started"] == 8  # one person across the floor
    assert report["retention"]["totals"]["recordings"] == 4
    assert report["retention"]["totals"]["held"] == 2
    assert report["retention"]["by_purpose"]["training"]["recordings"] == 4
    assert sorted(d["call_id"] for d in report["deletions"]) == ["rec-01/c4", "rec-02/c4"]
    assert report["entries"] == 2 * report["hosts"]["rec-01/"]["entries"]
    code, out, _ = run(capsys, seaweed, tmp_path, "report", "--s3", f"s3://{lock_bucket}")
    assert code == 0
    assert out.startswith(f"Floor s3://{lock_bucket}/: 2 host(s)\n  rec-01/:")


# --- the command line ------------------------------------------------------------------------


def test_clear_errors(
    seaweed: SeaweedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", "http://bucket/x")
    assert code == 2 and "is not an s3:// URL" in err
    plain = seaweed.new_bucket(object_lock=False)
    code, _, err = run(capsys, seaweed, tmp_path, "verify", "--s3", f"s3://{plain}")
    assert code == 1 and "does not have Object Lock enabled" in err
    file = tmp_path / "auditor.credentials"
    code = main(
        ["audit", "verify", "--s3", "s3://hindsight", "--s3-endpoint", "http://127.0.0.1:9",
         "--s3-credentials-file", str(file)]
    )  # fmt: skip
    assert code == 3 and "cannot be reached" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["audit", "report", "--s3", "s3://hindsight", "--state-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    code = main(["audit", "verify", "--state-dir", str(tmp_path), "--s3-endpoint", "http://x"])
    assert code == 2 and "go with --s3" in capsys.readouterr().err
