"""What happens to a recording after it is kept: review, legal hold, erasure, purge.

Every step goes through the daemon so that it lands in the commit log, and the
log is the truth: the retention ledger is rebuilt from it at start-up and then
follows every line appended (``CommitLog.listen``), whoever appends it.

Rules:

- Decide, log, then act. The ledger decides (``hindsight.retention``); the
  event is appended; a deletion is then handed to the worker, which unlinks
  the recording and its sidecar durably. A daemon that dies between the log
  line and the unlink finishes the deletion at its next start
  (``finish_deletions``).
- Nothing held is ever deleted, not by purge, not by erase.
- ``purge`` deletes exactly the recordings due now (every purpose's
  ``retain_until`` passed, none held), each with its own ``recording_deleted``
  (``why: "expired"``). The daemon purges by itself at start-up and every
  ``retention.purge_interval_seconds``.
- ``recordings {caller}`` finds a caller's recordings through the caller's keyed
  pseudonym (``pseudonym``): a subject access request; the number is never kept.
- With the S3 backend (``objects`` and ``store_ops`` given), the same log lines drive the
  store: ``recording_held``/``recording_released`` set and clear the legal hold of both
  versions (recording and sidecar), an extension or resolve that ends later than the lock
  extends it, and a deletion deletes both versions (``recording_deleted`` names them).
  A version the store still locks is not deleted: ``erase`` is refused (``not_allowed``)
  unless ``storage.s3_erase_bypass`` (GOVERNANCE only), and ``purge`` leaves it until the
  lock ends (a resolve may end a purpose sooner than the lock set at commit).
- The daemon's own log (the journal) names no call here: only kept calls have recordings,
  so a line naming the call of a hold, a review or a deletion would tell which calls were
  kept. It says what was done, by whom, and how many; the commit log says to which call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from hindsight.clock import iso, utcnow
from hindsight.commitlog import CommitLog
from hindsight.config import Config
from hindsight.daemon.objects import ObjectIndex
from hindsight.daemon.pseudonym import Pseudonyms
from hindsight.daemon.s3store import sidecar_key, split_url
from hindsight.durable import fsync_dir
from hindsight.errors import ProtocolError, StoreError
from hindsight.layout import inside, sidecar_path
from hindsight.replies import RecordingRow
from hindsight.retention import Ledger, Recording, Terms

log = logging.getLogger(__name__)


class Deleter(Protocol):
    """Where deletions go to be done: the keeper, which hands them to the worker."""

    def delete(self, call_id: str, path: str) -> None: ...


class StoreOps(Protocol):
    """S3 backend: where calls to the object store go (the keeper, to the worker's lane)."""

    def store(self, kind: str, fields: dict[str, Any], recovered: bool = False) -> None: ...


def terms(config: Config) -> dict[str, Terms]:
    """Each configured purpose's retention terms, as the ledger takes them."""
    return {purpose.name: Terms.of(purpose) for purpose in config.purposes}


class Lifecycle:
    def __init__(
        self,
        config: Config,
        ledger: Ledger,
        commit_log: CommitLog,
        deleter: Deleter,
        pseudonyms: Pseudonyms,
        clock: Callable[[], datetime] = utcnow,
        objects: ObjectIndex | None = None,
        store_ops: StoreOps | None = None,
    ) -> None:
        self.objects = objects
        self.store_ops = store_ops
        self.storage = config.storage
        self.pseudonyms = pseudonyms
        self.terms = terms(config)
        self.ledger = ledger
        self.log = commit_log
        self.deleter = deleter
        self.clock = clock
        commit_log.listen(self._applied)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config's retention terms, for resolve and extend from now on."""
        self.terms = terms(config)
        self.storage = config.storage

    def kept_for(self, purpose: str) -> int:
        """How many recordings are kept for ``purpose`` now."""
        with self.log.still():
            return len(self.ledger.recordings(purpose, None))

    def _applied(self, entry: Mapping[str, Any]) -> None:
        self.ledger.apply(entry)  # under the log's lock, before anyone else may read the ledger
        if self.objects is None or self.store_ops is None:
            return
        # S3: the store follows the log (logged first, then done by the worker, in order).
        stored = self.objects.get(str(entry.get("call_id")))
        later = self.objects.apply(entry)
        event = entry.get("event")
        if stored is not None and event in ("recording_held", "recording_released"):
            fields = {"objects": stored.objects(), "on": event == "recording_held"}
            self.store_ops.store("hold", fields)
        if stored is not None and later is not None:
            self.store_ops.store("retain", {"objects": stored.objects(), "until": iso(later)})

    def recordings(self, purpose: str | None, caller: str | None) -> list[RecordingRow]:
        caller_ref = None if caller is None else self.pseudonyms.ref(caller)
        with self.log.still():
            found = self.ledger.recordings(purpose, caller_ref)
            return [recording.row() for recording in found]

    def resolve(self, call_id: str, purpose: str, actor: str, reason: str) -> str:
        with self.log.still():
            until = self.ledger.resolve(call_id, purpose, self.clock(), self.terms)
        return self._set_purpose("recording_resolved", call_id, purpose, until, actor, reason)

    def extend(self, call_id: str, purpose: str, days: float, actor: str, reason: str) -> str:
        with self.log.still():
            until = self.ledger.extend(call_id, purpose, days, self.clock(), self.terms)
        return self._set_purpose("recording_extended", call_id, purpose, until, actor, reason)

    def _set_purpose(
        self, event: str, call_id: str, purpose: str, until: datetime, actor: str, reason: str
    ) -> str:
        retain_until = iso(until)
        self.log.append(
            event,
            call_id=call_id,
            purpose=purpose,
            retain_until=retain_until,
            actor=actor,
            reason=reason,
        )
        log.info("%s: a recording for %s until %s, by %s", event, purpose, retain_until, actor)
        return retain_until

    def hold(self, call_id: str, actor: str, reason: str) -> None:
        with self.log.still():
            self.ledger.check_hold(call_id)
        self.log.append("recording_held", call_id=call_id, actor=actor, reason=reason)
        log.info("a recording held by %s", actor)

    def release(self, call_id: str, actor: str, reason: str) -> None:
        with self.log.still():
            self.ledger.check_release(call_id)
        self.log.append("recording_released", call_id=call_id, actor=actor, reason=reason)
        log.info("a recording released by %s", actor)

    def erase(self, call_id: str, actor: str, reason: str) -> None:
        with self.log.still():
            recording = self.ledger.check_erasable(call_id)
        bypass = self._check_lock(call_id)
        self._delete(recording, "erased", bypass, actor=actor, reason=reason)

    def _check_lock(self, call_id: str) -> bool:
        """S3: whether an erasure needs to bypass the store's lock; ``not_allowed`` when it
        needs to and may not (COMPLIANCE, or ``storage.s3_erase_bypass`` off)."""
        stored = None if self.objects is None else self.objects.get(call_id)
        if stored is None or not stored.locked(self.clock()):
            return False
        mode = self.storage.s3_lock_mode
        if mode == "GOVERNANCE" and self.storage.s3_erase_bypass:
            return True
        assert stored.lock_until is not None
        why = (
            "no one can delete a COMPLIANCE version before then"
            if mode == "COMPLIANCE"
            else "an early erasure needs storage.s3_erase_bypass and credentials allowed to "
            "bypass GOVERNANCE retention"
        )
        raise ProtocolError(
            "not_allowed",
            f"call {call_id!r}: the object store's lock ({mode}) holds its recording until "
            f"{iso(stored.lock_until)}: {why}",
        )

    def access(self, call_id: str, actor: str, reason: str) -> Recording:
        """Log that ``actor`` opens the recording of ``call_id`` and why; return it. Refused
        with ``unknown_call`` when it does not exist (never kept, or deleted)."""
        with self.log.still():
            recording = self.ledger.get(call_id)
        if recording is None:
            gone = self.log.deleted_entry(call_id)
            deleted = "" if gone is None else f": it was deleted ({gone['why']}) at {gone['time']}"
            raise ProtocolError("unknown_call", f"call {call_id!r} has no recording{deleted}")
        self.log.append("recording_accessed", call_id=call_id, actor=actor, reason=reason)
        log.info("a recording accessed by %s", actor)
        return recording

    def version_of(self, call_id: str) -> str | None:
        """The version of the object that holds ``call_id``'s recording (S3), else None."""
        stored = None if self.objects is None else self.objects.get(call_id)
        return None if stored is None else stored.version_id

    def purge(self, dry_run: bool = False) -> list[str]:
        """Delete every recording due now (with ``dry_run``, only say which)."""
        now = self.clock()
        with self.log.still():
            due = self.ledger.due(now)
        if self.objects is not None:
            # Until its lock ends the store refuses the delete: the purge after that takes it.
            objects = self.objects
            due = [r for r in due if not ((s := objects.get(r.call_id)) and s.locked(now))]
        if not dry_run:
            for recording in due:
                self._delete(recording, "expired")
        return [recording.call_id for recording in due]

    def _delete(self, recording: Recording, why: str, bypass: bool = False, **by: str) -> None:
        # Logged first: a deletion the log holds is finished at the next start if need be.
        stored = None if self.objects is None else self.objects.get(recording.call_id)
        versions: dict[str, Any] = {}
        if stored is not None:
            versions = {
                "version_id": stored.version_id,
                "sidecar_version_id": stored.sidecar_version_id,
            }
        self.log.append(
            "recording_deleted",
            call_id=recording.call_id,
            path=recording.path,
            why=why,
            **versions,
            **by,
        )
        if stored is not None and self.store_ops is not None:
            self.store_ops.store("s3delete", {"objects": stored.objects(), "bypass": bypass})
        else:
            self.deleter.delete(recording.call_id, recording.path)
        log.info("a recording deleted (%s)", why)


def finish_deletions(ledger: Ledger, commit_log: CommitLog, state_dir: Path) -> None:
    """At start-up: unlink what a deletion logged before a crash left behind (the log's index
    says which deletions were logged since the last start made sure of theirs)."""
    for deletion in commit_log.pending_deletions():
        call_id = deletion["call_id"]
        if ledger.get(call_id) is not None:
            continue  # committed again since (a recovered recording)
        recording = inside(state_dir, str(deletion["path"]))
        if recording is None:
            # Not the path itself: it names the call (the commit log has it, for the auditor).
            log.error("not following a logged deletion's path out of recordings/")
            continue
        left = [p for p in (recording, sidecar_path(recording, call_id)) if p.exists()]
        for path in left:
            path.unlink()
        if left:
            fsync_dir(recording.parent)
            log.warning(
                "finished the deletion of a recording, cut short by a crash (%d files)", len(left)
            )
    commit_log.deletions_done()


def finish_store_deletions(
    commit_log: CommitLog, objects: ObjectIndex, ops: StoreOps, may_bypass: bool
) -> None:
    """S3, at start-up: do again every deletion logged since the last clean stop (deleting a
    version that is gone already is fine); ``deletions_done`` is called at a clean stop,
    once the store has done them all."""
    again = 0
    for deletion in commit_log.pending_deletions():
        path, version = deletion.get("path"), deletion.get("version_id")
        sidecar_version = deletion.get("sidecar_version_id")
        if not (isinstance(path, str) and isinstance(version, str)):
            continue
        if not isinstance(sidecar_version, str):
            continue
        try:
            key = split_url(path, objects.bucket)
        except StoreError:
            log.error("a logged deletion names another bucket; not done here")
            continue
        call_id = str(deletion["call_id"])
        pairs = [[key, version], [sidecar_key(key, call_id), sidecar_version]]
        bypass = may_bypass and deletion.get("why") == "erased"
        ops.store("s3delete", {"objects": pairs, "bypass": bypass})
        again += 1
    if again:
        log.warning("%d deletion(s) logged before the last stop are done again in the store", again)
    # A hold, release or extension logged just before a crash may not have reached the store:
    # set each changed hold and raised lock again as the log has it (idempotent, and few).
    for _, stored in objects.all():
        if stored.hold_changed:
            ops.store("hold", {"objects": stored.objects(), "on": stored.held})
        if stored.lock_raised and stored.lock_until is not None:
            until = iso(stored.lock_until)
            ops.store("retain", {"objects": stored.objects(), "until": until})
