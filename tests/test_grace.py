"""The record key after hang-up: ``marking.grace_seconds``.

Contract: a ``mark`` within the grace after a call ended keeps that whole call; without
``call_id`` it means the live call, else the one that ended last on the line within the
grace; with ``call_id`` that call, live or ended within the grace, and anything else is
``no_call``. Every ended call, kept or not, waits the grace before its settle delay and its
wipe or commit, and is described only after it, so a late mark's purpose and note are in the
recording. A stopping daemon settles at once. The table, keeper and service first, then the
real daemon.
"""

from __future__ import annotations

import json
import logging
import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from hindsight import audit
from hindsight.clock import parse_iso
from hindsight.commitlog import CommitLog, read_entries
from hindsight.config import Config, parse_config
from hindsight.daemon.buffer import Pool
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.keeper import TICK, Keeper
from hindsight.daemon.lifecycle import Lifecycle
from hindsight.daemon.pseudonym import Pseudonyms
from hindsight.daemon.service import Service
from hindsight.daemon.store import Store
from hindsight.errors import ProtocolError
from hindsight.retention import Ledger
from tests.harness import RATE, Daemon, Span, find_offset, looped_span, noise_wav
from tests.test_calls import CheckedTable, block, feed, make_config, table
from tests.test_keeper import QUICK, FlakyLog, ThreadWorker, outcomes, spawner, wait_for
from tests.test_service import Deletions, Ended, FullDiskLog, ask

GRACE = "[marking]\ngrace_seconds = 2\n"


def no_call(t: CallTable, line: str, call_id: str | None = None) -> str:
    with pytest.raises(ProtocolError) as e:
        t.mark(line, "escalation", None, call_id)
    assert e.value.code == "no_call"
    return e.value.message


def expire(call: Call) -> None:
    """Make ``call`` look as if it ended longer ago than its grace."""
    assert call.ended_at is not None
    call.ended_at -= call.grace + 0.001


# -- the call table -----------------------------------------------------------------------


def test_a_mark_after_hang_up_keeps_the_call_that_ended_last_within_the_grace() -> None:
    t = table(marking={"grace_seconds": 5})
    first = t.start("a", "c1", None)
    t.end("a", linger=True)
    second = t.start("a", "c2", None)
    t.end("a", linger=True)
    assert [row.call_id for row in t.status()] == [None, None]  # ended calls are not live
    assert t.mark("a", "escalation", "late") is second
    assert second.kept and second.marks[0].note == "late" and not first.kept
    assert t.mark("a", "escalation", None, "c1") is first and first.kept
    no_call(t, "b")  # another line's ended calls are not its own


def test_a_new_call_on_the_line_is_what_a_mark_without_call_id_means() -> None:
    t = table(marking={"grace_seconds": 5})
    old = t.start("a", "old", None)
    t.end("a", linger=True)
    new = t.start("a", "new", None)
    other = t.start("b", "other", None)
    assert t.mark("a", "escalation", None) is new and not old.kept
    assert t.mark("a", "escalation", None, "old") is old
    assert t.mark("a", "escalation", None, "new") is new
    no_call(t, "a", "nope")
    message = no_call(t, "a", "other")  # live, but on another line
    assert message == "call other is not live on line a, nor ended there within the grace"
    assert not other.kept


def test_after_the_grace_a_mark_is_no_call() -> None:
    t = table(marking={"grace_seconds": 5})
    call = t.start("a", "c1", None)
    t.end("a", linger=True)
    expire(call)
    assert no_call(t, "a") == "line a has no live call, nor one that ended in the last 5 s"
    no_call(t, "a", "c1")
    assert not call.kept


def test_without_a_grace_nothing_lingers_as_before() -> None:
    t = table()
    call = t.start("a", "c1", None)
    t.end("a", linger=True)
    assert call.grace == 0
    assert no_call(t, "a") == "line a has no live call"
    no_call(t, "a", "c1")
    # A call ended by a shutdown, or refused at its start, never lingers, whatever the grace.
    t = table(marking={"grace_seconds": 5})
    call = t.start("a", "c1", None)
    t.end("a")
    assert call.grace == 0 and call.ended_at is not None
    no_call(t, "a", "c1")


