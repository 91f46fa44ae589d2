"""The committer thread: the one place where an ended call gets its outcome.

Every ended call, kept or not, passes through this queue, so the control loop
answers ``end`` at once and in the same time whatever the call's fate: the
agent cannot learn from a reply's timing that a call was sampled.

- Kept call: FLAC and sidecar written durably, then ``call_committed``
  appended, then its memory zeroed and returned to the pool.
- Unkept call: its memory zeroed first, then ``call_wiped`` appended.
- A step that fails (a full disk) is retried with a backoff, each step on its
  own, while other calls go on being settled: a call waiting for disk space
  never holds up the wipe of another. The call stays in memory until it is
  on disk.
- At shutdown the retries go on, with real delays, until ``close``'s
  deadline. A kept call that still cannot be written then gets the outcome
  ``call_wiped`` with ``why: "store_failed"``: every call gets exactly one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from hindsight.commitlog import CommitLog
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.store import Committed, Store
from hindsight.errors import HindsightError

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 60.0
SHUTDOWN_GRACE = 60.0  # seconds a stopping daemon keeps retrying writes


@dataclass
class Job:
    """A call on its way to its outcome; remembers the steps already done."""

    call: Call
    delay: float
    committed: Committed | None = None
    zeroed: bool = False
    due: float = 0.0


class Committer:
    def __init__(
        self,
        table: CallTable,
        store: Store,
        commit_log: CommitLog,
        retry_first: float = RETRY_FIRST,
    ) -> None:
        self.table = table
        self.retry_first = retry_first
        self.store = store
        self.log = commit_log
        self._queue: queue.Queue[Call | None] = queue.Queue()
        self._retries: list[Job] = []
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, call: Call) -> None:
        self._queue.put(call)

    def finish(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Settle every call handed in so far, retrying for at most ``grace`` seconds, then stop."""
        self._deadline = time.monotonic() + grace
        self._queue.put(None)

    def wait(self, timeout: float | None = None) -> bool:
        """True once ``finish`` has settled every call."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        stopping = False
        while not stopping or self._retries:
            try:
                call = self._queue.get(timeout=self._wait())
            except queue.Empty:
                call = None
            else:
                stopping = stopping or call is None
            if call is not None:
                self._attempt(Job(call, delay=self.retry_first))
            self._retry_due(stopping)

    def _wait(self) -> float | None:
        if not self._retries:
            return None
        wake = min(min(job.due for job in self._retries), self._deadline)
        return max(0.0, wake - time.monotonic())

    def _retry_due(self, stopping: bool) -> None:
        now = time.monotonic()
        if stopping and now >= self._deadline:
            late, self._retries = self._retries, []
            for job in late:
                self._give_up(job)
            return
        due = [job for job in self._retries if job.due <= now]
        self._retries = [job for job in self._retries if job.due > now]
        for job in due:
            self._attempt(job)

    def _attempt(self, job: Job) -> None:
        try:
            self._settle(job)
            return
        except HindsightError as exc:
            log.error(
                "call %s not settled yet: %s; retry in %.0f s", job.call.call_id, exc, job.delay
            )
        except Exception:  # a bug must not lose the call either
            log.exception(
                "call %s: unexpected failure; retry in %.0f s", job.call.call_id, job.delay
            )
        job.due = time.monotonic() + job.delay
        job.delay = min(job.delay * 2, RETRY_MAX)
        self._retries.append(job)

    def _settle(self, job: Job) -> None:
        call = job.call
        if not call.kept:
            self._zero(job)
            self._log_wipe(call, "not_kept")
            log.info("call %s wiped", call.call_id)
            return
        if job.committed is None:
            job.committed = self.store.commit(call)
        self.log.append("call_committed", **job.committed.fields)
        self._zero(job)
        log.info("call %s committed (%s)", call.call_id, ", ".join(job.committed.fields["reasons"]))

    def _zero(self, job: Job) -> None:
        if not job.zeroed:
            self.table.release(job.call)
            job.zeroed = True

    def _log_wipe(self, call: Call, why: str) -> None:
        self.log.append(
            "call_wiped",
            call_id=call.call_id,
            line=call.line.name,
            seconds=round(call.seconds(), 3),
            why=why,
        )

    def _give_up(self, job: Job) -> None:
        """Shutdown deadline: zero the call and give it the outcome it really had."""
        call = job.call
        self._zero(job)
        if job.committed is not None:
            log.critical(
                "call %s is on disk but not in the log; the next start logs it", call.call_id
            )
            return
        try:
            self._log_wipe(call, "store_failed" if call.kept else "not_kept")
        except HindsightError as exc:
            log.critical("call %s has no outcome in the log: %s", call.call_id, exc)
            return
        if call.kept:
            log.critical(
                "call %s could not be written before shutdown; logged as wiped", call.call_id
            )
