"""After a crash: give every call the last run left open its one outcome.

A call whose ``call_started`` has no outcome was live, or being committed,
when the daemon died. Its audio in memory died with the process, but the
worker may have finished the durable part of its work:

- recording and sidecar both landed, only the log line is missing: the
  recording is whole and was kept, so ``call_committed`` is logged from the
  sidecar (after checking the file's SHA-256), marked ``recovered``;
- anything less (a temp file, a recording without its sidecar): the partial
  files are removed, since no log line accounts for them, and the call is
  logged as ``call_wiped`` with ``why: "lost_in_crash"``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hindsight.commitlog import CommitLog
from hindsight.layout import landed, partials

log = logging.getLogger(__name__)


def settle_open_calls(commit_log: CommitLog, state_dir: Path) -> None:
    open_calls = list(commit_log.open_calls.items())
    removed = 0
    for call_id, line in open_calls:
        committed = landed(state_dir, call_id)
        if committed is not None:
            commit_log.append("call_committed", **committed.to_log(), recovered=True)
            continue
        for partial in partials(state_dir, call_id):
            partial.unlink()
            removed += 1
        commit_log.append("call_wiped", call_id=call_id, line=line, seconds=0, why="lost_in_crash")
    # Counts only: the journal must not tell which of these calls had been kept.
    if open_calls:
        log.warning(
            "%d call(s) were live or settling when the daemon last died; each has its outcome "
            "in the commit log now (%d partial file(s) removed)",
            len(open_calls),
            removed,
        )