def test_a_closed_call_takes_no_mark_and_a_claimed_one_is_not_closed() -> None:
    t = table(marking={"grace_seconds": 5})
    call = t.start("a", "c1", None)
    t.end("a", linger=True)
    claimed = t.claim("a", "c1")
    assert claimed is call and call.claims == 1
    assert not t.close(call)  # a mark on it is being logged: the keeper waits
    t.add_mark(call, "escalation", None)
    assert call.claims == 0 and call.kept
    claimed = t.claim("a")
    t.unclaim(claimed)
    assert call.claims == 0 and len(call.marks) == 1
    assert t.close(call)
    no_call(t, "a")
    no_call(t, "a", "c1")
    assert t.close(call)  # closing twice, or a call that never lingered, is harmless


def test_a_call_marked_after_hang_up_holds_its_chunks_and_is_never_a_victim() -> None:
    t = table(chunks=6, marking={"grace_seconds": 5})
    ended = t.start("a", None, None)
    feed(t, 8)
    t.end("a", linger=True)
    t.mark("a", "escalation", None, ended.call_id)
    fresh = t.start("a", None, None)  # same slot: must stay an unkept call in the ranking
    other = t.start("b", None, None)
    feed(t, 6)
    assert ended.buffer.chunks == 4 and ended.buffer.rolled_total == 0
    assert t.pool.free + ended.buffer.chunks + fresh.buffer.chunks + other.buffer.chunks == 6
    assert not fresh.kept and not other.kept and t.pool_steals > 0


def test_late_marks_keep_the_dry_pool_rule_under_random_traffic() -> None:
    """test_calls' random floor, with hang-ups that linger and marks after them."""
    rng = random.Random(20260301)
    lines = [{"name": "a", "channels": [1, 2]}, {"name": "b", "channels": [3]}]
    config = make_config(lines=lines, marking={"grace_seconds": 300})
    pool = Pool(memory_mb=1, chunk_samples=64)
    pool._free = pool._free[-20:]
    t = CheckedTable(config, pool, draw=lambda _: (None, rng.random() < 0.1))
    ended: list[Call] = []
    for _ in range(4000):
        line = rng.choice("ab")
        live = t.live_call(line) is not None
        roll = rng.random()
        if roll < 0.6:
            t.feed("default", block(frames=rng.choice([1, 16, 40])), False)
        elif roll < 0.7 and not live:
            t.start(line, None, None)
        elif roll < 0.75 and live:
            t.mark(line, "escalation", None)
        elif roll < 0.85 and live:
            ended.append(t.end(line, linger=True))
        elif roll < 0.92 and ended:
            late = rng.choice(ended)
            t.mark(late.line.name, "escalation", None, late.call_id)  # never ranked again
        elif ended:
            gone = ended.pop(rng.randrange(len(ended)))
            assert t.close(gone)
            t.release(gone)
        held = sum(c.buffer.chunks for c in ended + t.live_calls())
        assert pool.free + held == 20
    assert t.pool_steals > 100


# -- the keeper ---------------------------------------------------------------------------


@pytest.fixture
def commit_log(tmp_path: Path) -> Iterator[CommitLog]:
    with FlakyLog.open(tmp_path / "commit.log") as log:
        log.append("daemon_started", version="test")
        yield log


def grace_config(tmp_path: Path, grace: float) -> Config:
    data = {
        "daemon": {"state_dir": str(tmp_path)},
        "audio": {"source": "synthetic", "channels": 2, "blocksize": 160},
        "lines": [{"name": "a", "channels": [1]}, {"name": "b", "channels": [2]}],
        "marking": {"grace_seconds": grace},
    }
    return parse_config(data, tmp_path)


def grace_keeper(
    config: Config, log: CommitLog, settle: float = 0.0
) -> tuple[Keeper, CallTable, Store]:
    table = CallTable(config, Pool(1), draw=lambda _: (None, False))
    store = Store(config.daemon.state_dir)
    born: list[ThreadWorker] = []
    spawn = spawner(table.pool, store, born)
    keeper = Keeper(table, log, config, spawn, QUICK, settle_delay=(settle, settle))
    keeper.start()
    return keeper, table, store


