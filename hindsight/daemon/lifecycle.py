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
from hindsight.daemon.pseudonym import Pseudonyms
from hindsight.durable import fsync_dir
from hindsight.errors import ProtocolError
from hindsight.layout import inside, sidecar_path
from hindsight.replies import RecordingRow
from hindsight.retention import Ledger, Recording, Terms

log = logging.getLogger(__name__)


class Deleter(Protocol):
    """Where deletions go to be done: the keeper, which hands them to the worker."""

    def delete(self, call_id: str, path: str) -> None: ...


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
    ) -> None:
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

    def kept_for(self, purpose: str) -> int:
        """How many recordings are kept for ``purpose`` now."""
        with self.log.still():
            return len(self.ledger.recordings(purpose, None))

    def _applied(self, entry: Mapping[str, Any]) -> None:
        self.ledger.apply(entry)  # under the log's lock, before anyone else may read the ledger

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
        self._delete(recording, "erased", actor=actor, reason=reason)

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

    def purge(self, dry_run: bool = False) -> list[str]:
        """Delete every recording due now (with ``dry_run``, only say which)."""
        with self.log.still():
            due = self.ledger.due(self.clock())
        if not dry_run:
            for recording in due:
                self._delete(recording, "expired")
        return [recording.call_id for recording in due]

    def _delete(self, recording: Recording, why: str, **by: str) -> None:
        # Logged first: a deletion the log holds is finished at the next start if need be.
        self.log.append(
            "recording_deleted", call_id=recording.call_id, path=recording.path, why=why, **by
        )
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
