"""Recordings in an S3-compatible object store with Object Lock ("Scale-out storage").

``ObjectStore`` is a small typed layer over boto3, and the one place where botocore's errors
become Hindsight's:

- ``StoreUnavailable``: the store could not be asked or did not answer: connection refused or
  reset, a connect or read timeout, or a 5xx (SeaweedFS answers 500 while its filer or
  volumes are still starting). Try again later; the object may or may not exist.
- ``StoreRefused``: the store answered and said no (``code`` and ``status`` as it sent them):
  ``AccessDenied`` for a delete of a locked or held version or a shortened retention,
  ``InvalidRequest`` for a retention date in the past. ``ObjectMissing`` is its 404.

Rules:

- Every object is addressed by key and version id: with Object Lock the bucket is versioned,
  a second put of a key makes a second version, and a delete without a version id only adds
  a delete marker. So every method that reads or changes an object takes a ``version_id``.
- Keys are relative to the store's ``prefix`` (one per recorder host); ``url`` names the
  object as ``s3://BUCKET/PREFIX+KEY``.
- ``put_stream`` reads its source once, in parts of ``part_size`` bytes (so a long call is
  never whole in memory): a body of at most one part is one PutObject, a longer one a
  multipart upload with up to ``concurrency`` parts in flight (one by default) while the
  next is read. The retention (``lock_mode`` until ``retain_until``, rounded up to the
  second, since stores keep whole seconds) and the legal hold go on the PutObject or
  CreateMultipartUpload request, so the version is locked from its first instant. Every
  request carries the SHA-256 of its bytes (``x-amz-checksum-sha256``), which the store
  checks (a mismatch is ``BadDigest``); AWS requires a Content-MD5 or a checksum on any put
  with Object Lock headers, SeaweedFS 4.48 does not. The result names the version made and
  the SHA-256 of every byte read from the source.
- ``set_retention`` only extends: it reads the version's retention first and refuses,
  itself, an earlier date; the store refuses it too, unless bypassing GOVERNANCE.
- Short timeouts and at most ``attempts`` tries per request, so that a store that is down
  fails fast (the caller spools and retries later, never the audio path): a refused
  connection in milliseconds; a store that accepts and never answers in about
  ``2 * read_timeout`` per attempt for an upload (botocore first waits ``read_timeout`` for
  "100 Continue", then for the reply).

Credentials come from a file in the AWS shared credentials format (``read_credentials``),
or, when none is given, from boto3's usual chain (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, ...)::

    [default]
    aws_access_key_id = hindsight-host-01
    aws_secret_access_key = ...
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import io
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from hindsight.errors import StoreError

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]
LOCK_MODES: tuple[LockMode, ...] = ("GOVERNANCE", "COMPLIANCE")

SCHEME = "s3://"  # a recording's logged path in a bucket: s3://BUCKET/KEY
MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3's smallest part but the last
PART_SIZE = 8 * MIB
MAX_PARTS = 10000
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
ATTEMPTS = 2  # the first try and one retry
# Parts in flight per upload (the next part is read meanwhile): memory is part_size times
# (concurrency + 1). One is as fast as boto3's 10 threads against a local SeaweedFS on 2
# cores, and two are slower there (bench/bench_s3.py); a distant store may want more.
CONCURRENCY = 1
REGION = "us-east-1"  # SeaweedFS, MinIO and Ceph take any; AWS needs the bucket's own
# Codes that mean "not now" rather than "no", whatever their status.
_TRANSIENT = frozenset(
    {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed"}
)


def bucket_and_key(url: str) -> tuple[str, str]:
    """``s3://BUCKET/KEY`` as (BUCKET, KEY); either is empty when the URL lacks it."""
    bucket, _, key = url.removeprefix(SCHEME).partition("/")
    return bucket, key


class StoreUnavailable(StoreError):
    """The object store could not be reached, timed out or failed (5xx): try again later."""


