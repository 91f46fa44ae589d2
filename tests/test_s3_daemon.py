"""The S3 backend through the real daemon, against a real SeaweedFS server with Object Lock.

One server serves the module (a start costs seconds); the fault tests kill it and start it
again on the same folder and ports, and the ``store`` fixture makes sure it runs for the next.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest

from hindsight.audit.s3 import verify_host
from hindsight.clock import parse_iso
from hindsight.objectstore import (
    Credentials,
    ObjectMissing,
    ObjectStore,
    StoreRefused,
    lock_date,
)
from tests.harness import Daemon, cli
from tests.s3server import S3Credentials, SeaweedServer, running_server
from tests.test_lifecycle import kept_call
from tests.test_worker import wait_until

PREFIX = "rec-01/"
AGE_MAGIC = b"age-encryption.org/v1"
# training: about 17 s after a call (locked that long in the store); escalation: a day.
PURPOSES = """
[retention]
purge_interval_seconds = 1

[purposes.training]
legal_basis = "legitimate-interests"
retention_days = 0.0002
max_retention_days = 1

[purposes.escalation]
legal_basis = "contract"
retention_days = 1
max_retention_days = 2
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SeaweedServer]:
    """This module's own server: its tests kill and restart it."""
    yield from running_server()


@pytest.fixture
def store(server: SeaweedServer) -> SeaweedServer:
    server.start()  # a test before may have left it killed
    return server


@pytest.fixture(scope="module")
def identity() -> pyrage.x25519.Identity:
    return pyrage.x25519.Identity.generate()


def creds(who: S3Credentials) -> Credentials:
    return Credentials(who.access_key, who.secret_key)


def s3_daemon(
    tmp: Path,
    server: SeaweedServer,
    bucket: str,
    identity: pyrage.x25519.Identity | None = None,
    storage: str = "",
    prefix: str = PREFIX,
    **over: Any,
) -> Daemon:
    credentials = tmp / "s3.credentials"
    credentials.write_text(server.host.ini())
    credentials.chmod(0o600)
    recipients = [] if identity is None else [str(identity.to_public())]
    extra = f"""
[storage]
backend = "s3"
s3_endpoint = "{server.endpoint}"
s3_bucket = "{bucket}"
s3_prefix = "{prefix}"
s3_credentials_file = "{credentials}"
recipients = {recipients!r}
{storage}
{PURPOSES}
"""
    lines = [("desk-01", [1, 2]), ("desk-02", [1, 2]), ("desk-03", [1, 2])]
    return Daemon(tmp, extra=extra.replace("'", '"'), lines=lines, **over)


def host_store(server: SeaweedServer, bucket: str) -> ObjectStore:
    return ObjectStore(server.endpoint, bucket, "", credentials=creds(server.host), attempts=1)


def admin_store(server: SeaweedServer, bucket: str) -> ObjectStore:
    return ObjectStore(server.endpoint, bucket, "", credentials=creds(server.admin), attempts=1)


def key_of(entry: dict[str, Any], bucket: str) -> str:
    path = str(entry["path"])
    assert path.startswith(f"s3://{bucket}/{PREFIX}recordings/"), path
    return path.removeprefix(f"s3://{bucket}/")


def sidecar_of(key: str, call_id: str) -> str:
    return f"{key.rpartition('/')[0]}/{call_id}.json"


def read(store: ObjectStore, key: str, version: str) -> bytes:
    with store.get_stream(key, version) as stream:
        return stream.read()


def assert_journal_quiet(d: Daemon, call_ids: list[str]) -> None:
    """The journal names these kept calls only where it names every call: start and end."""
    for line in d.stderr().splitlines():
        for call_id in call_ids:
            if call_id in line:
                assert f"call {call_id} started on " in line or f"call {call_id} ended on " in line
                assert line.count(call_id) == 1, line


def all_gone(store: ObjectStore, versions: tuple[tuple[str, str], ...]) -> bool:
    for key, version in versions:
        try:
            store.head(key, version)
        except ObjectMissing:
            continue
        return False
    return True