def hang_up(t: CallTable, log: CommitLog, line: str, marked: bool = False) -> Call:
    """A call with a little noise that hangs up (lingers), as the service ends it."""
    call = t.start(line, None, None)
    log.append("call_started", call_id=call.call_id, line=line, agent=None)
    if marked:
        log.append("call_marked", call_id=call.call_id, line=line, purpose="escalation")
        t.mark(line, "escalation", "live")
    rng = np.random.default_rng(3)
    for _ in range(3):
        t.feed("default", rng.integers(-9000, 9000, (160, 2), dtype=np.int16), False)
    return t.end(line, linger=True)


def late_mark(t: CallTable, log: CommitLog, call: Call, note: str) -> None:
    """What the service does: claim, log, mark."""
    claimed = t.claim(call.line.name, call.call_id)
    log.append("call_marked", call_id=call.call_id, line=call.line.name, purpose="escalation")
    t.add_mark(claimed, "escalation", note)


def entry_times(log: CommitLog, event: str) -> list[float]:
    return [parse_iso(e["time"]).timestamp() for e in read_entries(log.path) if e["event"] == event]


def test_every_ended_call_waits_the_grace_kept_or_not(
    tmp_path: Path, commit_log: CommitLog
) -> None:
    keeper, t, _ = grace_keeper(grace_config(tmp_path, 1.5), commit_log)
    kept = hang_up(t, commit_log, "a", marked=True)
    unkept = hang_up(t, commit_log, "b")
    ended = time.time()
    keeper.submit(kept)
    keeper.submit(unkept)
    time.sleep(0.5)
    assert outcomes(commit_log) == []
    assert kept.buffer.chunks and unkept.buffer.chunks  # still in memory, in the pool
    wait_for(lambda: outcomes(commit_log) == ["call_committed", "call_wiped"])
    for event in ("call_committed", "call_wiped"):
        (at,) = entry_times(commit_log, event)
        assert at - ended >= 1.5 - 0.01, event
    keeper.finish()
    assert keeper.wait(5)
    assert t.pool.free == t.pool.size and not t.pool.data.any()


def test_a_late_mark_is_in_the_recording_its_note_included(
    tmp_path: Path, commit_log: CommitLog
) -> None:
    keeper, t, _ = grace_keeper(grace_config(tmp_path, 2.0), commit_log, settle=0.1)
    call = hang_up(t, commit_log, "a")
    keeper.submit(call)
    time.sleep(0.3)
    late_mark(t, commit_log, call, "hung up, then abusive voicemail")
    wait_for(lambda: outcomes(commit_log) == ["call_committed"], timeout=10)
    (committed,) = [e for e in read_entries(commit_log.path) if e["event"] == "call_committed"]
    assert committed["reasons"] == ["marked"] and committed["purposes"] == ["escalation"]
    sidecar = json.loads((tmp_path / committed["path"]).with_suffix(".json").read_text())
    (mark,) = sidecar["marks"]
    assert mark["note"] == "hung up, then abusive voicemail"
    assert parse_iso(mark["time"]) > parse_iso(sidecar["end"])
    no_call(t, "a", call.call_id)  # closed: its grace is over
    keeper.finish()
    assert keeper.wait(5)
    commit_log.append("daemon_stopped", version="test")
    assert audit.verify(tmp_path).ok


def test_the_keeper_waits_for_a_mark_being_logged(tmp_path: Path, commit_log: CommitLog) -> None:
    keeper, t, _ = grace_keeper(grace_config(tmp_path, 1.0), commit_log)
    call = hang_up(t, commit_log, "a")
    keeper.submit(call)
    claimed = t.claim("a", call.call_id)  # the service is appending call_marked
    time.sleep(1.0 + 0.5 + 2 * TICK)
    assert outcomes(commit_log) == []
    commit_log.append("call_marked", call_id=call.call_id, line="a", purpose="escalation")
    t.add_mark(claimed, "escalation", None)
    wait_for(lambda: outcomes(commit_log) == ["call_committed"])
    events = [e["event"] for e in read_entries(commit_log.path)]
    assert events.index("call_marked") < events.index("call_committed")
    keeper.finish()
    assert keeper.wait(5)


