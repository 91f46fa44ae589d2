"""Purposes and retention through the real daemon: announcement, pause, purge, hold, erase,
and a deletion cut short by a crash."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyrage
import soundfile as sf

from hindsight import audit
from hindsight.clock import parse_iso
from hindsight.layout import sidecar_path
from tests.harness import RATE, Daemon, find_offset, looped_span, noise_wav
from tests.test_worker import pool_bytes, wait_until, worker_pid

# training ends ~2.6 s after a call (a day at most), escalation only when resolved; the
# daemon purges every second.
PURPOSES = """
[retention]
purge_interval_seconds = 1

[purposes.training]
legal_basis = "legitimate-interests"
retention_days = 0.00003
max_retention_days = 1

[purposes.escalation]
legal_basis = "contract"
until_resolved = true
"""


def lifecycle_daemon(tmp: Path, **over: Any) -> Daemon:
    return Daemon(tmp, extra=PURPOSES, **over)


def kept_call(d: Daemon, line: str, *purposes: str, seconds: float = 0.5) -> str:
    call_id: str = d.ok({"op": "start", "line": line})["call_id"]
    time.sleep(seconds)
    for purpose in purposes:
        d.ok({"op": "mark", "line": line, "purpose": purpose})
    d.ok({"op": "end", "line": line})
    return call_id


def deleted(d: Daemon) -> dict[str, str]:
    return {e["call_id"]: e["why"] for e in d.events("recording_deleted")}


def files(d: Daemon) -> set[str]:
    return {p.name for p in (d.state / "recordings").rglob("*") if p.is_file()}


def by(**fields: str) -> dict[str, str]:
    return {"actor": "auditor", "reason": "test", **fields}


def test_a_mark_for_a_purpose_the_caller_was_not_told_of_is_refused_and_logged(
    tmp_path: Path,
) -> None:
    with lifecycle_daemon(tmp_path) as d:
        call_id = d.ok({"op": "start", "line": "desk-01", "announced": ["training"]})["call_id"]
        refused = d.request({"op": "mark", "line": "desk-01"})
        assert refused["error"]["code"] == "not_allowed"
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped", timeout=15)
    (entry,) = d.events("mark_refused")
    assert (entry["call_id"], entry["purpose"]) == (call_id, "escalation")
    assert d.events("call_started")[0]["announced"] == ["training"]
    assert not d.events("call_marked")


def test_a_call_with_nothing_announced_never_enters_memory(tmp_path: Path) -> None:
    with lifecycle_daemon(tmp_path) as d:
        assert d.proc is not None
        d.ok({"op": "start", "line": "desk-01", "announced": []})
        time.sleep(1.0)
        (line,) = d.ok({"op": "status"})["lines"]
        assert line["seconds"] == 0
        if os.geteuid() == 0:  # reading the pool needs ptrace rights over the daemon
            assert not any(pool_bytes(d.proc.pid))
        assert d.request({"op": "mark", "line": "desk-01"})["error"]["code"] == "not_allowed"
        d.ok({"op": "end", "line": "desk-01"})
        (wiped,) = d.wait_for_event("call_wiped", timeout=15)
    assert (wiped["why"], wiped["seconds"]) == ("not_kept", 0)
    assert not (d.state / "recordings").exists()


def test_paused_audio_is_silence_in_the_recording_and_the_rest_is_the_input(
    tmp_path: Path,
) -> None:
    source = noise_wav(tmp_path / "in.wav", seconds=5.0)
    with lifecycle_daemon(tmp_path, source="file", file=str(tmp_path / "in.wav")) as d:
        d.ok({"op": "start", "line": "desk-01"})
        d.ok({"op": "mark", "line": "desk-01"})
        time.sleep(0.8)
        d.ok({"op": "pause", "line": "desk-01"})
        assert d.request({"op": "pause", "line": "desk-01"})["error"]["code"] == "not_allowed"
        time.sleep(0.8)
        d.ok({"op": "resume", "line": "desk-01"})
        time.sleep(0.8)
        d.ok({"op": "end", "line": "desk-01"})
        (committed,) = d.wait_for_event("call_committed", timeout=15)
    audio, _ = sf.read(str(d.state / committed["path"]), dtype="int16", always_2d=True)
    sidecar = json.loads((d.state / committed["path"]).with_suffix(".json").read_text())
    (pause,) = sidecar["pauses"]
    at, frames = round(pause["at_seconds"] * RATE), round(pause["seconds"] * RATE)
    assert 0.6 < pause["seconds"] < 1.2
    assert not audio[at : at + frames].any(), "the pause is silence"
    start = find_offset(source, audio)
    assert np.array_equal(audio[:at], looped_span(source, start, at))
    after = audio[at + frames :]
    resumed = (start + at + frames) % len(source)
    assert np.array_equal(after, looped_span(source, resumed, len(after))), "timeline kept"
    assert len(d.events("call_paused")) == len(d.events("call_resumed")) == 1


def test_a_purge_deletes_exactly_the_expired_recordings_and_a_hold_wins_until_released(
    tmp_path: Path,
) -> None:
    with lifecycle_daemon(tmp_path, lines=[("desk-01", [1, 2]), ("desk-02", [1, 2])]) as d:
        expiring = kept_call(d, "desk-01", "training")
        unresolved = kept_call(d, "desk-02", "escalation")
        # Kept until resolved, so that it cannot be purged before the hold is on; then
        # resolved, so that only the hold keeps it.
        held = kept_call(d, "desk-01", "escalation")
        d.wait_for_event("call_committed", count=3, timeout=15)
        d.ok({"op": "hold", "call_id": held, **by()})
        d.ok({"op": "resolve", "call_id": held, "purpose": "escalation", **by()})
        wait_until(lambda: expiring in deleted(d), timeout=15, what="the purge")
        time.sleep(1.5)  # another purge or two
        assert deleted(d) == {expiring: "expired"}
        refused = d.request({"op": "erase", "call_id": held, **by()})
        assert refused["error"]["code"] == "not_allowed"
        listed = {r["call_id"]: r for r in d.ok({"op": "recordings"})["recordings"]}
        assert set(listed) == {unresolved, held}
        assert listed[held]["held"] and listed[unresolved]["retain_until"] is None
        d.ok({"op": "release", "call_id": held, **by()})
        wait_until(lambda: held in deleted(d), timeout=15, what="the purge after release")
        assert set(deleted(d)) == {expiring, held}
        # Logged first, then unlinked by the worker.
        left = {f"{unresolved}.flac", f"{unresolved}.json"}
        wait_until(lambda: files(d) == left, what="the worker's unlink")
        assert audit.verify(d.state).ok


def test_a_two_purpose_recording_stays_until_its_last_purpose_is_served(
    tmp_path: Path,
) -> None:
    with lifecycle_daemon(tmp_path) as d:
        both = kept_call(d, "desk-01", "training", "escalation")
        d.wait_for_event("call_committed", timeout=15)
        time.sleep(4.0)  # training is over, escalation is not
        assert both not in deleted(d)
        assert d.ok({"op": "purge", "dry_run": True})["deleted"] == []
        reply = d.ok({"op": "resolve", "call_id": both, "purpose": "escalation", **by()})
        assert reply["retain_until"]
        wait_until(lambda: both in deleted(d), timeout=15, what="the purge after resolve")
        (resolved,) = d.events("recording_resolved")
        assert (resolved["actor"], resolved["reason"]) == ("auditor", "test")
        wait_until(lambda: files(d) == set(), what="the worker's unlink")


def test_an_erasure_cut_short_by_a_crash_is_finished_at_restart(tmp_path: Path) -> None:
    d = lifecycle_daemon(tmp_path)
    d.start()
    call_id = kept_call(d, "desk-01", "escalation")
    d.wait_for_event("call_committed", timeout=15)
    os.kill(worker_pid(d), signal.SIGSTOP)  # the deletion is logged, then nobody does it
    d.ok({"op": "erase", "call_id": call_id, **by(reason="subject asked")})
    d.stop(signal.SIGKILL)
    assert files(d) == {f"{call_id}.flac", f"{call_id}.json"}
    d.start()
    wait_until(lambda: files(d) == set(), what="the deletion finished")
    assert d.stop() == 0
    (erased,) = d.events("recording_deleted")
    assert (erased["why"], erased["reason"]) == ("erased", "subject asked")
    assert "finished the deletion" in d.stderr()
    assert audit.verify(d.state).ok


def test_a_learning_moment_extends_a_training_recording_but_never_past_its_cap(
    tmp_path: Path,
) -> None:
    with lifecycle_daemon(tmp_path) as d:
        # Escalation too, unresolved: nothing can purge it before the extension is on.
        call_id = kept_call(d, "desk-01", "training", "escalation")
        d.wait_for_event("call_committed", timeout=15)
        asked = {"op": "extend", "call_id": call_id, "purpose": "training"}
        reply = d.ok({**asked, "days": 0.5, **by(reason="learning moment")})
        until = parse_iso(reply["retain_until"])
        assert timedelta(hours=11.9) < until - datetime.now(UTC) < timedelta(hours=12.1)
        too_long = d.request({**asked, "days": 2, **by()})
        assert too_long["error"]["code"] == "not_allowed"
        d.ok({"op": "resolve", "call_id": call_id, "purpose": "escalation", **by()})
        time.sleep(3.0)  # purges, past training's own retention: the extension keeps it
        assert call_id not in deleted(d)
        (extended,) = d.events("recording_extended")
        assert (extended["retain_until"], extended["reason"]) == (
            reply["retain_until"],
            "learning moment",
        )


def test_a_callers_number_and_a_note_are_kept_nowhere_yet_find_their_recordings(
    tmp_path: Path,
) -> None:
    lines = [("desk-01", [1, 2]), ("desk-02", [1, 2])]
    reviewer = pyrage.x25519.Identity.generate()
    sealed = f'{PURPOSES}\n[storage]\nrecipients = ["{reviewer.to_public()}"]\n'
    with Daemon(tmp_path, extra=sealed, lines=lines) as d:
        ours = d.ok({"op": "start", "line": "desk-01", "caller": "+31 20 555-0199"})["call_id"]
        theirs = d.ok({"op": "start", "line": "desk-02", "caller": "+31205550100"})["call_id"]
        time.sleep(0.6)
        for line in ("desk-01", "desk-02"):
            d.ok({"op": "mark", "line": line, "note": "customer shouting"})
            d.ok({"op": "end", "line": line})
        d.wait_for_event("call_committed", count=2, timeout=15)
        asked = d.ok({"op": "recordings", "caller": "+31205550199"})["recordings"]
        assert [r["call_id"] for r in asked] == [ours], "found however the number is written"
        assert d.ok({"op": "recordings", "caller": "+44 20 7946 0000"})["recordings"] == []
    started = {e["call_id"]: e["caller_ref"] for e in d.events("call_started")}
    assert len(set(started.values())) == 2 and all(len(ref) == 64 for ref in started.values())
    committed = {e["call_id"]: e for e in d.events("call_committed")}
    recording = d.state / committed[ours]["path"]
    sidecar = json.loads(sidecar_path(recording, ours).read_text())
    assert sidecar["caller_ref"] == committed[ours]["caller_ref"] == started[ours]
    (mark,) = sidecar["marks"]
    assert pyrage.decrypt(mark["note_age"].encode(), [reviewer]) == b"customer shouting"
    assert theirs in committed
    assert (d.state / "caller.key").stat().st_mode & 0o777 == 0o600
    everything = [p.read_bytes() for p in d.state.rglob("*") if p.is_file()]
    everything.append(d.stderr().encode())
    for blob in everything:
        for written in (b"5550199", b"5550100", b"555-0199", b"customer shouting"):
            assert written not in blob