def spool_files(d: Daemon) -> dict[str, Path]:
    folder = d.state / "spool"
    return {p.name: p for p in folder.iterdir()} if folder.is_dir() else {}


def spooled(d: Daemon) -> int:
    return sum(name.endswith(".json") for name in spool_files(d))


def committed(d: Daemon) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for entry in d.events("call_committed"):
        assert entry["call_id"] not in found, f"{entry['call_id']} committed twice"
        found[entry["call_id"]] = entry
    return found


def test_a_committed_recording_is_in_the_store_locked_until_retain_until_then_purged(
    tmp_path: Path, store: SeaweedServer, identity: pyrage.x25519.Identity
) -> None:
    bucket = store.new_bucket()
    host = host_store(store, bucket)
    with s3_daemon(tmp_path, store, bucket, identity) as d:
        call_id = kept_call(d, "desk-01", "training", seconds=0.4)
        (entry,) = d.wait_for_event("call_committed", timeout=20)
        assert entry["call_id"] == call_id
        key = key_of(entry, bucket)
        assert key.endswith(f"/{call_id}.flac.age")
        # The object is the recording: its bytes hash to the logged sha256 (which the worker
        # took of the spooled file as it wrote it, and checked again as it uploaded it).
        data = read(host, key, entry["version_id"])
        assert data.startswith(AGE_MAGIC), "encrypted to the recipients, as on local disk"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        plain = pyrage.decrypt(data, [identity])
        assert plain.startswith(b"fLaC")
        # The sidecar beside it: the same fields, and its own version.
        side = read(host, sidecar_of(key, call_id), entry["sidecar_version_id"])
        sidecar = json.loads(side)
        assert sidecar["sha256"] == entry["sha256"] and sidecar["path"] == entry["path"]
        assert sidecar["version_id"] == entry["version_id"]
        assert "sidecar_version_id" not in sidecar
        # Locked until retain_until, in GOVERNANCE, both versions.
        until = lock_date(parse_iso(entry["retain_until"]))
        for k, v in (
            (key, entry["version_id"]),
            (sidecar_of(key, call_id), entry["sidecar_version_id"]),
        ):
            info = host.head(k, v)
            assert (info.mode, info.retain_until, info.legal_hold) == ("GOVERNANCE", until, False)
        # The host's own credentials cannot delete it before then: the store refuses.
        with pytest.raises(StoreRefused):
            host.delete_version(key, entry["version_id"])
        assert read(host, key, entry["version_id"]) == data
        assert spool_files(d) == {}, "the spool is emptied once the store has the call"
        # The purge after expiry deletes both versions.
        wait_until(
            lambda: d.events("recording_deleted"),
            timeout=(until - datetime.now(UTC)).total_seconds() + 15,
            what="the purge",
        )
        (gone,) = d.events("recording_deleted")
        assert gone["why"] == "expired" and gone["path"] == entry["path"]
        assert gone["version_id"] == entry["version_id"]
        assert gone["sidecar_version_id"] == entry["sidecar_version_id"]

        versions = (
            (key, entry["version_id"]),
            (sidecar_of(key, call_id), entry["sidecar_version_id"]),
        )
        wait_until(lambda: all_gone(host, versions), timeout=15, what="both versions deleted")
    assert_journal_quiet(d, [call_id])


def test_a_held_recording_cannot_be_deleted_until_released(
    tmp_path: Path, store: SeaweedServer
) -> None:
    bucket = store.new_bucket()
    host, admin = host_store(store, bucket), admin_store(store, bucket)
    with s3_daemon(tmp_path, store, bucket) as d:
        call_id = kept_call(d, "desk-01", "training", seconds=0.3)
        (entry,) = d.wait_for_event("call_committed", timeout=20)
        key = key_of(entry, bucket)
        assert key.endswith(f"/{call_id}.flac"), "no recipients: a plain FLAC"
        d.ok({"op": "hold", "call_id": call_id, "actor": "dpo", "reason": "court case"})
        versions = (
            (key, entry["version_id"]),
            (sidecar_of(key, call_id), entry["sidecar_version_id"]),
        )
        wait_until(
            lambda: all(host.head(k, v).legal_hold for k, v in versions),
            timeout=15,
            what="the legal hold on both versions",
        )
        # Past its retention, held: the purge leaves it, and not even the admin's bypass
        # deletes it.
        until = parse_iso(entry["retain_until"])
        time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 2.5)
        assert not d.events("recording_deleted")
        for k, v in versions:
            with pytest.raises(StoreRefused):
                host.delete_version(k, v)
            with pytest.raises(StoreRefused):
                admin.delete_version(k, v, bypass_governance=True)
        assert read(host, key, entry["version_id"])
        d.ok({"op": "release", "call_id": call_id, "actor": "dpo", "reason": "case closed"})
        wait_until(lambda: d.events("recording_deleted"), timeout=15, what="the purge")

        wait_until(lambda: all_gone(host, versions), timeout=15, what="deleted after release")