def test_a_stopping_keeper_does_not_wait_for_the_grace(
    tmp_path: Path, commit_log: CommitLog
) -> None:
    keeper, t, _ = grace_keeper(grace_config(tmp_path, 300), commit_log, settle=60)
    kept = hang_up(t, commit_log, "a", marked=True)
    unkept = hang_up(t, commit_log, "b")
    keeper.submit(kept)
    keeper.submit(unkept)
    time.sleep(0.2)
    started = time.monotonic()
    keeper.finish()
    assert keeper.wait(10) and time.monotonic() - started < 5
    assert outcomes(commit_log) == ["call_committed", "call_wiped"]
    no_call(t, "a", kept.call_id)
    assert t.pool.free == t.pool.size and not t.pool.data.any()


# -- the service --------------------------------------------------------------------------


def grace_service(tmp_path: Path, grace: float = 5) -> tuple[Service, FullDiskLog, Ended]:
    config = parse_config(
        {
            "audio": {"source": "synthetic"},
            "lines": [{"name": "d1", "channels": [1, 2]}],
            "marking": {"grace_seconds": grace},
        },
        tmp_path,
    )
    log = FullDiskLog.open(tmp_path / "commit.log")
    ended = Ended()
    t = CallTable(config, Pool(1), draw=lambda _: (None, False))
    lifecycle = Lifecycle(config, Ledger(), log, Deletions(), Pseudonyms(b"k" * 32))
    svc = Service(config, t, ended, log, lambda: {"default": "running"}, lifecycle)
    return svc, log, ended


def logged(log: CommitLog, event: str) -> list[dict[str, Any]]:
    return [e for e in read_entries(log.path) if e["event"] == event]


def test_a_mark_after_hang_up_is_logged_as_call_marked_after_end(tmp_path: Path) -> None:
    svc, log, ended = grace_service(tmp_path)
    first = ask(svc, op="start", line="d1", call_id="c-1")
    assert ask(svc, op="mark", line="d1", purpose="training") == first  # live
    end = ask(svc, op="end", line="d1")
    late = ask(svc, op="mark", line="d1", note="shouted, hung up")
    assert end == late == {"ok": True, "call_id": "c-1"}
    assert ask(svc, op="mark", line="d1", call_id="c-1") == late  # again: logged once
    assert ask(svc, op="status")["lines"][0]["call_id"] is None
    marks = [(e["purpose"], e.get("after_end")) for e in logged(log, "call_marked")]
    assert marks == [("training", None), ("escalation", True)]
    (call,) = ended.calls
    assert [m.note for m in call.marks] == [None, "shouted, hung up", None]
    assert call.claims == 0


def test_a_late_mark_for_a_purpose_not_announced_is_refused_and_logged(tmp_path: Path) -> None:
    svc, log, ended = grace_service(tmp_path)
    ask(svc, op="start", line="d1", call_id="c-1", announced=["training"])
    ask(svc, op="end", line="d1")
    reply = ask(svc, op="mark", line="d1")
    assert reply["error"]["code"] == "not_allowed"
    assert [(e["call_id"], e["purpose"]) for e in logged(log, "mark_refused")] == [
        ("c-1", "escalation")
    ]
    assert not ended.calls[0].kept and ended.calls[0].claims == 0
    assert ask(svc, op="mark", line="d1", purpose="nope")["error"]["code"] == "unknown_purpose"


def test_a_late_mark_the_log_cannot_hold_keeps_nothing(tmp_path: Path) -> None:
    svc, log, ended = grace_service(tmp_path)
    ask(svc, op="start", line="d1")
    ask(svc, op="end", line="d1")
    log.full = True
    assert ask(svc, op="mark", line="d1")["error"]["code"] == "internal"
    log.full = False
    (call,) = ended.calls
    assert not call.kept and call.claims == 0 and not logged(log, "call_marked")


def test_unknown_or_stale_call_ids_are_no_call(tmp_path: Path) -> None:
    svc, _, _ = grace_service(tmp_path)
    assert ask(svc, op="mark", line="d1")["error"]["code"] == "no_call"
    ask(svc, op="start", line="d1", call_id="c-1")
    assert ask(svc, op="mark", line="d1", call_id="c-2")["error"]["code"] == "no_call"
    ask(svc, op="end", line="d1")
    expire(svc.table._lingering["d1"][0])
    assert ask(svc, op="mark", line="d1", call_id="c-1")["error"]["code"] == "no_call"
    assert ask(svc, op="mark", line="d1")["error"]["code"] == "no_call"
    assert ask(svc, op="mark", line="d1", call_id=".x")["error"]["code"] == "bad_request"


