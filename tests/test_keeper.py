"""The keeper with the real table, log and worker loop (run in a thread), and a store or log
that fails on cue. The worker as a real process is tested through the daemon in test_worker.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hindsight import audit
from hindsight.commitlog import CommitLog, read_entries
from hindsight.config import Config, parse_config
from hindsight.daemon import store as store_module
from hindsight.daemon.buffer import Int16Array, Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.keeper import Keeper, WorkerHandle
from hindsight.daemon.kept import Keep
from hindsight.daemon.store import Store
from hindsight.daemon.worker import Worker
from hindsight.errors import CommitLogError, StoreError
from hindsight.record import Committed

QUICK = 0.05  # first retry delay


class FlakyStore(Store):
    """The real store, failing its first ``failures`` writes as a full disk would."""

    def __init__(self, state_dir: Path, failures: int) -> None:
        super().__init__(state_dir)
        self.failures = failures
        self.attempts = 0

    def keep(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Committed:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise StoreError("No space left on device")
        return super().keep(keep, views, frames)


class FlakyLog(CommitLog):
    fail_commits = 0

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if event == "call_committed" and FlakyLog.fail_commits:
            FlakyLog.fail_commits -= 1
            raise CommitLogError("No space left on device")
        return super().append(event, **fields)


class ThreadWorker:
    """The real worker loop on a thread: ``kill`` cuts its channel as a dying process would."""

    pid: int | None = None

    def __init__(self, pool: Pool, store: Store) -> None:
        self.sock, self._theirs = socket.socketpair()
        worker = Worker(self._theirs, pool.data, store)
        self._thread = threading.Thread(target=worker.run, daemon=True)
        self._thread.start()

    def name(self) -> str:
        return "thread worker"

    def kill(self) -> None:
        self._theirs.shutdown(socket.SHUT_RDWR)

    def reap(self, timeout: float) -> str:
        self._thread.join(timeout)
        return "ended"


def spawner(pool: Pool, store: Store, born: list[ThreadWorker]) -> Callable[[], WorkerHandle]:
    def spawn() -> WorkerHandle:
        born.append(ThreadWorker(pool, store))
        return born[-1]

    return spawn


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


def live_call(table: CallTable, log: CommitLog, line: str, keep: bool, blocks: int = 1) -> Call:
    call = table.start(line, None, None)
    log.append("call_started", call_id=call.call_id, line=line, agent=None)
    if keep:
        log.append("call_marked", call_id=call.call_id, line=line, purpose="escalation")
        table.mark(line, "escalation", None)
    rng = np.random.default_rng(blocks)
    for _ in range(blocks):  # noise: FLAC cannot shrink it, so a recording's size is known
        table.feed("default", rng.integers(-9000, 9000, (160, 2), dtype=np.int16), False)
    return table.end(line)


def events(log: CommitLog) -> list[tuple[str, str]]:
    return [(e["event"], e.get("why", "")) for e in read_entries(log.path)][1:]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def keeper_for(
    config: Config, log: CommitLog, store: Store, **kw: Any
) -> tuple[Keeper, CallTable, list[ThreadWorker]]:
    table = CallTable(config, Pool(1), draw=lambda _: (None, False))
    born: list[ThreadWorker] = []
    kw.setdefault("settle_delay", (0.0, 0.0))
    keeper = Keeper(table, log, config, spawner(table.pool, store, born), QUICK, **kw)
    keeper.start()
    return keeper, table, born


def test_a_call_waiting_for_disk_space_does_not_hold_up_a_wipe(
    config: Config, commit_log: CommitLog
) -> None:
    store = FlakyStore(config.daemon.state_dir, failures=1000)
    keeper, table, _ = keeper_for(config, commit_log, store)
    kept = live_call(table, commit_log, "a", keep=True)
    held = kept.buffer.chunks
    unkept = live_call(table, commit_log, "b", keep=False)
    keeper.submit(kept)
    keeper.submit(unkept)
    wait_for(lambda: ("call_wiped", "not_kept") in events(commit_log))
    assert table.pool.free == table.pool.size - held
    keeper.finish(grace=0.2)
    assert keeper.wait(5)
    assert events(commit_log)[-1] == ("call_wiped", "store_failed")
    assert table.pool.free == table.pool.size
    assert not table.pool.data.any()
    assert not list((config.daemon.state_dir / "recordings").rglob("*.flac"))


def test_a_store_that_recovers_commits_the_call_once(config: Config, commit_log: CommitLog) -> None:
    store = FlakyStore(config.daemon.state_dir, failures=2)
    keeper, table, _ = keeper_for(config, commit_log, store)
    keeper.submit(live_call(table, commit_log, "a", keep=True))
    keeper.finish()
    assert keeper.wait(10)
    assert [e for e, _ in events(commit_log)].count("call_committed") == 1
    assert store.attempts == 3
    assert len(list(config.daemon.state_dir.rglob("*.flac"))) == 1
    commit_log.append("daemon_stopped", version="test")
    assert audit.verify(config.daemon.state_dir).ok


def test_a_log_that_fails_does_not_make_the_store_write_again(
    config: Config, commit_log: CommitLog
) -> None:
    FlakyLog.fail_commits = 2
    store = FlakyStore(config.daemon.state_dir, failures=0)
    keeper, table, _ = keeper_for(config, commit_log, store)
    keeper.submit(live_call(table, commit_log, "a", keep=True))
    keeper.finish()
    assert keeper.wait(10)
    assert store.attempts == 1
    assert [e for e, _ in events(commit_log)].count("call_committed") == 1
    assert table.pool.free == table.pool.size
    assert not table.pool.data.any()


def test_a_kept_call_without_audio_is_wiped_as_no_audio_not_stored_empty(
    config: Config, commit_log: CommitLog
) -> None:
    store = FlakyStore(config.daemon.state_dir, failures=0)
    keeper, table, _ = keeper_for(config, commit_log, store)
    keeper.submit(live_call(table, commit_log, "a", keep=True, blocks=0))
    keeper.finish()
    assert keeper.wait(10)
    wiped = [e for e in read_entries(commit_log.path) if e["event"] == "call_wiped"]
    assert [(e["why"], e["reasons"], e["seconds"]) for e in wiped] == [("no_audio", ["marked"], 0)]
    assert store.attempts == 0
    assert not (config.daemon.state_dir / "recordings").exists()


def outcomes(log: CommitLog) -> list[str]:
    return sorted(e for e, _ in events(log) if e in ("call_committed", "call_wiped"))


class DyingStore(FlakyStore):
    """Its first write leaves a partial file and loses the worker, as a SIGKILL would."""

    born: list[ThreadWorker]

    def keep(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Committed:
        if self.attempts == 0:
            self.attempts += 1
            folder = self.root / "recordings" / keep.folder
            folder.mkdir(parents=True)
            (folder / f".{keep.call_id}.flac.dead.tmp").write_bytes(b"half")
            self.born[-1].kill()
            raise StoreError("killed")
        return super().keep(keep, views, frames)


def test_a_worker_lost_mid_job_is_replaced_and_the_job_redone(
    config: Config, commit_log: CommitLog
) -> None:
    store = DyingStore(config.daemon.state_dir, failures=0)
    keeper, table, born = keeper_for(config, commit_log, store)
    store.born = born
    keeper.submit(live_call(table, commit_log, "a", keep=True, blocks=5))
    keeper.submit(live_call(table, commit_log, "b", keep=False))
    keeper.finish()
    assert keeper.wait(10)
    assert len(born) == 2 and keeper.restarts == 1
    assert outcomes(commit_log) == ["call_committed", "call_wiped"]
    assert not list(config.daemon.state_dir.rglob("*.tmp"))
    assert table.pool.free == table.pool.size and not table.pool.data.any()
    commit_log.append("daemon_stopped", version="test")
    assert audit.verify(config.daemon.state_dir).ok


def test_a_silent_worker_is_taken_for_hung_and_replaced(
    config: Config, commit_log: CommitLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FlakyStore(config.daemon.state_dir, failures=0)
    original = Worker._alive
    monkeypatch.setattr(Worker, "_alive", lambda self: None)  # the first worker never says alive
    keeper, table, born = keeper_for(config, commit_log, store, hang_seconds=0.5)
    wait_for(lambda: len(born) == 1)
    monkeypatch.setattr(Worker, "_alive", original)
    wait_for(lambda: keeper.restarts == 1, timeout=5)
    keeper.submit(live_call(table, commit_log, "a", keep=False))
    keeper.finish()
    assert keeper.wait(10)
    assert ("call_wiped", "not_kept") in events(commit_log)


class GatedStore(Store):
    """Its first write waits for ``gate``: the worker is busy with a long recording."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.gate = threading.Event()
        self.writes = 0

    def keep(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Committed:
        self.writes += 1
        if self.writes == 1:
            assert self.gate.wait(10)
        return super().keep(keep, views, frames)


def test_wipes_waiting_for_the_worker_go_before_recordings(
    config: Config, commit_log: CommitLog
) -> None:
    store = GatedStore(config.daemon.state_dir)
    keeper, table, _ = keeper_for(config, commit_log, store)
    first = live_call(table, commit_log, "a", keep=True)
    keeper.submit(first)
    wait_for(lambda: store.writes == 1)
    second = live_call(table, commit_log, "a", keep=True)
    wiped = live_call(table, commit_log, "b", keep=False)
    keeper.submit(second)
    keeper.submit(wiped)
    time.sleep(0.1)
    store.gate.set()
    keeper.finish()
    assert keeper.wait(10)
    order = [
        (e["event"], e["call_id"])
        for e in read_entries(commit_log.path)
        if e["event"] in ("call_committed", "call_wiped")
    ]
    assert order == [
        ("call_committed", first.call_id),
        ("call_wiped", wiped.call_id),
        ("call_committed", second.call_id),
    ]


def test_a_worker_writing_a_long_recording_slowly_is_not_taken_for_hung(
    config: Config, commit_log: CommitLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = store_module.Sink.write

    def slow_disk(self: store_module.Sink, data: bytes) -> None:
        time.sleep(0.05)
        real_write(self, data)

    monkeypatch.setattr(store_module, "COPY_BLOCK", 1024)
    monkeypatch.setattr(store_module.Sink, "write", slow_disk)
    store = Store(config.daemon.state_dir)
    keeper, table, _ = keeper_for(config, commit_log, store, hang_seconds=1.5)
    # 400 blocks of mono noise: ~128 KB of FLAC, written at 1 KiB per 50 ms: ~6 s.
    keeper.submit(live_call(table, commit_log, "a", keep=True, blocks=400))
    keeper.finish()
    started = time.monotonic()
    assert keeper.wait(30)
    assert time.monotonic() - started > 3.0, "the write took longer than hang_seconds, twice"
    assert keeper.restarts == 0
    assert outcomes(commit_log) == ["call_committed"]


def test_a_call_is_settled_only_after_its_settle_delay_but_at_once_when_stopping(
    config: Config, commit_log: CommitLog
) -> None:
    store = Store(config.daemon.state_dir)
    keeper, table, _ = keeper_for(config, commit_log, store, settle_delay=(1.5, 1.5))
    keeper.submit(live_call(table, commit_log, "a", keep=False))
    time.sleep(0.3)
    assert outcomes(commit_log) == []
    wait_for(lambda: outcomes(commit_log) == ["call_wiped"], timeout=5)
    slow, slow_table, _ = keeper_for(config, commit_log, store, settle_delay=(60.0, 60.0))
    slow.submit(live_call(slow_table, commit_log, "b", keep=False))
    started = time.monotonic()
    slow.finish()
    assert slow.wait(10) and time.monotonic() - started < 5
    assert outcomes(commit_log) == ["call_wiped", "call_wiped"]
    keeper.finish()
    assert keeper.wait(5)