class StoreRefused(StoreError):
    """The object store answered and refused the request; ``code`` and ``status`` are its own."""

    def __init__(self, message: str, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ObjectMissing(StoreRefused):
    """No such bucket, key or version (404)."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


@dataclass(frozen=True)
class Credentials:
    """An access key pair; the secret never shows in a repr."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class Uploaded(NamedTuple):
    """What ``put_stream`` made: the version, the SHA-256 (hex) and size of the bytes sent."""

    version_id: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ObjectInfo:
    """One object version as HEAD sees it."""

    key: str
    version_id: str
    size: int
    mode: LockMode | None
    retain_until: datetime | None  # aware, UTC
    legal_hold: bool
    last_modified: datetime | None
    metadata: dict[str, str]

    def locked(self, now: datetime | None = None) -> bool:
        """Whether the store should refuse to delete this version now (retention or hold)."""
        moment = datetime.now(UTC) if now is None else now
        return self.legal_hold or (self.retain_until is not None and self.retain_until > moment)


@dataclass(frozen=True)
class VersionInfo:
    """One entry of a version listing: an object version, or a delete marker (size 0)."""

    key: str
    version_id: str
    size: int
    latest: bool
    delete_marker: bool
    last_modified: datetime | None


def read_credentials(path: Path, profile: str = "default") -> Credentials:
    """The key pair in ``path``, an AWS shared credentials file (INI, ``[default]`` section).

    ``aws_access_key_id`` and ``aws_secret_access_key`` are required, ``aws_session_token``
    optional. Any problem is a ``StoreError`` that names the file (never the secret).
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise StoreError(f"S3 credentials file {path}: {exc}") from exc
    if not parser.has_section(profile):
        raise StoreError(f"S3 credentials file {path}: no [{profile}] section")
    section = parser[profile]
    missing = [
        name
        for name in ("aws_access_key_id", "aws_secret_access_key")
        if not section.get(name, "").strip()
    ]
    if missing:
        raise StoreError(f"S3 credentials file {path}: [{profile}] lacks {', '.join(missing)}")
    token = section.get("aws_session_token", "").strip() or None
    return Credentials(
        section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip(), token
    )


def make_client(
    endpoint: str | None,
    credentials: Credentials | None = None,
    *,
    region: str = REGION,
    connect_timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    attempts: int = ATTEMPTS,
    pool: int = 10,
) -> Any:
    """A boto3 S3 client with short timeouts, ``attempts`` tries, path-style addressing.

    botocore computes no checksum of its own (``when_required``): ``ObjectStore`` sends the
    SHA-256 it computes anyway. ``credentials`` None: boto3's usual chain.
    """
    # Imported here: boto3 takes most of a second to import, and the daemon of the local
    # backend (and its worker) never needs it.
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    config = BotoConfig(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        max_pool_connections=pool,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key,
            "aws_secret_access_key": credentials.secret_key,
            "aws_session_token": credentials.session_token,
        }
    # A session of its own: boto3's default session is not thread-safe to create clients in.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=config, **keys
    )


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn botocore's exceptions raised inside into ``StoreUnavailable``/``StoreRefused``."""
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        yield
    except ClientError as exc:
        raise refusal(what, exc) from exc
    except (ConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise StoreUnavailable(f"{what}: object store unavailable: {exc}") from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StoreError(f"{what}: {exc}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"{what}: {exc}") from exc


def refusal(what: str, exc: Any) -> StoreError:
    """The Hindsight error for a botocore ``ClientError``: transient, missing or refused."""
    response: dict[str, Any] = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(error.get("Code") or status)
    message = str(error.get("Message") or "")
    text = f"{what}: {code} ({status}) {message}".rstrip()
    if status >= 500 or code in _TRANSIENT:
        return StoreUnavailable(text)
    if status == 404:
        return ObjectMissing(text, code, status)
    return StoreRefused(text, code, status)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def lock_date(moment: datetime) -> datetime:
    """``moment`` in UTC, rounded up to a whole second.

    Stores keep a retain-until date to the second (SeaweedFS drops the fraction, so X.9 s
    would end the lock at X s): rounding up never makes a lock end before ``moment``.
    """
    if moment.tzinfo is None:
        raise ValueError("a retention date must be timezone-aware")
    utc = moment.astimezone(UTC)
    whole = utc.replace(microsecond=0)
    return whole if whole == utc else whole + timedelta(seconds=1)


def _read_part(source: Readable, size: int) -> bytes:
    """Up to ``size`` bytes; fewer only at the end (a pipe or socket may return short reads)."""
    first = source.read(size)
    if len(first) == size or not first:
        return first
    chunks = [first]
    have = len(first)
    while have < size:
        more = source.read(size - have)
        if not more:
            break
        chunks.append(more)
        have += len(more)
    return b"".join(chunks)


class ObjectStore:
    """One bucket (with Object Lock) and one key prefix of an S3-compatible store."""

    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        prefix: str = "",
        lock_mode: LockMode = "GOVERNANCE",
        credentials: Credentials | None = None,
        *,
        region: str = REGION,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        attempts: int = ATTEMPTS,
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
    ) -> None:
        if lock_mode not in LOCK_MODES:
            raise ValueError(f"lock_mode must be one of {', '.join(LOCK_MODES)}, not {lock_mode!r}")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = prefix
        self.lock_mode: LockMode = lock_mode
        self.part_size = part_size
        self.concurrency = concurrency
        self.client: Any = make_client(
            endpoint,
            credentials,
            region=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
            pool=max(10, concurrency + 2),
        )

    # -- names ----------------------------------------------------------------------------

    def full_key(self, key: str) -> str:
        return self.prefix + key

    def url(self, key: str) -> str:
        return f"{SCHEME}{self.bucket}/{self.full_key(key)}"

    # -- the bucket -----------------------------------------------------------------------

    def check(self) -> None:
        """Raise unless the bucket answers and has Object Lock enabled."""
        what = f"check {self.bucket}"
        with translated(what):
            reply = self.client.get_object_lock_configuration(Bucket=self.bucket)
        enabled = reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise StoreRefused(f"{what}: Object Lock is not enabled on the bucket", "NoLock", 200)

    # -- writing --------------------------------------------------------------------------

    def put_stream(
        self,
        key: str,
        source: Readable,
        retain_until: datetime | None,
        legal_hold: bool = False,
        metadata: Mapping[str, str] | None = None,
        *,
        on_part: Callable[[int], None] | None = None,
    ) -> Uploaded:
        """Upload everything ``source`` yields as a new version of ``key``, locked from the start.

        ``retain_until`` (aware) sets retention in the store's ``lock_mode``; ``legal_hold``
        sets the hold; None and False set neither. ``on_part`` is called with the byte count
        of every part read (a heartbeat). A failed multipart upload is aborted (best effort:
        a store that is down keeps the parts until its own clean-up).
        """
        extra: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.full_key(key),
            "ContentType": "application/octet-stream",
            "Metadata": dict(metadata or {}),
        }
        if retain_until is not None:
            extra["ObjectLockMode"] = self.lock_mode
            extra["ObjectLockRetainUntilDate"] = lock_date(retain_until)
        if legal_hold:
            extra["ObjectLockLegalHoldStatus"] = "ON"
        digest = hashlib.sha256()
        first = _read_part(source, self.part_size)
        digest.update(first)
        if on_part is not None:
            on_part(len(first))
        second = _read_part(source, self.part_size) if len(first) == self.part_size else b""
        if not second:
            part_digest = hashlib.sha256(first).digest()
            with translated(f"put {self.url(key)}"):
                reply = self.client.put_object(
                    Body=first, ChecksumSHA256=_b64(part_digest), **extra
                )
            return Uploaded(str(reply["VersionId"]), part_digest.hex(), len(first))
        return self._multipart(key, extra, digest, first, second, source, on_part)

    def _multipart(
        self,
        key: str,
        extra: dict[str, Any],
        digest: Any,
        first: bytes,
        second: bytes,
        source: Readable,
        on_part: Callable[[int], None] | None,
    ) -> Uploaded:
        what = f"put {self.url(key)}"
        with translated(what):
            upload_id = str(
                self.client.create_multipart_upload(ChecksumAlgorithm="SHA256", **extra)["UploadId"]
            )
        ident = {"Bucket": self.bucket, "Key": self.full_key(key), "UploadId": upload_id}
        digest.update(second)
        if on_part is not None:
            on_part(len(second))

        def bodies() -> Iterator[bytes]:
            yield first
            yield second
            while chunk := _read_part(source, self.part_size):
                digest.update(chunk)
                if on_part is not None:
                    on_part(len(chunk))
                yield chunk

        parts: list[dict[str, Any]] = []
        pending: deque[Future[dict[str, Any]]] = deque()
        size = 0
        try:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-part") as pool:
                try:
                    for number, body in enumerate(bodies(), 1):
                        if number > MAX_PARTS:
                            raise StoreError(f"{what}: more than {MAX_PARTS} parts")
                        size += len(body)
                        while len(pending) >= self.concurrency:
                            parts.append(pending.popleft().result())
                        pending.append(pool.submit(self._upload_part, what, ident, number, body))
                    while pending:
                        parts.append(pending.popleft().result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # no part after a failure
                    raise
            with translated(what):
                reply = self.client.complete_multipart_upload(
                    MultipartUpload={"Parts": parts}, **ident
                )
        except BaseException:
            self._abort(ident)
            raise
        return Uploaded(str(reply["VersionId"]), digest.hexdigest(), size)

    def _upload_part(
        self, what: str, ident: dict[str, Any], number: int, body: bytes
    ) -> dict[str, Any]:
        checksum = _b64(hashlib.sha256(body).digest())
        with translated(f"{what} (part {number})"):
            reply = self.client.upload_part(
                PartNumber=number, Body=body, ChecksumSHA256=checksum, **ident
            )
        return {"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": checksum}

    def _abort(self, ident: dict[str, Any]) -> None:
        try:
            with translated("abort"):
                self.client.abort_multipart_upload(**ident)
        except StoreError:
            pass  # the store's own clean-up of stale uploads removes the parts

    # -- locks ----------------------------------------------------------------------------

    def set_retention(self, key: str, version_id: str, until: datetime) -> None:
        """Extend the version's retention to ``until``; an earlier date is refused here.

        The mode stays the version's own (a change of mode is a change the store refuses
        without bypass), or ``lock_mode`` when it has none.
        """
        until = lock_date(until)
        info = self.head(key, version_id)
        if info.retain_until is not None and until < info.retain_until:
            raise StoreRefused(
                f"retention of {self.url(key)} ({version_id}) is until "
                f"{info.retain_until.isoformat()}: not shortened to {until.isoformat()}",
                "RetentionShortened",
                0,
            )
        mode = info.mode or self.lock_mode
        with translated(f"set retention of {self.url(key)} ({version_id})"):
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self.full_key(key),
                VersionId=version_id,
                Retention={"Mode": mode, "RetainUntilDate": until},
            )

    def set_legal_hold(self, key: str, version_id: str, on: bool) -> None:
        with translated(f"set legal hold of {self.url(key)} ({version_id})"):
            self.client.put_object_legal_hold(
                Bucket=self.bucket,
                Key=self.full_key(key),
                VersionId=version_id,
                LegalHold={"Status": "ON" if on else "OFF"},
            )

    def delete_version(self, key: str, version_id: str, bypass_governance: bool = False) -> None:
        """Delete one version for good (a locked or held one is ``StoreRefused``).

        ``bypass_governance`` sends ``x-amz-bypass-governance-retention``, which the store
        honours only for GOVERNANCE retention and only for credentials allowed to bypass.
        """
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.full_key(key),
            "VersionId": version_id,
        }
        if bypass_governance:
            args["BypassGovernanceRetention"] = True
        with translated(f"delete {self.url(key)} ({version_id})"):
            self.client.delete_object(**args)

    # -- reading --------------------------------------------------------------------------

    def head(self, key: str, version_id: str) -> ObjectInfo:
        with translated(f"head {self.url(key)} ({version_id})"):
            reply = self.client.head_object(
                Bucket=self.bucket, Key=self.full_key(key), VersionId=version_id
            )
        mode = reply.get("ObjectLockMode")
        until = reply.get("ObjectLockRetainUntilDate")
        modified = reply.get("LastModified")
        return ObjectInfo(
            key=key,
            version_id=str(reply.get("VersionId") or version_id),
            size=int(reply.get("ContentLength", 0)),
            mode=mode if mode in LOCK_MODES else None,
            retain_until=until.astimezone(UTC) if isinstance(until, datetime) else None,
            legal_hold=reply.get("ObjectLockLegalHoldStatus") == "ON",
            last_modified=modified.astimezone(UTC) if isinstance(modified, datetime) else None,
            metadata={str(k): str(v) for k, v in (reply.get("Metadata") or {}).items()},
        )

    def get_stream(self, key: str, version_id: str) -> ObjectReader:
        """A readable stream of the version's bytes; close it (or use ``with``)."""
        what = f"get {self.url(key)} ({version_id})"
        with translated(what):
            reply = self.client.get_object(
                Bucket=self.bucket, Key=self.full_key(key), VersionId=version_id
            )
        return ObjectReader(reply["Body"], what)

    def versions(self, prefix: str = "") -> Iterator[VersionInfo]:
        """Every version and delete marker under ``prefix`` (relative to the store's): by key,
        the latest first, then newest first. Keys are relative to the store's prefix."""
        full = self.full_key(prefix)
        what = f"list s3://{self.bucket}/{full}"
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full}
        while True:
            with translated(what):
                page = self.client.list_object_versions(**args)
            entries: list[VersionInfo] = []
            for item in page.get("Versions", []) or []:
                entries.append(self._version(item, delete_marker=False))
            for item in page.get("DeleteMarkers", []) or []:
                entries.append(self._version(item, delete_marker=True))
            # Versions and markers come in two lists: merge them back into key order, the
            # latest first, then newest first (a stable sort keeps the store's order on ties).
            entries.sort(key=_listing_order)
            yield from entries
            if not page.get("IsTruncated"):
                return
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["VersionIdMarker"] = page.get("NextVersionIdMarker")

    def keys(self, prefix: str = "") -> list[str]:
        """The keys under ``prefix`` that have at least one version that is not a marker."""
        found = {v.key for v in self.versions(prefix) if not v.delete_marker}
        return sorted(found)

    def _version(self, item: Mapping[str, Any], *, delete_marker: bool) -> VersionInfo:
        full = str(item["Key"])
        modified = item.get("LastModified")
        return VersionInfo(
            key=full[len(self.prefix) :] if full.startswith(self.prefix) else full,
            version_id=str(item.get("VersionId")),
            size=int(item.get("Size", 0)),
            latest=bool(item.get("IsLatest")),
            delete_marker=delete_marker,
            last_modified=modified.astimezone(UTC) if isinstance(modified, datetime) else None,
        )