def test_an_early_erase_is_refused_by_the_lock_and_extend_moves_the_lock(
    tmp_path: Path, store: SeaweedServer
) -> None:
    bucket = store.new_bucket()
    host = host_store(store, bucket)
    with s3_daemon(tmp_path, store, bucket) as d:
        call_id = kept_call(d, "desk-01", "escalation", seconds=0.3)
        (entry,) = d.wait_for_event("call_committed", timeout=20)
        key = key_of(entry, bucket)
        refused = d.request({"op": "erase", "call_id": call_id, "actor": "dpo", "reason": "x"})
        assert refused["error"]["code"] == "not_allowed", refused
        message = refused["error"]["message"]
        assert "GOVERNANCE" in message and "s3_erase_bypass" in message
        assert not d.events("recording_deleted")
        reply = d.ok(
            {
                "op": "extend",
                "call_id": call_id,
                "purpose": "escalation",
                "days": 1.5,
                "actor": "dpo",
                "reason": "complaint",
            }
        )
        later = lock_date(parse_iso(reply["retain_until"]))
        assert later > lock_date(parse_iso(entry["retain_until"]))
        wait_until(
            lambda: host.head(key, entry["version_id"]).retain_until == later,
            timeout=15,
            what="the extended lock",
        )
        side = sidecar_of(key, call_id)
        wait_until(
            lambda: host.head(side, entry["sidecar_version_id"]).retain_until == later,
            timeout=15,
            what="the sidecar's extended lock",
        )


def test_a_killed_store_loses_nothing_each_call_is_uploaded_once_in_order(
    tmp_path: Path, store: SeaweedServer, identity: pyrage.x25519.Identity
) -> None:
    bucket = store.new_bucket()
    with s3_daemon(tmp_path, store, bucket, identity) as d:
        first = kept_call(d, "desk-01", "escalation", seconds=0.3)
        d.wait_for_event("call_committed", timeout=20)
        # Two calls whose uploads are under way (their settle delay is 0.3-1.2 s) when the
        # store is killed, then three while it is dead.
        racing = [kept_call(d, line, "escalation", seconds=0.3) for line in ("desk-02", "desk-03")]
        time.sleep(0.9)
        store.kill()
        ids = []
        for line in ("desk-01", "desk-02", "desk-03"):
            began = time.monotonic()
            ids.append(kept_call(d, line, "escalation", seconds=0.3))
            assert time.monotonic() - began < 2.0, "a dead store holds up no request"
        d.ok({"op": "start", "line": "desk-01"})  # and a call that is not kept
        d.ok({"op": "end", "line": "desk-01"})
        wait_until(
            lambda: len(committed(d)) - 1 + spooled(d) == 5,
            timeout=20,
            what="every kept call in the store or in the spool",
        )
        wait_until(lambda: len(d.events("call_wiped")) == 1, timeout=20, what="the wipe")
        # Encrypted in the spool, never plain; and not logged while the store lacks them.
        copies = {}
        for name, path in sorted(spool_files(d).items()):  # by number: the order kept
            if name.endswith(".flac.age"):
                data = path.read_bytes()
                assert data.startswith(AGE_MAGIC)
                copies[name.split(".")[1]] = data
        assert set(ids) <= set(copies) <= set(ids + racing)
        kept_order = list(copies)
        assert not set(committed(d)) & set(copies)
        time.sleep(1.0)
        assert d.ok({"op": "status"})["ok"]
        store.start()
        wait_until(lambda: len(committed(d)) == 6, timeout=60, what="the uploads")
        time.sleep(1.5)  # nothing is logged twice
        done = committed(d)
        logged = list(done)
        assert sorted(logged) == sorted([first, *racing, *ids])
        assert logged[-len(kept_order) :] == kept_order, "the spool went up in the order kept"
        host = host_store(store, bucket)
        for call_id in kept_order:
            entry = done[call_id]
            assert "recovered" not in entry
            assert read(host, key_of(entry, bucket), entry["version_id"]) == copies[call_id]
        # One version of each object: an upload cut short by the kill was not made twice.
        versions = [v for v in host.versions(PREFIX) if not v.delete_marker]
        assert len(versions) == 12 and len({v.key for v in versions}) == 12
        wait_until(lambda: spool_files(d) == {}, timeout=10, what="the spool emptied")
    stderr = d.stderr()
    assert "the object store is unavailable" in stderr and "the object store is back" in stderr
    assert_journal_quiet(d, [first, *racing, *ids])


