"""The committer with real table, store and log; a store or log that fails on cue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hindsight import audit
from hindsight.commitlog import CommitLog
from hindsight.config import Config, parse_config
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.committer import Committer
from hindsight.daemon.store import Committed, Store
from hindsight.errors import CommitLogError, StoreError

QUICK = 0.05  # first retry delay


class FlakyStore(Store):
    """The real store, failing its first ``failures`` commits as a full disk would."""

    def __init__(self, config: Config, failures: int) -> None:
        super().__init__(config)
        self.failures = failures
        self.attempts = 0

    def commit(self, call: Call) -> Committed:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreError("No space left on device")
        return super().commit(call)


class FlakyLog(CommitLog):
    fail_commits = 0

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if event == "call_committed" and FlakyLog.fail_commits:
            FlakyLog.fail_commits -= 1
            raise CommitLogError("No space left on device")
        return super().append(event, **fields)


@pytest.fixture(autouse=True)
def healthy_log() -> None:
    FlakyLog.fail_commits = 0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    data = {
        "daemon": {"state_dir": str(tmp_path)},
        "audio": {"source": "synthetic", "channels": 2, "blocksize": 160},
        "lines": [{"name": "a", "channels": [1]}, {"name": "b", "channels": [2]}],
    }
    return parse_config(data, tmp_path)


@pytest.fixture
def commit_log(tmp_path: Path) -> Iterator[CommitLog]:
    with FlakyLog.open(tmp_path / "commit.log") as log:
        log.append("daemon_started", version="test")
        yield log


def live_call(table: CallTable, log: CommitLog, line: str, keep: bool) -> Call:
    call = table.start(line, None, None)
    log.append("call_started", call_id=call.call_id, line=line, agent=None)
    if keep:
        log.append("call_marked", call_id=call.call_id, line=line, purpose="escalation")
        table.mark(line, "escalation", None)
    table.feed("default", np.full((160, 2), 7, dtype=np.int16), False)
    return table.end(line)


def events(log: CommitLog) -> list[tuple[str, str]]:
    from hindsight.commitlog import read_entries

    return [(e["event"], e.get("why", "")) for e in read_entries(log.path)][1:]


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_call_waiting_for_disk_space_does_not_hold_up_a_wipe(
    config: Config, commit_log: CommitLog
) -> None:
    table = CallTable(config, Pool(1), draw=lambda: False)
    committer = Committer(table, FlakyStore(config, failures=1000), commit_log, QUICK)
    committer.start()
    kept = live_call(table, commit_log, "a", keep=True)
    unkept = live_call(table, commit_log, "b", keep=False)
    committer.submit(kept)
    committer.submit(unkept)
    wait_for(lambda: ("call_wiped", "not_kept") in events(commit_log))
    assert table.pool.free == table.pool.size - kept.buffer.chunks
    committer.finish(grace=0.2)
    assert committer.wait(5)
    assert events(commit_log)[-1] == ("call_wiped", "store_failed")
    assert table.pool.free == table.pool.size
    assert not table.pool.data.any()
    assert not list((config.daemon.state_dir / "recordings").rglob("*.flac"))


def test_a_store_that_recovers_commits_the_call_once(config: Config, commit_log: CommitLog) -> None:
    table = CallTable(config, Pool(1), draw=lambda: False)
    store = FlakyStore(config, failures=2)
    committer = Committer(table, store, commit_log, QUICK)
    committer.start()
    committer.submit(live_call(table, commit_log, "a", keep=True))
    committer.finish()
    assert committer.wait(10)
    assert [e for e, _ in events(commit_log)].count("call_committed") == 1
    assert store.attempts == 3
    assert len(list(config.daemon.state_dir.rglob("*.flac"))) == 1
    commit_log.append("daemon_stopped", version="test")
    assert audit.verify(config.daemon.state_dir).ok


def test_a_log_that_fails_does_not_make_the_store_write_again(
    config: Config, commit_log: CommitLog
) -> None:
    FlakyLog.fail_commits = 2
    table = CallTable(config, Pool(1), draw=lambda: False)
    store = FlakyStore(config, failures=0)
    committer = Committer(table, store, commit_log, QUICK)
    committer.start()
    committer.submit(live_call(table, commit_log, "a", keep=True))
    committer.finish()
    assert committer.wait(10)
    assert store.attempts == 1
    assert [e for e, _ in events(commit_log)].count("call_committed") == 1
    assert table.pool.free == table.pool.size