def _listing_order(entry: VersionInfo) -> tuple[str, bool, float]:
    stamp = entry.last_modified.timestamp() if entry.last_modified is not None else 0.0
    return (entry.key, not entry.latest, -stamp)


class ObjectReader(io.RawIOBase):
    """A raw readable stream over a GET's body; a broken connection is ``StoreUnavailable``."""

    def __init__(self, body: Any, what: str) -> None:
        super().__init__()
        self._body = body
        self._what = what

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with translated(self._what):
            data: bytes = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def create_lock_bucket(
    endpoint: str | None,
    bucket: str,
    credentials: Credentials | None = None,
    *,
    region: str = REGION,
) -> bool:
    """Make ``bucket`` with Object Lock (and so versioning) enabled; True if made now.

    A bucket that already exists and is ours is accepted only if Object Lock is enabled on
    it (it cannot be turned on later on every store). Needs an admin's credentials, not a
    recorder host's.
    """
    client = make_client(endpoint, credentials, region=region)
    what = f"create bucket {bucket}"
    args: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
    if region != REGION:
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    made = True
    try:
        with translated(what):
            client.create_bucket(**args)
    except StoreRefused as exc:
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        made = False
    with translated(what):
        reply = client.get_object_lock_configuration(Bucket=bucket)
    if reply.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
        raise StoreRefused(f"{what}: exists without Object Lock", "NoLock", 409)
    return made
