"""Request handling with a real call table and commit log (no socket)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hindsight.commitlog import CommitLog, read_entries
from hindsight.config import parse_config
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.lifecycle import Lifecycle
from hindsight.daemon.pseudonym import Pseudonyms
from hindsight.daemon.service import Service
from hindsight.errors import CommitLogError
from hindsight.replies import WorkerState
from hindsight.retention import Ledger


class FullDiskLog(CommitLog):
    full = False

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        if self.full:
            raise CommitLogError("commit.log: cannot append (No space left on device)")
        return super().append(event, **fields)


class Deletions:
    def delete(self, call_id: str, path: str) -> None:
        raise AssertionError("nothing is deleted here")


class Ended:
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def submit(self, call: Call) -> None:
        self.calls.append(call)

    def state(self) -> WorkerState:
        return WorkerState(None, 0)


def service(tmp_path: Path) -> tuple[Service, FullDiskLog, Ended]:
    config = parse_config(
        {"audio": {"source": "synthetic"}, "lines": [{"name": "d1", "channels": [1, 2]}]},
        tmp_path,
    )
    log = FullDiskLog.open(tmp_path / "commit.log")
    ended = Ended()
    table = CallTable(config, Pool(1), draw=lambda _: (None, False))
    lifecycle = Lifecycle(config, Ledger(), log, Deletions(), Pseudonyms(b"k" * 32))
    svc = Service(config, table, ended, log, lambda: {"default": "running"}, lifecycle)
    return svc, log, ended


def ask(svc: Service, **request: Any) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(svc.handle(json.dumps(request).encode()))
    return reply


def test_a_mark_the_log_cannot_hold_keeps_nothing(tmp_path: Path) -> None:
    svc, log, ended = service(tmp_path)
    assert ask(svc, op="start", line="d1")["ok"]
    log.full = True
    reply = ask(svc, op="mark", line="d1")
    assert reply["error"]["code"] == "internal"
    log.full = False
    assert ask(svc, op="end", line="d1")["ok"]
    assert not ended.calls[0].kept
    assert [e["event"] for e in read_entries(log.path)] == ["call_started"]


def test_a_start_the_log_cannot_hold_buffers_nothing(tmp_path: Path) -> None:
    svc, log, _ = service(tmp_path)
    log.full = True
    assert ask(svc, op="start", line="d1")["error"]["code"] == "internal"
    log.full = False
    assert ask(svc, op="status")["lines"][0]["call_id"] is None
    assert svc.table.pool.free == svc.table.pool.size


def test_a_second_mark_for_the_same_purpose_is_logged_once(tmp_path: Path) -> None:
    svc, log, _ = service(tmp_path)
    ask(svc, op="start", line="d1")
    for _ in range(3):
        assert ask(svc, op="mark", line="d1")["ok"]
    assert ask(svc, op="mark", line="d1", purpose="training")["ok"]
    marks = [e["purpose"] for e in read_entries(log.path) if e["event"] == "call_marked"]
    assert marks == ["escalation", "training"]


def test_a_stopping_daemon_refuses_new_work_but_still_answers(tmp_path: Path) -> None:
    svc, _, ended = service(tmp_path)
    ask(svc, op="start", line="d1")
    svc.end_all()
    assert len(ended.calls) == 1
    assert ask(svc, op="start", line="d1")["error"]["code"] == "not_allowed"
    assert ask(svc, op="ping")["ok"] and ask(svc, op="status")["ok"]