def test_a_stopping_daemon_takes_no_late_mark(tmp_path: Path) -> None:
    svc, _, ended = grace_service(tmp_path)
    ask(svc, op="start", line="d1")
    ask(svc, op="end", line="d1")
    svc.end_all()
    assert ask(svc, op="mark", line="d1")["error"]["code"] == "not_allowed"
    assert not ended.calls[0].kept


def test_the_journal_names_no_call_on_a_mark(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc, _, _ = grace_service(tmp_path)
    ask(svc, op="start", line="d1", call_id="c-1", announced=["escalation"])
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    ask(svc, op="mark", line="d1")
    ask(svc, op="mark", line="d1", purpose="training")  # refused
    ask(svc, op="end", line="d1")
    ask(svc, op="mark", line="d1", call_id="c-1")
    ask(svc, op="mark", line="d1", purpose="training")  # refused, after the end
    said = [record.getMessage() for record in caplog.records]
    assert [m for m in said if "c-1" in m] == ["call c-1 ended on d1"]
    assert said.count("a mark for training on d1 refused: not announced") == 2


def test_with_no_grace_a_mark_after_end_is_no_call_as_before(tmp_path: Path) -> None:
    svc, log, ended = grace_service(tmp_path, grace=0)
    ask(svc, op="start", line="d1", call_id="c-1")
    ask(svc, op="end", line="d1")
    reply = ask(svc, op="mark", line="d1")
    assert reply["error"] == {"code": "no_call", "message": "line d1 has no live call"}
    assert ask(svc, op="mark", line="d1", call_id="c-1")["error"]["code"] == "no_call"
    assert not ended.calls[0].kept and not logged(log, "call_marked")


# -- the real daemon ----------------------------------------------------------------------


def seconds_between(earlier: str, later: str) -> float:
    return (parse_iso(later) - parse_iso(earlier)).total_seconds()


def test_a_mark_after_hang_up_keeps_the_whole_call(tmp_path: Path) -> None:
    source = noise_wav(tmp_path / "in.wav")
    with Daemon(tmp_path, source="file", file=str(tmp_path / "in.wav"), extra=GRACE) as d:
        before = time.monotonic()
        call_id = d.ok({"op": "start", "line": "desk-01", "agent": "ann"})["call_id"]
        after = time.monotonic()
        time.sleep(0.8)
        end_sent = time.monotonic()
        d.ok({"op": "end", "line": "desk-01"})
        span = Span(inner=end_sent - after, outer=time.monotonic() - before)
        time.sleep(0.5)
        reply = d.ok({"op": "mark", "line": "desk-01", "note": "abusive, hung up"})
        assert reply == {"ok": True, "call_id": call_id}
        assert d.ok({"op": "status"})["lines"][0]["call_id"] is None
        (committed,) = d.wait_for_event("call_committed", timeout=15)
    recording, rate = sf.read(str(d.state / committed["path"]), dtype="int16", always_2d=True)
    assert rate == RATE and span.holds(len(recording) / RATE)
    start = find_offset(source, recording)
    assert np.array_equal(recording, looped_span(source, start, len(recording)))
    assert committed["call_id"] == call_id and committed["reasons"] == ["marked"]
    assert committed["purposes"] == ["escalation"]
    sidecar = json.loads((d.state / committed["path"]).with_suffix(".json").read_text())
    (mark,) = sidecar["marks"]
    assert mark["note"] == "abusive, hung up" and mark["purpose"] == "escalation"
    assert 0.3 < seconds_between(sidecar["end"], mark["time"]) < 2
    # The grace, then the settle delay, then the commit.
    assert seconds_between(sidecar["end"], committed["time"]) >= 2.3
    entries = d.entries()
    order = [(e["event"], e.get("after_end")) for e in entries if e.get("call_id") == call_id]
    assert order == [("call_started", None), ("call_marked", True), ("call_committed", None)]
    assert audit.verify(d.state).ok
    named = [line for line in d.stderr().splitlines() if call_id in line]
    assert [re.sub(r"^.*?INFO ", "", line) for line in named] == [
        f"hindsight.daemon.service: call {call_id} started on desk-01",
        f"hindsight.daemon.service: call {call_id} ended on desk-01",
    ]


def test_a_mark_after_the_grace_is_no_call_and_the_call_is_wiped(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra=GRACE) as d:
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        time.sleep(2.2)
        reply = d.request({"op": "mark", "line": "desk-01"})
        assert reply["error"]["code"] == "no_call", reply
        reply = d.request({"op": "mark", "line": "desk-01", "call_id": call_id})
        assert reply["error"]["code"] == "no_call", reply
        (wiped,) = d.wait_for_event("call_wiped", timeout=10)
    assert wiped["call_id"] == call_id and wiped["why"] == "not_kept"
    (started,) = d.events("call_started")
    assert seconds_between(started["time"], wiped["time"]) >= 0.3 + 2.3
    assert not d.events("call_marked") and not d.events("call_committed")
    assert not (d.state / "recordings").exists()


def test_a_late_mark_by_call_id_keeps_the_old_call_not_the_new_one(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra=GRACE) as d:
        d.ok({"op": "start", "line": "desk-01", "call_id": "c-old"})
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        d.ok({"op": "start", "line": "desk-01", "call_id": "c-new"})
        assert d.ok({"op": "status"})["lines"][0]["call_id"] == "c-new"
        reply = d.ok({"op": "mark", "line": "desk-01", "call_id": "c-old", "note": "that one"})
        assert reply["call_id"] == "c-old"
        for unknown in ("c-nope", "c-new-2"):
            reply = d.request({"op": "mark", "line": "desk-01", "call_id": unknown})
            assert reply["error"]["code"] == "no_call", reply
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed", timeout=10)
        d.wait_for_event("call_wiped", timeout=10)
    outcome = {
        e["call_id"]: e["event"] for e in d.events("call_committed") + d.events("call_wiped")
    }
    assert outcome == {"c-old": "call_committed", "c-new": "call_wiped"}
    assert [e["call_id"] for e in d.events("call_marked")] == ["c-old"]
    assert audit.verify(d.state).ok


def test_replies_to_end_and_to_a_late_mark_do_not_tell_a_kept_call(tmp_path: Path) -> None:
    # Every call that hears of training is sampled: "c-kept-1" is kept, "c-wipe-1" is not.
    with Daemon(tmp_path, one_in=1, extra=GRACE) as d:

        def raw(payload: dict[str, Any]) -> bytes:
            (frame,) = d.send_frames([b"", json.dumps(payload).encode()])
            return frame

        replies: dict[str, list[bytes]] = {}
        for call_id, announced in (("c-kept-1", None), ("c-wipe-1", ["escalation"])):
            start: dict[str, Any] = {"op": "start", "line": "desk-01", "call_id": call_id}
            if announced is not None:
                start["announced"] = announced
            d.ok(start)
            time.sleep(0.2)
            end = raw({"op": "end", "line": "desk-01"})
            late = raw({"op": "mark", "line": "desk-01", "call_id": call_id})
            replies[call_id] = [r.replace(call_id.encode(), b"ID") for r in (end, late)]
        d.wait_for_event("call_committed", count=2, timeout=10)
    assert replies["c-kept-1"] == replies["c-wipe-1"] == [b'{"ok":true,"call_id":"ID"}'] * 2
    reasons = {e["call_id"]: e["reasons"] for e in d.events("call_committed")}
    assert reasons == {"c-kept-1": ["sampled", "marked"], "c-wipe-1": ["marked"]}


def test_a_stopping_daemon_settles_calls_in_their_grace_at_once(tmp_path: Path) -> None:
    lines = [("desk-01", [1]), ("desk-02", [2])]
    d = Daemon(tmp_path, lines=lines, extra="[marking]\ngrace_seconds = 120\n")
    d.start()
    kept = d.ok({"op": "start", "line": "desk-01"})["call_id"]
    unkept = d.ok({"op": "start", "line": "desk-02"})["call_id"]
    time.sleep(0.3)
    d.ok({"op": "end", "line": "desk-01"})
    d.ok({"op": "end", "line": "desk-02"})
    d.ok({"op": "mark", "line": "desk-01"})
    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 15
    events = [(e["event"], e.get("call_id")) for e in d.entries()]
    assert ("call_committed", kept) in events and ("call_wiped", unkept) in events
    assert events[-1] == ("daemon_stopped", None)
    assert audit.verify(d.state).ok
