"""``hindsight.daemon.shipper`` against a real S3 store with Object Lock (SeaweedFS, run by
``tests.s3server``): segments contiguous and byte for byte, locked, idempotent, safe after a
crash, and refusing to ship over what disagrees with the log."""

from __future__ import annotations

import hashlib
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hindsight.commitlog import CommitLog
from hindsight.daemon.shipper import ShipError, Shipper, ShipperThread, ShipPolicy
from hindsight.objectstore import Credentials, ObjectStore, StoreUnavailable
from hindsight.segments import SHA256_META, parse_segment_key, segment_key
from tests.s3server import S3Credentials, SeaweedServer, lock_bucket, seaweed

__all__ = ["lock_bucket", "seaweed"]  # fixtures used by name

PREFIX = "rec-01/"


def creds(who: S3Credentials) -> Credentials:
    return Credentials(who.access_key, who.secret_key)


def host_store(server: SeaweedServer, bucket: str) -> ObjectStore:
    return ObjectStore(server.endpoint, bucket, PREFIX, credentials=creds(server.host))


def write_log(path: Path, lines: int) -> CommitLog:
    log = CommitLog.open(path)
    for number in range(lines):
        log.append("note", number=number, text="ünïcode ✓")
    return log


def segments_of(store: ObjectStore) -> list[tuple[int, int]]:
    spans = [parse_segment_key(key) for key in store.keys("log/")]
    return sorted(span for span in spans if span is not None)


def shipped_bytes(store: ObjectStore) -> bytes:
    data = b""
    for first, last in segments_of(store):
        key = segment_key(first, last)
        version = next(v for v in store.versions(key) if not v.delete_marker)
        with store.get_stream(key, version.version_id) as reader:
            data += reader.read()
    return data


def test_ships_closed_segments_byte_for_byte_locked(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 23) as log:
        shipper = Shipper(store, path, retention_days=10, max_lines=10)
        done = shipper.ship(log.last_seq)
    assert [(s.first, s.last) for s in done] == [(1, 10), (11, 20), (21, 23)]
    assert segments_of(store) == [(1, 10), (11, 20), (21, 23)]
    assert shipped_bytes(store) == path.read_bytes()
    assert shipper.shipped_seq == 23
    first = done[0]
    info = store.head(first.key, first.version_id)
    assert info.mode == "GOVERNANCE"
    assert info.retain_until is not None
    assert info.retain_until - datetime.now(UTC) > timedelta(days=9.9)
    lines = path.read_bytes().splitlines(keepends=True)
    assert info.metadata[SHA256_META] == hashlib.sha256(b"".join(lines[:10])).hexdigest()
    # The host's own credentials cannot delete a shipped segment.
    with pytest.raises(Exception, match="AccessDenied"):
        store.delete_version(first.key, first.version_id)


def test_shipping_again_and_after_a_restart_ships_nothing_twice(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 7) as log:
        shipper = Shipper(store, path, max_lines=5)
        assert len(shipper.ship(log.last_seq)) == 2
        assert shipper.ship(log.last_seq) == []
        # A new process (a restart) learns what is shipped from the bucket.
        again = Shipper(store, path, max_lines=3)
        assert again.ship(log.last_seq) == []
        assert again.shipped_seq == 7
        for number in range(4):
            log.append("note", number=100 + number)
        done = again.ship(log.last_seq)
    assert [(s.first, s.last) for s in done] == [(8, 10), (11, 11)]
    assert segments_of(store) == [(1, 5), (6, 7), (8, 10), (11, 11)]
    assert shipped_bytes(store) == path.read_bytes()
    assert sum(1 for v in store.versions("log/") if not v.delete_marker) == 4


