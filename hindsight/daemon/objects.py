"""S3 backend: which object versions hold each live recording, and until when they are locked.

The ledger knows a recording's retention; the store knows its versions by id only. This
index, fed the same log lines as the ledger (``call_committed`` with ``version_id`` and
``sidecar_version_id``, then the ``recording_*`` lines), says for each recording in the store
which two versions to act on (``objects``) and the latest retain-until set on them
(``lock_until``): an extension that ends later raises it, a resolve that ends sooner
leaves it, since the store never shortens a lock. The erasure and purge rules read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hindsight.clock import parse_iso
from hindsight.daemon.s3store import LOCK_MARGIN, sidecar_key, split_url
from hindsight.objectstore import SCHEME


@dataclass(slots=True)
class Stored:
    """A recording's two versions in the store."""

    key: str
    version_id: str
    sidecar_key: str
    sidecar_version_id: str
    ends: dict[str, datetime | None]  # per purpose, as the log has it now
    lock_until: datetime | None  # the latest retain-until asked of the store
    held: bool = False
    hold_changed: bool = False  # a hold was set or released since the commit
    lock_raised: bool = False  # lock_until is later than the commit's retain_until

    def objects(self) -> list[list[str]]:
        return [[self.key, self.version_id], [self.sidecar_key, self.sidecar_version_id]]

    def locked(self, now: datetime) -> bool:
        return self.lock_until is not None and self.lock_until > now


class ObjectIndex:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self._stored: dict[str, Stored] = {}

    @classmethod
    def of(cls, bucket: str, entries: Iterable[Mapping[str, Any]]) -> ObjectIndex:
        index = cls(bucket)
        for entry in entries:
            index.apply(entry)
        return index

    def get(self, call_id: str) -> Stored | None:
        return self._stored.get(call_id)

    def all(self) -> list[tuple[str, Stored]]:
        return list(self._stored.items())

    def apply(self, entry: Mapping[str, Any]) -> datetime | None:
        """Take a log line into account; a new ``lock_until`` to ask the store for, if any."""
        event, call_id = entry.get("event"), entry.get("call_id")
        if not isinstance(call_id, str):
            return None
        if event == "call_committed":
            self._committed(call_id, entry)
            return None
        stored = self._stored.get(call_id)
        if stored is None:
            return None
        if event == "recording_deleted":
            del self._stored[call_id]
        elif event in ("recording_held", "recording_released"):
            stored.held, stored.hold_changed = event == "recording_held", True
        elif event in ("recording_extended", "recording_resolved"):
            until = entry.get("retain_until")
            stored.ends[str(entry.get("purpose"))] = None if until is None else parse_iso(until)
            return self._raise_lock(stored)
        return None

    def _committed(self, call_id: str, entry: Mapping[str, Any]) -> None:
        version, sidecar_version = entry.get("version_id"), entry.get("sidecar_version_id")
        path = entry.get("path")
        if not (isinstance(version, str) and isinstance(sidecar_version, str)):
            return  # a recording on local disk
        if not isinstance(path, str) or not path.startswith(SCHEME):
            return
        key = split_url(path, self.bucket) if path.startswith(f"{SCHEME}{self.bucket}/") else None
        if key is None:
            return  # another bucket's (a changed config): not ours to act on
        retention = entry.get("retention") or {}
        ends = {
            str(name): None if until is None else parse_iso(until)
            for name, until in retention.items()
        }
        until, logged = entry.get("retain_until"), entry.get("time")
        lock = None if until is None else parse_iso(until)
        if lock is not None and isinstance(logged, str):
            # An upload locks a few seconds at least (LOCK_MARGIN, rounded up to the second),
            # even when the retention passed during an outage: until then the store refuses.
            lock = max(lock, parse_iso(logged) + LOCK_MARGIN + timedelta(seconds=1))
        self._stored[call_id] = Stored(
            key, version, sidecar_key(key, call_id), sidecar_version, ends, lock
        )

    @staticmethod
    def _raise_lock(stored: Stored) -> datetime | None:
        ends = list(stored.ends.values())
        if not ends or any(end is None for end in ends):
            return None
        latest = max(end for end in ends if end is not None)
        if stored.lock_until is not None and latest <= stored.lock_until:
            return None
        stored.lock_until, stored.lock_raised = latest, True
        return latest
