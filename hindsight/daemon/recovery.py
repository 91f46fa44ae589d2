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

With the S3 backend (``settle_spooled_calls``), a kept call is in the spool until the store
has it, and the daemon may have stopped (or died) with calls there, open in the log:

- an open call whose spool entry landed whole (manifest, and a recording with its hash) is
  uploaded again, in the order it was kept, and logged as committed (``recovered``) once
  the store has it, as if the daemon had not stopped; the store may be down at start-up:
  nothing here waits on it;
- an open call with less (a partial entry, or none) is removed and ``lost_in_crash``;
- an entry of a call that is not open has its outcome in the log already (the daemon died
  between that line and the entry's removal): its files are removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from hindsight.commitlog import CommitLog
from hindsight.daemon.spool import Spool
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


def settle_spooled_calls(
    commit_log: CommitLog, state_dir: Path, upload: Callable[[str], None]
) -> None:
    """S3 backend: hand every open call whose spool entry is whole to ``upload`` (by the
    entry's name, in spool order); the rest of the open calls are lost in the crash."""
    spool = Spool(state_dir)
    open_calls = dict(commit_log.open_calls)
    queued: set[str] = set()
    removed = 0
    for entry in spool.entries():
        if entry.call_id in open_calls and entry.call_id not in queued:
            if spool.whole(entry) is not None:
                upload(entry.name)
                queued.add(entry.call_id)
                continue
        else:
            spool.remove_entry(entry)  # logged already (or a second copy): the log has it
            removed += 1
    for call_id, line in open_calls.items():
        if call_id in queued:
            continue
        files = spool.files_of(call_id)
        spool.remove(files)
        removed += len(files)
        commit_log.append("call_wiped", call_id=call_id, line=line, seconds=0, why="lost_in_crash")
    stray = spool.temp_files()
    spool.remove(stray)
    removed += len(stray)
    # Counts only: the journal must not tell which of these calls had been kept.
    if open_calls:
        log.warning(
            "%d call(s) were live, settling or waiting for the object store when the daemon "
            "last stopped: %d recording(s) in the spool are uploaded now, the rest have their "
            "outcome in the log (%d spool file(s) removed)",
            len(open_calls),
            len(queued),
            removed,
        )
