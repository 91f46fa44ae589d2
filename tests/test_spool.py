"""The S3 backend's parts that need no store: its config, the spool, the lane's order and
figures, the index of object versions, the host check of the credentials file."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hindsight.clock import iso
from hindsight.config import Config, parse_config
from hindsight.daemon.host import s3_credentials_problems
from hindsight.daemon.lane import Lane
from hindsight.daemon.objects import ObjectIndex
from hindsight.daemon.reload import refusals
from hindsight.daemon.spool import Spool
from hindsight.errors import CommitLogError, ConfigError

S3 = {
    "backend": "s3",
    "s3_endpoint": "https://s3.internal:8333",
    "s3_bucket": "hindsight",
    "s3_prefix": "rec-01/",
}


def config(**storage: Any) -> Config:
    data = {"lines": [{"name": "desk-01", "channels": [1, 2]}], "storage": storage}
    return parse_config(data, Path("/etc/hindsight"))


def problems(**storage: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(**storage)
    return caught.value.problems


# -- config ------------------------------------------------------------------------------------


def test_the_local_backend_is_the_default_and_takes_no_s3_key() -> None:
    storage = config().storage
    assert (storage.backend, storage.s3) == ("local", False)
    assert storage.s3_endpoint is None and storage.s3_credentials_file is None


def test_an_s3_backend_is_built_with_its_defaults_and_a_resolved_credentials_file() -> None:
    storage = config(**S3, s3_credentials_file="s3.credentials").storage
    assert storage.s3 and storage.s3_bucket == "hindsight" and storage.s3_prefix == "rec-01/"
    assert storage.s3_lock_mode == "GOVERNANCE" and not storage.s3_erase_bypass
    assert storage.s3_credentials_file == Path("/etc/hindsight/s3.credentials")
    assert storage.s3_spool_limit_mb == 4096
    assert config(**dict(S3, s3_endpoint="http://127.0.0.1:8333/")).storage.s3_endpoint == (
        "http://127.0.0.1:8333"
    )


def test_s3_needs_its_endpoint_bucket_and_prefix() -> None:
    assert problems(backend="s3") == [
        "storage.s3_endpoint: required with backend = 's3' (e.g. 'https://s3.internal:8333')",
        "storage.s3_bucket: required with backend = 's3' (e.g. 'hindsight')",
        "storage.s3_prefix: required with backend = 's3' (e.g. 'rec-01/')",
    ]


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("s3_endpoint", "s3.internal:8333", "must be 'https://HOST[:PORT]'"),
        ("s3_endpoint", "https://s3.internal/bucket", "must be 'https://HOST[:PORT]'"),
        ("s3_bucket", "Hindsight_Recordings", "must be an S3 bucket name"),
        ("s3_bucket", "ab", "must be an S3 bucket name"),
        ("s3_prefix", "rec-01", "each followed by '/'"),
        ("s3_prefix", "/rec-01/", "each followed by '/'"),
        ("s3_prefix", "a//b/", "each followed by '/'"),
        ("s3_prefix", "a/../", "each followed by '/'"),
        ("s3_lock_mode", "governance", "must be one of 'GOVERNANCE', 'COMPLIANCE'"),
        ("backend", "S3", "must be one of 'local', 's3'"),
        ("s3_spool_limit_mb", 0, "must be between 1 and"),
    ],
)
def test_a_bad_s3_value_is_named(key: str, value: object, says: str) -> None:
    (problem,) = problems(**dict(S3, **{key: value}))
    assert problem.startswith(f"storage.{key}: ") and says in problem


def test_an_erase_cannot_bypass_a_compliance_lock() -> None:
    (problem,) = problems(**S3, s3_lock_mode="COMPLIANCE", s3_erase_bypass=True)
    assert problem.startswith("storage.s3_erase_bypass: not possible with s3_lock_mode")
    assert config(**S3, s3_erase_bypass=True).storage.s3_erase_bypass


def test_a_reload_that_changes_the_backend_is_refused_and_recipients_may_change() -> None:
    old = config(**S3)
    moved = config(**dict(S3, s3_prefix="rec-02/"))
    assert any("[storage] backend or s3_*" in r for r in refusals(old, moved, [], lambda _: 0))
    recipient = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    same = replace(old, storage=replace(old.storage, recipients=(recipient,)))
    assert refusals(old, same, [], lambda _: 0) == []


# -- the host's credentials file -----------------------------------------------------------------


def test_the_credentials_file_must_be_closed_to_others_and_hold_a_key_pair(tmp_path: Path) -> None:
    path = tmp_path / "s3.credentials"
    assert "cannot be read" in s3_credentials_problems(path)[0]
    path.write_text("[default]\naws_access_key_id = host\naws_secret_access_key = s3cr3t-value\n")
    path.chmod(0o644)
    (problem,) = s3_credentials_problems(path)
    assert problem.endswith("is open to other users (mode 0644); chmod 600 it")
    path.chmod(0o600)
    assert s3_credentials_problems(path) == []
    path.write_text("[other]\naws_access_key_id = host\naws_secret_access_key = s3cr3t-value\n")
    (problem,) = s3_credentials_problems(path)
    assert "no [default] section" in problem and "s3cr3t" not in problem
    assert s3_credentials_problems(None) == []


# -- the spool ---------------------------------------------------------------------------------


def spool_entry(spool: Spool, number: int, call_id: str, data: bytes = b"age") -> None:
    import hashlib
    import json

    spool.root.mkdir(exist_ok=True)
    (spool.root / f"{number:012d}.{call_id}.flac.age").write_bytes(data)
    manifest = {"key": f"rec-01/recordings/2026/11/29/{call_id}.flac.age"}
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (spool.root / f"{number:012d}.{call_id}.json").write_text(json.dumps(manifest))


def test_spool_entries_come_in_the_order_kept_and_only_whole_ones_count(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.entries() == [] and spool.next_number() == 1
    spool_entry(spool, 10, "b.call-2")
    spool_entry(spool, 9, "a.call-1")
    (spool.root / "000000000011.c.flac.age").write_bytes(b"partial: no manifest")
    (spool.root / ".000000000012.d.flac.age.1a2b3c4d.tmp").write_bytes(b"being written")
    assert [(e.number, e.call_id) for e in spool.entries()] == [(9, "a.call-1"), (10, "b.call-2")]
    assert spool.next_number() == 12
    first = spool.entries()[0]
    assert spool.whole(first) is not None
    (spool.root / f"{first.stem}.flac.age").write_bytes(b"changed")
    assert spool.whole(first) is None, "a recording that does not hash right is partial"
    assert [p.name for p in spool.files_of("d")] == [".000000000012.d.flac.age.1a2b3c4d.tmp"]
    assert len(spool.files_of("a.call-1")) == 2
    usage = spool.usage()
    assert usage.entries == 2 and usage.bytes > 0
    spool.remove_entry(spool.entries()[1])
    assert [e.call_id for e in spool.entries()] == ["a.call-1"]
    with pytest.raises(ValueError):
        spool.entry("../../etc/passwd.json")


# -- the lane ----------------------------------------------------------------------------------


class FakeLog:
    def __init__(self, *open_calls: str) -> None:
        self.open_calls = dict.fromkeys(open_calls, "desk-01")
        self.lines: list[dict[str, Any]] = []
        self.broken = False

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if self.broken:
            raise CommitLogError("disk full")
        self.lines.append({"event": event, **fields})
        self.open_calls.pop(fields["call_id"], None)
        return self.lines[-1]


def lane_with(tmp_path: Path, log: FakeLog, limit: int = 1 << 30) -> tuple[Lane, Spool]:
    spool = Spool(tmp_path)
    return Lane(log, spool, limit), spool  # type: ignore[arg-type]


def uploaded(call_id: str) -> dict[str, Any]:
    return {"step": "uploaded", "fields": {"call_id": call_id, "version_id": "v"}}


def test_uploads_go_in_order_are_logged_once_and_leave_the_spool(tmp_path: Path) -> None:
    log = FakeLog("a", "b")
    lane, spool = lane_with(tmp_path, log)
    spool_entry(spool, 1, "a")
    spool_entry(spool, 2, "b")
    lane.upload("000000000001.a.json")
    lane.upload("000000000002.b.json")
    lane.add("hold", {"objects": [["k", "v"]], "on": True})
    op = lane.next(0.0)
    assert op is not None and op.fields["entry"] == "000000000001.a.json"
    assert lane.next(0.0) is None, "one at a time"
    # The store is down: the whole lane waits, and the upload is sent again, first.
    lane.reply({"step": "failed", "error": "unreachable", "unavailable": True}, 0.0)
    assert lane.next(0.1) is None and lane.down_since == 0.0
    again = lane.next(1.0)
    assert again is op
    lane.reply(uploaded("a"), 1.0)
    assert [line["call_id"] for line in log.lines] == ["a"]
    assert [e.call_id for e in spool.entries()] == ["b"]
    # A redo of an upload already logged (a crash before the spool was emptied) logs nothing.
    log.open_calls.pop("b")
    op = lane.next(1.0)
    assert op is not None and op.fields["entry"] == "000000000002.b.json"
    lane.reply(uploaded("b"), 1.0)
    assert len(log.lines) == 1 and spool.entries() == []
    hold = lane.next(1.0)
    assert hold is not None and hold.kind == "hold"
    lane.reply({"step": "done"}, 1.0)
    assert lane.finished()


def test_a_refused_operation_waits_on_its_own_and_an_upload_never_passes_another(
    tmp_path: Path,
) -> None:
    lane, _ = lane_with(tmp_path, FakeLog("a", "b"))
    lane.add("s3delete", {"objects": [["k", "v"]], "bypass": False})
    lane.upload("000000000001.a.json")
    lane.upload("000000000002.b.json")
    delete = lane.next(0.0)
    assert delete is not None and delete.kind == "s3delete"
    lane.reply({"step": "failed", "error": "AccessDenied", "unavailable": False}, 0.0)
    first = lane.next(0.0)
    assert first is not None and first.fields["entry"] == "000000000001.a.json"
    lane.reply({"step": "failed", "error": "AccessDenied", "unavailable": False}, 0.0)
    assert lane.next(0.1) is None, "b waits behind a; the refused delete waits its turn"
    assert lane.deletions_pending()


def test_an_upload_whose_log_line_fails_is_logged_later_without_a_second_upload(
    tmp_path: Path,
) -> None:
    log = FakeLog("a")
    lane, spool = lane_with(tmp_path, log)
    spool_entry(spool, 1, "a")
    lane.upload("000000000001.a.json")
    lane.next(0.0)
    log.broken = True
    lane.reply(uploaded("a"), 0.0)
    assert log.lines == [] and spool.entries(), "the spool keeps it until it is logged"
    log.broken = False
    assert lane.next(5.0) is None, "logged, not sent to the worker again"
    assert [line["call_id"] for line in log.lines] == ["a"] and spool.entries() == []


def test_a_stopping_lane_leaves_the_spool_when_the_store_is_down(tmp_path: Path) -> None:
    lane, _ = lane_with(tmp_path, FakeLog("a"))
    lane.upload("000000000001.a.json")
    lane.stopping = True
    lane.next(0.0)
    assert not lane.finished()
    lane.reply({"step": "failed", "error": "unreachable", "unavailable": True}, 0.0)
    assert lane.finished() and len(lane.ops) == 1


def test_a_spool_over_its_limit_is_an_error_with_the_figure_and_no_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lane, spool = lane_with(tmp_path, FakeLog(), limit=10)
    spool_entry(spool, 1, "secret-call", data=b"x" * 2048)
    with caplog.at_level(logging.WARNING):
        lane.check(100.0)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    text = record.getMessage()
    assert "1 recording(s), 0.0 MiB: over storage.s3_spool_limit_mb" in text
    assert "secret-call" not in text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        lane.check(101.0)
    assert caplog.records == [], "at most every report_seconds"


# -- the index of object versions ----------------------------------------------------------------


def test_the_lock_follows_extensions_and_never_a_shorter_end() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    index = ObjectIndex("hindsight")
    committed = {
        "event": "call_committed",
        "call_id": "c1",
        "path": "s3://hindsight/rec-01/recordings/2026/11/29/c1.flac.age",
        "version_id": "v1",
        "sidecar_version_id": "s1",
        "retention": {"training": iso(now + timedelta(days=1))},
        "retain_until": iso(now + timedelta(days=1)),
    }
    index.apply(committed)
    local = dict(committed, call_id="c2", path="recordings/2026/11/29/c2.flac")
    del local["version_id"]
    index.apply(local)
    assert index.get("c2") is None
    stored = index.get("c1")
    assert stored is not None
    assert stored.objects() == [
        ["rec-01/recordings/2026/11/29/c1.flac.age", "v1"],
        ["rec-01/recordings/2026/11/29/c1.json", "s1"],
    ]
    shorter = iso(now + timedelta(hours=1))
    resolve = {"event": "recording_resolved", "call_id": "c1", "purpose": "training"}
    assert index.apply(dict(resolve, retain_until=shorter)) is None
    assert stored.lock_until == now + timedelta(days=1) and stored.locked(now)
    extend = {"event": "recording_extended", "call_id": "c1", "purpose": "training"}
    later = index.apply(dict(extend, retain_until=iso(now + timedelta(days=3))))
    assert later == now + timedelta(days=3) == stored.lock_until
    index.apply({"event": "recording_held", "call_id": "c1"})
    assert stored.held and stored.hold_changed
    index.apply({"event": "recording_deleted", "call_id": "c1"})
    assert index.get("c1") is None
