"""The S3 backend's half in the worker process: the spool's writer and every call to the store.

``S3Store`` runs in the worker only (the daemon never waits on the store):

- ``spool`` writes a kept call into the spool (``hindsight.daemon.spool``), encoded and
  encrypted exactly as ``store.Store`` writes it under recordings/, and names the entry;
  a redo finds a whole entry of the call and names it again, and removes a partial one first.
- ``upload`` puts an entry's recording and then its sidecar into the bucket
  (``{prefix}recordings/YYYY/MM/DD/<call_id>.flac[.age]`` and ``<call_id>.json``, see
  /work/notes/s3-layout.md), each locked from its first instant until the call's
  ``retain_until`` in ``s3_lock_mode``, and returns the ``call_committed`` fields. It is
  idempotent: a version of the key whose ``sha256`` metadata matches is taken, not uploaded
  again (a worker that died after the upload, or a daemon that died before its log line).
- ``delete``, ``hold`` and ``retain`` act on named versions (never on "the latest").

Errors are ``objectstore.StoreUnavailable`` (try again later) or other ``StoreError``s.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hindsight.clock import parse_iso
from hindsight.daemon.buffer import Int16Array
from hindsight.daemon.encode import FlacStream, pour
from hindsight.daemon.kept import Keep
from hindsight.daemon.spool import Entry, Spool
from hindsight.daemon.store import COPY_BLOCK, Sink, sealed_notes, write_durably
from hindsight.errors import StoreError
from hindsight.layout import ENCRYPTED_SUFFIX, RECORDING_SUFFIX, RECORDINGS
from hindsight.objectstore import (
    SCHEME,
    LockMode,
    ObjectStore,
    StoreRefused,
    read_credentials,
)
from hindsight.record import Committed

# The soonest lock an upload sets (the store refuses a retain-until in the past, and the
# request takes time), and the soonest a ``retain`` asks for.
LOCK_MARGIN = timedelta(seconds=5)


def _quiet() -> None:
    pass


class QuietError(StoreError):
    """A failure whose message names no call, key or file: it may go to the journal."""


@dataclass(frozen=True)
class Settings:
    """What the worker needs of ``[storage]`` for the S3 backend (sent on its command line)."""

    endpoint: str
    bucket: str
    prefix: str
    lock_mode: LockMode
    credentials_file: str | None

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Settings:
        return cls(**data)


def split_url(url: str, bucket: str) -> str:
    """The key of ``s3://BUCKET/KEY`` (StoreError for another bucket or a non-s3 path)."""
    head = f"{SCHEME}{bucket}/"
    if not url.startswith(head) or len(url) == len(head):
        raise StoreError(f"not an object of bucket {bucket}: {url!r}")
    return url[len(head) :]


def sidecar_key(recording_key: str, call_id: str) -> str:
    folder = recording_key.rpartition("/")[0]
    return f"{folder}/{call_id}.json"


