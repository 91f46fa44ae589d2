"""The committer thread: the one place where an ended call gets its outcome.

Every ended call, kept or not, passes through this queue, so the control loop
answers ``end`` at once and in the same time whatever the call's fate: the
agent cannot learn from a reply's timing that a call was sampled.

- Kept call: FLAC and sidecar written durably, then ``call_committed``
  appended, then its memory zeroed and returned to the pool.
- Unkept call: its memory zeroed first, then ``call_wiped`` appended.
- A failed write (a full disk) is retried with a backoff; the call stays in
  memory until it is on disk. Nothing kept is dropped while the daemon runs.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from hindsight.commitlog import CommitLog
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.store import Store
from hindsight.errors import HindsightError

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_FIRST = 1.0
RETRY_MAX = 60.0


class Committer:
    def __init__(self, table: CallTable, store: Store, commit_log: CommitLog) -> None:
        self.table = table
        self.store = store
        self.log = commit_log
        self._queue: queue.Queue[Call | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, call: Call) -> None:
        self._queue.put(call)

    def close(self, timeout: float | None = None) -> bool:
        """Finish every queued call, then stop; False if that took longer than ``timeout``."""
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            try:
                self._settle(call)
            except HindsightError as exc:
                log.error("call %s: %s", call.call_id, exc)
            except Exception:
                log.exception("call %s: unexpected failure in the committer", call.call_id)

    def _settle(self, call: Call) -> None:
        if call.kept:
            self._commit(call)
        else:
            self._wipe(call)

    def _commit(self, call: Call) -> None:
        # Two steps, each retried on its own: a log that cannot be appended to
        # must not make the store write the recording again and again.
        committed = self._retrying(call, lambda: self.store.commit(call))
        if committed is None:
            return
        if self._retrying(call, lambda: self.log.append("call_committed", **committed.fields)):
            self.table.release(call)
            log.info("call %s committed (%s)", call.call_id, ", ".join(committed.fields["reasons"]))

    def _retrying(self, call: Call, step: Callable[[], T]) -> T | None:
        """Run ``step`` until it succeeds; None when shutdown ends the retries."""
        delay = RETRY_FIRST
        while True:
            try:
                return step()
            except HindsightError as exc:
                log.error("call %s not yet kept, retrying in %.0f s: %s", call.call_id, delay, exc)
                if self._stopping.wait(delay) and delay >= RETRY_MAX:
                    log.critical("gave up on call %s at shutdown: %s", call.call_id, exc)
                    return None
                delay = min(delay * 2, RETRY_MAX)

    def _wipe(self, call: Call) -> None:
        seconds = round(call.buffer.total_frames / call.samplerate, 3)
        self.table.release(call)
        self.log.append(
            "call_wiped", call_id=call.call_id, line=call.line.name, seconds=seconds, why="not_kept"
        )
        log.info("call %s wiped", call.call_id)
