"""The S3 backend's calls to the object store, as the keeper sees them: one lane, in order.

The keeper thread owns a ``Lane``: uploads of spooled calls, and the deletions, legal holds
and retention changes of recordings in the store. It sends one at a time to the worker's
store thread, so that the daemon never waits on the store, and the audio path and the
control loop never notice it.

Rules:

- In order: uploads go in the order the calls were kept (a later upload never passes an
  earlier one), and an operation is retried in its place.
- A store that cannot be reached (``unavailable``) pauses the whole lane with a backoff
  (``RETRY_FIRST`` doubling to ``RETRY_MAX``); an operation the store refuses waits on its
  own (doubling to ``REFUSED_MAX``) and the others go on.
- An upload's ``call_committed`` is logged when the worker says it is in the store, and only
  if the call is still open (each call gets exactly one outcome: a redo after a crash finds
  it logged); then its spool entry is removed.
- The journal gets counts, never a call: the store going and coming back, and every
  ``REPORT_SECONDS`` while the store is unreachable or the spool is over its limit, what the
  spool holds (entries and MiB). Never at the moment a call is spooled or uploaded, so that
  its timing says nothing about which call was kept.
- At a stop, the lane goes on while the store does what it is asked; at its first failure
  what is left stays for the next start (recordings in the spool, deletions in the log).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hindsight.commitlog import CommitLog
from hindsight.daemon.spool import Spool
from hindsight.errors import HindsightError

log = logging.getLogger("hindsight.daemon.keeper")

RETRY_FIRST = 0.5
RETRY_MAX = 10.0
REFUSED_MAX = 300.0
REPORT_SECONDS = 60.0


@dataclass
class StoreOp:
    """One call to the store: ``upload`` (``entry``, a spool manifest's name), ``s3delete``,
    ``hold`` or ``retain`` (``objects``: ``[key, version_id]`` pairs)."""

    number: str
    kind: str
    fields: dict[str, Any]
    recovered: bool = False  # an upload of a call the last run left open
    due: float = 0.0
    delay: float = RETRY_FIRST
    result: dict[str, Any] | None = None  # an upload's fields, until they are logged

    def message(self) -> dict[str, Any]:
        return {"kind": self.kind, "job": self.number, **self.fields}


Failed = Callable[[str], None]


class Lane:
    def __init__(
        self,
        commit_log: CommitLog,
        spool: Spool,
        limit_bytes: int,
        on_failure: Failed | None = None,
        report_seconds: float = REPORT_SECONDS,
    ) -> None:
        self.log = commit_log
        self.spool = spool
        self.limit_bytes = limit_bytes
        self.on_failure = on_failure
        self.report_seconds = report_seconds
        self.ops: deque[StoreOp] = deque()
        self.busy: StoreOp | None = None
        self.paused_until = 0.0
        self.pause = RETRY_FIRST
        self.down_since: float | None = None  # monotonic, while the store cannot be reached
        self.uploaded_since_down = 0
        self.stopping = False
        self.stalled = False  # stopping, and the store did not answer: leave the rest
        self.next_report = 0.0
        self._numbers = 0

    # -- adding (keeper thread) -------------------------------------------------------------

    def add(self, kind: str, fields: dict[str, Any], recovered: bool = False) -> None:
        self._numbers += 1
        self.ops.append(StoreOp(f"s3-{self._numbers}", kind, fields, recovered))

    def upload(self, entry: str, recovered: bool = False) -> None:
        self.add("upload", {"entry": entry}, recovered)

    # -- state --------------------------------------------------------------------------------

    def finished(self) -> bool:
        """Nothing in flight, and nothing left that a stopping daemon should wait for."""
        return self.busy is None and (not self.ops or self.stalled)

    def deletions_pending(self) -> bool:
        ops = [*self.ops, *([self.busy] if self.busy is not None else [])]
        return any(op.kind == "s3delete" for op in ops)

    # -- sending ------------------------------------------------------------------------------

    def next(self, now: float) -> StoreOp | None:
        """The operation to send now, if any (taken off the queue; ``busy`` until replied)."""
        if self.busy is not None or self.stalled or now < self.paused_until:
            return None
        upload_waits = False
        for op in self.ops:
            if op.kind == "upload" and upload_waits:
                continue
            if op.due <= now:
                if op.result is not None:  # uploaded; only its log line is missing
                    self._commit(op, op.result, now)
                    return None
                self.busy = op
                return op
            upload_waits = upload_waits or op.kind == "upload"
        return None

    def lost(self) -> None:
        """The worker died with ``busy``: it is sent again (every operation is idempotent)."""
        self.busy = None

    # -- replies ------------------------------------------------------------------------------

    def reply(self, message: dict[str, Any], now: float) -> None:
        op, self.busy = self.busy, None
        assert op is not None
        step = message.get("step")
        if step == "failed":
            self._failed(op, str(message.get("error")), bool(message.get("unavailable")), now)
            return
        self._came_back(now)
        if step == "uploaded":
            self._commit(op, dict(message["fields"]), now)
            return
        self.ops.remove(op)
        log.debug("a store operation done (%s)", op.kind)

    def _commit(self, op: StoreOp, fields: dict[str, Any], now: float) -> None:
        """Log the upload's ``call_committed`` unless logged already; then drop the entry."""
        call_id = str(fields["call_id"])
        if call_id in self.log.open_calls:
            extra = {"recovered": True} if op.recovered else {}
            try:
                self.log.append("call_committed", **fields, **extra)
            except HindsightError as exc:
                op.result, op.due = fields, now + RETRY_FIRST
                log.error("cannot log an uploaded call's outcome yet: %s; retrying", exc)
                return
        self.ops.remove(op)
        self.uploaded_since_down += 1
        try:
            self.spool.remove_entry(self.spool.entry(str(op.fields["entry"])))
        except (OSError, ValueError) as exc:
            log.error("an uploaded recording's spool files could not be removed: %s", exc)

    def _failed(self, op: StoreOp, error: str, unavailable: bool, now: float) -> None:
        if self.on_failure is not None:
            self.on_failure(error)
        if self.stopping:
            # What is left waits for the next start: recordings in the spool, deletions in
            # the log (done again then).
            self.stalled = True
            left = sum(o.kind == "upload" for o in self.ops)
            log.warning(
                "stopping while the object store fails (%s): %d recording(s) stay in the "
                "spool; the next start uploads them",
                error,
                left,
            )
            return
        if unavailable:
            if self.down_since is None:
                self.down_since, self.uploaded_since_down = now, 0
                self.next_report = now + self.report_seconds
                log.warning(
                    "the object store is unavailable (%s): kept calls wait in the spool and "
                    "are uploaded when it is back",
                    error,
                )
            self.paused_until = now + self.pause
            self.pause = min(self.pause * 2, RETRY_MAX)
            return
        # Refused: this operation waits on its own, the others go on.
        log.error("the object store refused a %s: %s; retry in %.0f s", op.kind, error, op.delay)
        op.due = now + op.delay
        op.delay = min(op.delay * 2, REFUSED_MAX)

    def _came_back(self, now: float) -> None:
        self.pause = RETRY_FIRST
        if self.down_since is not None:
            log.warning(
                "the object store is back after %.0f s; uploading what the spool holds",
                now - self.down_since,
            )
            self.down_since = None

    # -- the spool's figure -------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Every ``report_seconds``: the spool's figure when it is over its limit (an error)
        or the store is unreachable (a warning). Counts only, at times of its own."""
        if now < self.next_report:
            return
        self.next_report = now + self.report_seconds
        self.report(now)

    def report(self, now: float | None = None) -> None:
        usage = self.spool.usage()
        limit_mib = self.limit_bytes / (1 << 20)
        if usage.bytes > self.limit_bytes:
            log.error(
                "the upload spool holds %d recording(s), %.1f MiB: over storage."
                "s3_spool_limit_mb (%.0f MiB)%s. Nothing is dropped: free disk space for it, "
                "or bring the object store back",
                usage.entries,
                usage.mib,
                limit_mib,
                self._down_for(now),
            )
        elif self.down_since is not None and usage.entries:
            log.warning(
                "the upload spool holds %d recording(s), %.1f MiB (limit %.0f MiB)%s",
                usage.entries,
                usage.mib,
                limit_mib,
                self._down_for(now),
            )

    def _down_for(self, now: float | None) -> str:
        if self.down_since is None:
            return ""
        at = time.monotonic() if now is None else now
        return f"; the object store has been unavailable for {at - self.down_since:.0f} s"