def test_a_restart_uploads_what_the_spool_holds_also_after_kill_9(
    tmp_path: Path, store: SeaweedServer, identity: pyrage.x25519.Identity
) -> None:
    bucket = store.new_bucket()
    store.kill()
    d = s3_daemon(tmp_path, store, bucket, identity)
    with d:
        one = kept_call(d, "desk-01", "escalation", seconds=0.3)
        wait_until(lambda: spooled(d) == 1, timeout=20, what="a call in the spool")
        began = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - began < 15, "a dead store does not hold up the stop"
    assert not d.events("call_committed")
    assert d.events("daemon_stopped")
    with d:  # the store still down: the spool waits, and takes one more
        two = kept_call(d, "desk-02", "escalation", seconds=0.3)
        wait_until(lambda: spooled(d) == 2, timeout=20, what="two calls in the spool")
        assert d.proc is not None
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
    assert not d.events("call_committed")
    store.start()
    with d:
        wait_until(lambda: len(committed(d)) == 2, timeout=60, what="the uploads after start")
        time.sleep(1.0)
        done = committed(d)
        assert list(done) == [one, two]
        assert all(entry["recovered"] is True for entry in done.values())
        host = host_store(store, bucket)
        for entry in done.values():
            data = read(host, key_of(entry, bucket), entry["version_id"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        wait_until(lambda: spool_files(d) == {}, timeout=10, what="the spool emptied")
    assert not d.events("call_wiped"), "nothing was lost"


def test_a_store_that_hangs_holds_up_neither_requests_nor_wipes(
    tmp_path: Path, store: SeaweedServer
) -> None:
    bucket = store.new_bucket()
    with s3_daemon(tmp_path, store, bucket) as d:
        assert store.pid is not None
        os.kill(store.pid, signal.SIGSTOP)  # it accepts connections and never answers
        try:
            kept = kept_call(d, "desk-01", "escalation", seconds=0.3)
            wait_until(lambda: spooled(d) == 1, timeout=20, what="the call in the spool")
            time.sleep(1.0)  # its upload now hangs in the worker's store thread
            began = time.monotonic()
            wiped = kept_call(d, "desk-02", seconds=0.3)
            assert time.monotonic() - began < 1.5
            (entry,) = d.wait_for_event("call_wiped", timeout=10)
            assert entry["call_id"] == wiped, "a wipe does not wait behind a hung upload"
            for _ in range(20):
                began = time.monotonic()
                d.ok({"op": "status"})
                assert time.monotonic() - began < 0.5
            assert not d.events("call_committed")
        finally:
            os.kill(store.pid, signal.SIGCONT)
        (entry,) = d.wait_for_event("call_committed", timeout=60)
        assert entry["call_id"] == kept


def test_the_auditor_verifies_what_the_daemon_put_in_the_bucket(
    tmp_path: Path, store: SeaweedServer
) -> None:
    """The layout both sides agreed on (/work/notes/s3-layout.md): the daemon's objects and
    log, shipped, pass ``audit verify --s3``'s checks of one host."""
    bucket = store.new_bucket()
    with s3_daemon(tmp_path, store, bucket) as d:
        held = kept_call(d, "desk-01", "escalation", seconds=0.3)
        extended = kept_call(d, "desk-02", "escalation", seconds=0.3)
        d.ok({"op": "start", "line": "desk-03"})
        d.ok({"op": "end", "line": "desk-03"})
        d.wait_for_event("call_committed", count=2, timeout=20)
        d.ok({"op": "hold", "call_id": held, "actor": "dpo", "reason": "court case"})
        d.ok(
            {
                "op": "extend",
                "call_id": extended,
                "purpose": "escalation",
                "days": 1.5,
                "actor": "dpo",
                "reason": "complaint",
            }
        )
        host = host_store(store, bucket)
        entry = committed(d)[held]
        wait_until(
            lambda: host.head(key_of(entry, bucket), entry["version_id"]).legal_hold,
            timeout=15,
            what="the hold",
        )
    last = d.entries()[-1]["seq"]
    # The daemon shipped its log itself, the last line (daemon_stopped) included, at its stop.
    assert host.keys(f"{PREFIX}log/") == [f"{PREFIX}log/{1:012d}-{last:012d}.jsonl"]
    result = verify_host(host, PREFIX)
    assert result.problem is None
    assert (result.entries, result.recordings) == (last, 2)


def test_the_daemon_ships_its_log_as_it_goes_and_what_a_dead_store_kept_at_the_next_start(
    tmp_path: Path, store: SeaweedServer
) -> None:
    bucket = store.new_bucket()
    host = host_store(store, bucket)

    def segments() -> list[str]:
        return host.keys(f"{PREFIX}log/")

    ship_often = "s3_ship_lines = 4\ns3_ship_seconds = 1"
    with s3_daemon(tmp_path, store, bucket, storage=ship_often) as d:
        for _ in range(3):
            d.ok({"op": "start", "line": "desk-03"})
            d.ok({"op": "end", "line": "desk-03"})
        d.wait_for_event("call_wiped", count=3)
        # While it runs: closed segments of at most 4 lines, contiguous from line 1.
        wait_until(lambda: len(segments()) >= 2, timeout=15, what="segments while running")
        ranges = [
            tuple(int(n) for n in key.rsplit("/", 1)[1][:-6].split("-")) for key in segments()
        ]
        assert ranges[0][0] == 1 and all(b - a < 4 for a, b in ranges)
        assert all(ranges[i + 1][0] == ranges[i][1] + 1 for i in range(len(ranges) - 1))
        store.kill()  # the store goes away before the stop: the tail waits
    stopped = d.entries()[-1]["seq"]
    store.start()
    with s3_daemon(tmp_path, store, bucket, storage=ship_often) as d:
        wait_until(
            lambda: int(segments()[-1].rsplit("-", 1)[1][:-6]) >= stopped,
            timeout=30,
            what="the tail the dead store kept, shipped at the next start",
        )
    result = verify_host(host, PREFIX)
    assert result.problem is None, result.problem


def audit_cli(server: SeaweedServer, url: str, tmp: Path, *verb: str) -> Any:
    """``hindsight audit VERB --s3 URL`` as the auditor runs it, with their own credentials."""
    credentials = tmp / "auditor.credentials"
    credentials.write_text(server.host.ini())
    credentials.chmod(0o600)
    return subprocess.run(
        [
            sys.executable, "-m", "hindsight.client.cli", "audit", *verb, "--s3", url,
            "--s3-endpoint", server.endpoint, "--s3-credentials-file", str(credentials),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_two_daemons_in_one_bucket_verify_as_a_floor_until_an_object_goes_behind_the_log(
    tmp_path: Path, store: SeaweedServer, identity: pyrage.x25519.Identity
) -> None:
    bucket = store.new_bucket()
    kept: dict[str, dict[str, Any]] = {}
    for prefix in ("rec-01/", "rec-02/"):
        home = tmp_path / prefix.rstrip("/")
        home.mkdir()
        with s3_daemon(home, store, bucket, identity, prefix=prefix) as d:
            kept_call(d, "desk-01", "escalation", seconds=0.3)
            d.ok({"op": "start", "line": "desk-02"})
            d.ok({"op": "end", "line": "desk-02"})
            d.wait_for_event("call_wiped", timeout=30)
            d.wait_for_event("call_committed", timeout=60)
            (kept[prefix],) = d.events("call_committed")
            assert kept[prefix]["path"].startswith(f"s3://{bucket}/{prefix}recordings/")
    floor = f"s3://{bucket}/"
    done = audit_cli(store, floor, tmp_path, "verify")
    assert done.returncode == 0, done.stderr
    assert "rec-01/" in done.stdout and "rec-02/" in done.stdout
    report = audit_cli(store, floor, tmp_path, "report", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["totals"]["committed"] == 2
    # Behind the log's back: an administrator who may bypass GOVERNANCE deletes the logged
    # version of rec-02's recording and puts other bytes under its key.
    admin = ObjectStore(store.endpoint, bucket, "", credentials=creds(store.admin), attempts=1)
    entry = kept["rec-02/"]
    key = str(entry["path"]).removeprefix(f"s3://{bucket}/")
    admin.delete_version(key, entry["version_id"], bypass_governance=True)
    admin.put_stream(key, io.BytesIO(b"other bytes"), None)
    failed = audit_cli(store, floor, tmp_path, "verify")
    assert failed.returncode == 1, failed.stdout
    assert "rec-02/" in failed.stderr and entry["call_id"] in failed.stderr
    one = audit_cli(store, f"s3://{bucket}/rec-01/", tmp_path, "verify")
    assert one.returncode == 0, one.stderr  # the other host is still intact


def test_a_reviewer_exports_a_recording_kept_in_the_bucket_with_their_own_credentials(
    tmp_path: Path, store: SeaweedServer, identity: pyrage.x25519.Identity
) -> None:
    bucket = store.new_bucket()
    secret = tmp_path / "reviewer.key"
    secret.write_text(f"{identity}\n")
    secret.chmod(0o600)
    reviewer = tmp_path / "reviewer.credentials"  # read rights are enough
    reviewer.write_text(store.host.ini())
    reviewer.chmod(0o600)
    with s3_daemon(tmp_path, store, bucket, identity) as d:
        call_id = kept_call(d, "desk-01", "escalation", seconds=0.5)
        (entry,) = d.wait_for_event("call_committed", timeout=30)
        out = tmp_path / "out.flac"
        done = cli(
            "--config", str(d.config), "export", call_id, "--identity", str(secret),
            "-o", str(out), "--reason", "complaint 12", "--s3-credentials-file", str(reviewer),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        (accessed,) = d.events("recording_accessed")
        assert (accessed["call_id"], accessed["reason"]) == (call_id, "complaint 12")
        host = host_store(store, bucket)
        stored = read(host, key_of(entry, bucket), entry["version_id"])
        assert out.read_bytes() == pyrage.decrypt(stored, [identity])  # the logged version
        assert out.read_bytes().startswith(b"fLaC")
        # Another version under the same key (a host can put one; it cannot touch the locked
        # one) is not what the log vouches for: export reads the logged version only.
        host.put_stream(key_of(entry, bucket), io.BytesIO(b"not the recording"), None)
        again = cli(
            "--config", str(d.config), "export", call_id, "--identity", str(secret),
            "-o", str(tmp_path / "again.flac"), "--reason", "second look",
            "--s3-credentials-file", str(reviewer),
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert (tmp_path / "again.flac").read_bytes() == out.read_bytes()
        # Without rights to read the bucket: a clear refusal, after the access was logged.
        stranger = tmp_path / "stranger.credentials"
        stranger.write_text("[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n")
        stranger.chmod(0o600)
        refused = cli(
            "--config", str(d.config), "export", call_id, "--identity", str(secret),
            "-o", str(tmp_path / "no.flac"), "--reason", "third", "--s3-credentials-file",
            str(stranger),
        )  # fmt: skip
        assert refused.returncode != 0
        assert "cannot read the recording of" in refused.stderr
        assert not (tmp_path / "no.flac").exists()