def test_a_segment_that_landed_before_a_crash_counts_as_shipped(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    """The PUT landed but its reply was lost (or the process died right after): the next
    shipper, with another segment size, adopts it rather than overlap it."""
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 12) as log:
        lines = path.read_bytes().splitlines(keepends=True)
        shipper = Shipper(store, path, max_lines=10)
        assert shipper.ship(0) == []  # it has asked the bucket: nothing shipped yet
        landed = b"".join(lines[:4])  # meanwhile an upload of lines 1..4 landed unacknowledged
        store.put_stream(
            segment_key(1, 4),
            io.BytesIO(landed),
            datetime.now(UTC) + timedelta(days=1),
            metadata={SHA256_META: hashlib.sha256(landed).hexdigest()},
        )
        done = shipper.ship(log.last_seq)
        assert [(s.first, s.last, s.adopted) for s in done] == [(1, 4, True), (5, 12, False)]
        # A restart after a crash right after a PUT: the bucket says what is there.
        log.append("note", number=12)
        lines = path.read_bytes().splitlines(keepends=True)
        store.put_stream(segment_key(13, 13), io.BytesIO(lines[12]), None)
        restarted = Shipper(store, path, max_lines=10)
        assert restarted.ship(log.last_seq) == []
        assert restarted.shipped_seq == 13
    assert segments_of(store) == [(1, 4), (5, 12), (13, 13)]
    assert shipped_bytes(store) == path.read_bytes()


def test_a_segment_with_other_bytes_is_refused_and_nothing_is_shipped(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 6) as log:
        forged = b'{"seq":1}\n{"seq":2}\n'
        store.put_stream(segment_key(1, 2), io.BytesIO(forged), None)
        shipper = Shipper(store, path, max_lines=10)
        with pytest.raises(ShipError, match="other bytes"):
            shipper.ship(log.last_seq)
    assert segments_of(store) == [(1, 2)]


def test_a_gap_in_the_bucket_or_a_broken_local_log_stops_shipping(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 6) as log:
        store.put_stream(segment_key(3, 4), io.BytesIO(b"x\n"), None)
        with pytest.raises(ShipError, match="leaves a gap"):
            Shipper(store, path).ship(log.last_seq)
    other = host_store(seaweed, seaweed.new_bucket())
    broken = tmp_path / "broken" / "commit.log"
    with write_log(broken, 4):
        pass
    lines = broken.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[2])
    entry["text"] = "altered"
    lines[2] = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    broken.write_bytes(b"".join(lines))
    shipper = Shipper(other, broken, max_lines=10)
    with pytest.raises(ShipError, match="line 3: hash does not match"):
        shipper.ship(4)
    assert segments_of(other) == []


def test_a_store_that_is_down_loses_nothing(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    down = ObjectStore(
        "http://127.0.0.1:9", lock_bucket, PREFIX, credentials=creds(seaweed.host), attempts=1
    )
    with write_log(path, 5) as log:
        shipper = Shipper(down, path, max_lines=2)
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            shipper.ship(log.last_seq)
        assert time.monotonic() - began < 3
        shipper.store = host_store(seaweed, lock_bucket)
        assert [(s.first, s.last) for s in shipper.ship(log.last_seq)] == [(1, 2), (3, 4), (5, 5)]


def test_policy_ships_after_n_lines_or_t_seconds() -> None:
    now = [0.0]
    policy = ShipPolicy(lines=3, seconds=10, clock=lambda: now[0])
    assert policy.due() is None
    policy.noted(1)
    assert policy.due() is None
    now[0] = 9.9
    policy.noted(2)
    assert policy.due() is None
    now[0] = 10.0
    assert policy.due() == 2  # 10 s after the first line that waits
    policy.shipped(2)
    assert policy.due() is None
    for seq in (3, 4, 5):
        policy.noted(seq)
    assert policy.due() == 5  # three lines wait
    policy.shipped(5)
    assert policy.due() is None
    assert policy.wait() == 10


def test_the_thread_ships_as_lines_come_and_everything_at_stop(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "commit.log"
    store = host_store(seaweed, lock_bucket)
    with write_log(path, 2) as log:
        thread = ShipperThread(Shipper(store, path, max_lines=4), ShipPolicy(lines=4, seconds=60))
        log.listen(thread.noted)
        thread.start(log.last_seq)  # 2 lines wait: not due yet
        for number in range(5):
            log.append("note", number=number)
        deadline = time.monotonic() + 10
        while thread.shipper.shipped_seq != 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.shipper.shipped_seq == 4  # four lines waited
        assert thread.stop(log.last_seq)
    assert thread.error is None
    assert segments_of(store) == [(1, 4), (5, 7)]
    assert shipped_bytes(store) == path.read_bytes()