class S3Store:
    def __init__(self, state_dir: Path, settings: Settings, tick: Callable[[], None] = _quiet):
        self.spool_dir = Spool(state_dir)
        self.settings = settings
        self.tick = tick
        self._store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        """The store, made on first use (a credentials file that cannot be read is a failed
        job, retried, not a worker that cannot start)."""
        if self._store is None:
            s = self.settings
            path = s.credentials_file
            try:
                credentials = None if path is None else read_credentials(Path(path))
            except StoreError as exc:
                raise QuietError(str(exc)) from exc  # names the file, never the secret
            self._store = ObjectStore(s.endpoint, s.bucket, "", s.lock_mode, credentials)
        return self._store

    # -- the spool ---------------------------------------------------------------------------

    def spool(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Entry:
        """Write a kept call into the spool; the entry (an earlier whole one, on a redo)."""
        spool = self.spool_dir
        done = spool.find(keep.call_id)
        if done is not None and spool.whole(done) is not None:
            return done
        spool.remove(spool.files_of(keep.call_id))
        entry = Entry(spool.next_number(), keep.call_id, "")
        encrypted = bool(keep.recipients)
        suffix = ENCRYPTED_SUFFIX if encrypted else RECORDING_SUFFIX
        final = spool.root / f"{entry.stem}{suffix}"

        def fill(sink: Sink) -> None:
            flac = FlacStream(views, keep.samplerate, keep.channels, frames)
            with flac:
                pour(flac, sink, keep.recipients, COPY_BLOCK)

        path, digest = write_durably(final, fill, self.tick)
        key = f"{self.settings.prefix}{RECORDINGS}/{keep.folder}/{keep.call_id}{suffix}"
        manifest = {
            "call_id": keep.call_id,
            "key": key,
            "sha256": digest,
            "size": path.stat().st_size,
            "fields": keep.fields,
            "sidecar": sealed_notes(keep.extra, keep.recipients),
        }
        text = json.dumps(manifest, ensure_ascii=False, sort_keys=True) + "\n"
        name = f"{entry.stem}.json"
        try:
            write_durably(spool.root / name, lambda sink: sink.write(text.encode()))
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return spool.entry(name)

    # -- the store ---------------------------------------------------------------------------

    def upload(self, name: str) -> dict[str, Any]:
        """Upload a spool entry (recording, then sidecar); its ``call_committed`` fields."""
        spool = self.spool_dir
        entry = spool.entry(name)
        manifest = spool.whole(entry)
        if manifest is None:
            raise QuietError("a spooled recording is missing or does not match its hash")
        key = str(manifest["key"])
        until = self._lock_until(manifest["fields"].get("retain_until"))
        with spool.recording(entry, manifest).open("rb") as source:
            version = self._put(key, source, str(manifest["sha256"]), until)
        fields = dict(
            manifest["fields"],
            path=self.store.url(key),
            sha256=manifest["sha256"],
            version_id=version,
        )
        committed = Committed.from_log(fields)
        sidecar = dict(committed.to_log(), **manifest["sidecar"])
        text = json.dumps(sidecar, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        data = text.encode()
        digest = hashlib.sha256(data).hexdigest()
        side = self._put(sidecar_key(key, entry.call_id), io.BytesIO(data), digest, until)
        return dict(committed.to_log(), sidecar_version_id=side)

    def _lock_until(self, retain_until: object) -> datetime | None:
        """The call's ``retain_until``; a little later when that has (nearly) passed, since a
        store refuses a date in the past (an upload after a long outage): the object is then
        locked a few seconds past its retention, never less than it."""
        if not isinstance(retain_until, str):
            return None  # kept until resolved, without a cap: nothing to lock until
        return max(parse_iso(retain_until), datetime.now(UTC) + LOCK_MARGIN)

    def _put(self, key: str, source: Any, sha256: str, until: datetime | None) -> str:
        """The version of ``key`` holding these bytes: one already there, else a new one."""
        store = self.store
        for version in store.versions(key):
            if version.key != key or version.delete_marker:
                continue
            if store.head(key, version.version_id).metadata.get("sha256") == sha256:
                return version.version_id
        uploaded = store.put_stream(
            key, source, until, metadata={"sha256": sha256}, on_part=lambda _: self.tick()
        )
        if uploaded.sha256 != sha256:
            raise QuietError("a spooled recording changed while it was uploaded")
        return uploaded.version_id

    def delete(self, objects: list[tuple[str, str]], bypass: bool) -> None:
        for key, version in objects:
            self.store.delete_version(key, version, bypass_governance=bypass)
            self.tick()

    def hold(self, objects: list[tuple[str, str]], on: bool) -> None:
        for key, version in objects:
            self.store.set_legal_hold(key, version, on)
            self.tick()

    def retain(self, objects: list[tuple[str, str]], until: str) -> None:
        moment = parse_iso(until)
        if moment <= datetime.now(UTC) + LOCK_MARGIN:
            return  # a date in the past is refused by the store, and would lock nothing
        for key, version in objects:
            try:
                self.store.set_retention(key, version, moment)
            except StoreRefused as exc:
                if exc.code != "RetentionShortened":
                    raise  # a later lock is there already: nothing to do
            self.tick()
