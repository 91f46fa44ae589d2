"""Verifiable sampling: seeds committed per epoch, draws recomputed by an auditor.

The draw is recomputed here with code of the test's own (hmac, hashlib), not with
``hindsight.sampling``: an auditor must be able to do it from the contract alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hindsight import audit
from hindsight.client.access import load_identities
from hindsight.commitlog import CommitLog, entry_hash
from hindsight.sampling import commitment, picked
from tests.harness import Daemon, cli
from tests.test_access import keygen
from tests.test_worker import wait_until

LINES = [(f"d{i}", [1, 2]) for i in range(8)]


def draw_by_the_contract(seed_hex: str, call_id: str, one_in: int) -> bool:
    digest = hmac.new(bytes.fromhex(seed_hex), call_id.encode("utf-8"), hashlib.sha256).digest()
    return one_in > 0 and int.from_bytes(digest[:8], "big") < 2**64 // one_in


def run_calls(d: Daemon, rounds: int, seconds: float = 0.06) -> list[str]:
    """``rounds`` calls on every line at once, each ``seconds`` long; their ids."""
    ids: list[str] = []
    for _ in range(rounds):
        ids += [d.ok({"op": "start", "line": name})["call_id"] for name, _ in LINES]
        time.sleep(seconds)
        for name, _ in LINES:
            d.ok({"op": "end", "line": name})
    return ids


def outcomes(d: Daemon) -> dict[str, dict[str, Any]]:
    return {e["call_id"]: e for e in d.entries() if e["event"] in ("call_committed", "call_wiped")}


def test_hundreds_of_draws_recomputed_from_the_revealed_seed(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=3, lines=LINES, memory_mb=32) as d:
        ids = run_calls(d, 30)
        wait_until(lambda: len(outcomes(d)) == len(ids), timeout=60, what="every outcome")
    entries = d.entries()
    (opened,) = [e for e in entries if e["event"] == "sampling_epoch"]
    (revealed,) = [e for e in entries if e["event"] == "sampling_reveal"]
    assert (opened["epoch"], opened["one_in"], opened["purpose"]) == (1, 3, "training")
    assert "sealed_seed" not in opened  # no [audit] recipients
    assert hashlib.sha256(bytes.fromhex(revealed["seed"])).hexdigest() == opened["commitment"]
    started = {e["call_id"]: e for e in entries if e["event"] == "call_started"}
    # The seed was committed before any call, and revealed only after every outcome.
    assert opened["seq"] < min(e["seq"] for e in started.values())
    assert revealed["seq"] > max(e["seq"] for e in outcomes(d).values())
    assert {e["epoch"] for e in started.values()} == {1}
    picked_ids = {i for i in ids if draw_by_the_contract(revealed["seed"], i, 3)}
    kept = {i for i, e in outcomes(d).items() if "sampled" in e.get("reasons", [])}
    assert kept == picked_ids
    assert 0.2 < len(kept) / len(ids) < 0.5, "one in three, roughly"
    # And the auditor's command recomputes them all.
    result = audit.verify(d.state)
    assert result.ok, result.problem
    assert result.draws == len(ids) == 240 and result.unverified_epochs == ()


def rechain(path: Path, edit: Any) -> None:
    """Rewrite the log with ``edit`` applied to each entry, every hash recomputed: a
    tamperer with write access to the file."""
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    prev = entries[0]["prev"]
    lines = []
    for entry in entries:
        entry = edit(dict(entry))
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
        lines.append(json.dumps(entry, separators=(",", ":"), sort_keys=True))
    path.write_text("\n".join(lines) + "\n")


def test_a_sampled_commit_turned_into_a_wipe_and_rechained_fails_verify(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=2, lines=LINES, memory_mb=32) as d:
        ids = run_calls(d, 3)
        wait_until(lambda: len(outcomes(d)) == len(ids), timeout=30, what="every outcome")
    assert audit.verify(d.state).ok
    victim = next(i for i, e in outcomes(d).items() if e["event"] == "call_committed")
    path = d.state / "recordings"

    def to_wipe(entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("call_id") == victim and entry["event"] == "call_committed":
            seconds = entry["seconds"]
            return {k: entry[k] for k in ("seq", "time", "prev", "call_id", "line")} | {
                "event": "call_wiped",
                "seconds": seconds,
                "why": "not_kept",
            }
        return entry

    # Hide the files too, so that only the draw can tell.
    for file in path.rglob(f"{victim}*"):
        file.unlink()
    rechain(d.state / "commit.log", to_wipe)
    result = audit.verify(d.state)
    assert not result.ok
    assert f"call {victim!r} was picked by the draw of sampling epoch 1, yet not kept" in str(
        result.problem
    )


def test_a_wipe_turned_into_a_sampled_commit_fails_verify(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=2, lines=LINES, memory_mb=32) as d:
        ids = run_calls(d, 3)
        wait_until(lambda: len(outcomes(d)) == len(ids), timeout=30, what="every outcome")
    victim = next(i for i, e in outcomes(d).items() if e["event"] == "call_wiped")

    def to_sampled(entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("call_id") == victim and entry["event"] == "call_wiped":
            entry["why"] = "no_audio"
            entry["reasons"] = ["sampled"]
        return entry

    rechain(d.state / "commit.log", to_sampled)
    problem = str(audit.verify(d.state).problem)
    assert f"call {victim!r} was kept as sampled, but the draw of sampling epoch 1" in problem


def test_a_seed_that_does_not_match_its_commitment_fails_verify(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=2) as d:
        run_calls_on(d, 2)
    rechain(
        d.state / "commit.log",
        lambda e: e | {"seed": "00" * 32} if e["event"] == "sampling_reveal" else e,
    )
    assert "the seed does not match epoch 1's commitment" in str(audit.verify(d.state).problem)


def run_calls_on(d: Daemon, count: int) -> None:
    for _ in range(count):
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(0.05)
        d.ok({"op": "end", "line": "desk-01"})


def test_a_crash_leaves_the_epoch_sealed_to_the_auditors_who_can_still_verify_it(
    tmp_path: Path,
) -> None:
    key = tmp_path / "auditor.key"
    recipient = keygen(key)
    extra = f'[audit]\nrecipients = ["{recipient}"]\n'
    d = Daemon(tmp_path, one_in=2, lines=LINES, memory_mb=32, extra=extra)
    d.start()
    ids = run_calls(d, 2)
    wait_until(lambda: len(outcomes(d)) == len(ids), timeout=30, what="every outcome")
    d.stop(signal.SIGKILL)  # the seed dies with the process: no reveal
    assert not [e for e in d.entries() if e["event"] == "sampling_reveal"]
    (opened,) = [e for e in d.entries() if e["event"] == "sampling_epoch"]
    assert opened["sealed_seed"].startswith("-----BEGIN AGE ENCRYPTED FILE-----")
    blind = audit.verify(d.state)
    assert blind.ok and blind.draws == 0 and blind.unverified_epochs == (1,)
    # While that run may still be live (nothing says it stopped), even an auditor's identity
    # opens nothing: a draw is never known before its call's outcome.
    early = audit.verify(d.state, identities=load_identities(key))
    assert early.ok and early.draws == 0
    # Debian's age opens it: the seed in hex, as sampling_reveal would have had it.
    opened_by_age = subprocess.run(
        ["age", "-d", "-i", str(key)], input=opened["sealed_seed"].encode(), capture_output=True
    )
    assert opened_by_age.returncode == 0, opened_by_age.stderr
    seed = opened_by_age.stdout.decode().strip()
    assert hashlib.sha256(bytes.fromhex(seed)).hexdigest() == opened["commitment"]
    # The next start opens epoch 2; epoch 1 is over, and the auditor can verify it.
    with d:
        run_calls_on_line(d, "d0")
    assert [e["epoch"] for e in d.entries() if e["event"] == "sampling_epoch"] == [1, 2]
    seeing = audit.verify(d.state, identities=load_identities(key))
    assert seeing.ok and seeing.draws == len(ids) + 1 and seeing.unverified_epochs == ()
    # The command line says what it could not verify, and verifies it with the identity.
    plain = cli("audit", "verify", "--state-dir", str(d.state))
    assert plain.returncode == 0
    assert "not verified: the draws of sampling epoch(s) 1" in plain.stdout
    sealed = cli("audit", "verify", "--state-dir", str(d.state), "--identity", str(key))
    assert sealed.returncode == 0 and f"{len(ids) + 1} sampling draws recomputed" in sealed.stdout
    assert "not verified" not in sealed.stdout


def run_calls_on_line(d: Daemon, line: str) -> None:
    d.ok({"op": "start", "line": line})
    time.sleep(0.05)
    d.ok({"op": "end", "line": line})


def test_an_epoch_is_revealed_only_once_its_last_call_is_settled(tmp_path: Path) -> None:
    # A new epoch every 1.8 s; a call live across rotations keeps its epoch's seed secret,
    # while a later epoch without calls is revealed as soon as it is over.
    def revealed(d: Daemon) -> dict[int, dict[str, Any]]:
        return {e["epoch"]: e for e in d.events("sampling_reveal")}

    with Daemon(tmp_path, one_in=2, sampling="epoch_hours = 0.0005") as d:
        d.ok({"op": "start", "line": "desk-01"})
        wait_until(lambda: 2 in revealed(d), timeout=30, what="epoch 2, without calls, revealed")
        assert 1 not in revealed(d), "epoch 1 has a live call"
        d.ok({"op": "end", "line": "desk-01"})
        wait_until(lambda: 1 in revealed(d), timeout=30, what="epoch 1 revealed")
        (outcome,) = [e for e in d.entries() if e["event"] in ("call_committed", "call_wiped")]
        assert revealed(d)[1]["seq"] > outcome["seq"]
    epochs = [e["epoch"] for e in d.entries() if e["event"] == "sampling_epoch"]
    assert epochs == list(range(1, len(epochs) + 1))
    assert sorted(revealed(d)) == epochs  # a clean stop reveals the rest
    assert audit.verify(d.state).ok


def test_a_reload_that_changes_one_in_opens_a_new_epoch(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=2) as d:
        assert d.proc is not None
        d.config.write_text(d.config.read_text().replace("one_in = 2", "one_in = 5"))
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for_event("config_reloaded")
        run_calls_on(d, 1)
    opened = [e for e in d.entries() if e["event"] == "sampling_epoch"]
    assert [(e["epoch"], e["one_in"]) for e in opened] == [(1, 2), (2, 5)]
    (call,) = d.events("call_started")
    assert call["epoch"] == 2


@pytest.mark.parametrize("one_in", [1, 2, 10, 1000])
def test_the_draw_is_the_contracts_hmac(one_in: int) -> None:
    seed = bytes(range(32))
    ids = [f"20261129T0554{i:02d}Z-{i:08x}" for i in range(300)]
    assert [picked(seed, i, one_in) for i in ids] == [
        draw_by_the_contract(seed.hex(), i, one_in) for i in ids
    ]
    assert commitment(seed) == hashlib.sha256(seed).hexdigest()
    assert not any(picked(seed, i, 0) for i in ids)


def test_the_draw_keyed_once_per_seed_is_the_contracts_hmac_for_any_seed_and_id() -> None:
    rng = random.Random(7)
    for _ in range(50):
        seed = rng.randbytes(32)
        for call_id in ["a", "ü-ß-☎-" * 20, "x" * 300, f"{rng.random()}"]:
            for one_in in (1, 3, 10):
                assert picked(seed, call_id, one_in) == draw_by_the_contract(
                    seed.hex(), call_id, one_in
                )


def test_epochs_must_be_numbered_without_a_gap_and_calls_name_the_open_one(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="t", config_sha256=None)
        log.append("sampling_epoch", epoch=1, one_in=2, purpose="training", commitment="0" * 64)
        log.append("sampling_epoch", epoch=3, one_in=2, purpose="training", commitment="0" * 64)
    assert "sampling_epoch numbered 3, not 2" in str(audit.verify(state).problem)
    other = tmp_path / "other"
    with CommitLog.open(other / "commit.log") as log:
        log.append("daemon_started", version="t", config_sha256=None)
        log.append("sampling_epoch", epoch=1, one_in=2, purpose="training", commitment="0" * 64)
        log.append("call_started", call_id="c1", line="d", agent=None, announced=[], epoch=2)
    problem = str(audit.verify(other).problem)
    assert "call_started names sampling epoch 2, but the epoch open there is 1" in problem


def test_a_reveal_before_the_last_call_of_its_epoch_settled_fails_verify(tmp_path: Path) -> None:
    with Daemon(tmp_path, one_in=2) as d:
        run_calls_on(d, 2)
    entries = d.entries()
    (reveal,) = [e for e in entries if e["event"] == "sampling_reveal"]
    last_outcome = max(e["seq"] for e in entries if e["event"] in ("call_committed", "call_wiped"))
    # Move the reveal before the last outcome, re-chained: a daemon that told too early.
    moved = [e for e in entries if e["seq"] != reveal["seq"]]
    at = next(i for i, e in enumerate(moved) if e["seq"] == last_outcome)
    moved.insert(at, reveal)
    log = d.state / "commit.log"
    log.write_text("".join(json.dumps(e) + "\n" for e in moved))
    rechain(log, lambda e: e)
    renumbered = [json.loads(line) for line in log.read_text().splitlines()]
    for seq, entry in enumerate(renumbered, start=1):
        entry["seq"] = seq
    log.write_text("".join(json.dumps(e) + "\n" for e in renumbered))
    rechain(log, lambda e: e)
    problem = str(audit.verify(d.state).problem)
    assert "sampling_reveal of epoch 1 while 1 of its calls have no outcome" in problem, problem


SEED = bytes(range(32))


def synthetic(tmp_path: Path, *lines: tuple[str, dict[str, Any]]) -> Path:
    """A state dir whose log is a run with one epoch (1 in 1: every call picked) and ``lines``."""
    state = tmp_path / "state"
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="t", config_sha256=None)
        log.append(
            "sampling_epoch", epoch=1, one_in=1, purpose="training", commitment=commitment(SEED)
        )
        for event, fields in lines:
            log.append(event, **fields)
    return state


def started(call_id: str, **more: Any) -> tuple[str, dict[str, Any]]:
    fields = {"call_id": call_id, "line": "d", "agent": None, "announced": ["training"]}
    return "call_started", fields | {"epoch": 1} | more


def wiped(call_id: str, why: str, **more: Any) -> tuple[str, dict[str, Any]]:
    return "call_wiped", {"call_id": call_id, "line": "d", "seconds": 1.0, "why": why, **more}


REVEAL = ("sampling_reveal", {"epoch": 1, "seed": SEED.hex()})
STOPPED = ("daemon_stopped", {"version": "t"})


def test_a_clean_stop_that_withholds_a_reveal_fails_verify(tmp_path: Path) -> None:
    state = synthetic(
        tmp_path, started("c1"), wiped("c1", "no_audio", reasons=["sampled"]), STOPPED
    )
    assert "stopped cleanly without revealing sampling epoch 1" in str(audit.verify(state).problem)


def test_a_call_without_an_epoch_in_a_run_that_has_one_fails_verify(tmp_path: Path) -> None:
    bare: tuple[str, dict[str, Any]] = ("call_started", {"call_id": "c1", "line": "d"})
    state = synthetic(tmp_path, bare)
    assert "call_started names sampling epoch None" in str(audit.verify(state).problem)


@pytest.mark.parametrize(
    "outcome",
    [
        wiped("c1", "whatever"),
        wiped("c1", "store_failed"),  # the daemon always names a kept call's reasons
        wiped("c1", "lost_in_crash"),  # in the same run: no crash came between
        wiped("c1", "not_kept"),
    ],
    ids=["made-up why", "store_failed without reasons", "lost without a crash", "not_kept"],
)
def test_a_picked_call_dropped_without_a_reason_the_daemon_gives_fails_verify(
    tmp_path: Path, outcome: tuple[str, dict[str, Any]]
) -> None:
    state = synthetic(tmp_path, started("c1"), outcome, REVEAL, STOPPED)
    assert "picked by the draw of sampling epoch 1, yet not kept as sampled" in str(
        audit.verify(state).problem
    )


def test_a_picked_call_lost_in_a_crash_or_wiped_for_want_of_audio_verifies(
    tmp_path: Path,
) -> None:
    state = synthetic(
        tmp_path,
        started("c1"),
        wiped("c1", "no_audio", reasons=["sampled"]),
        started("c2"),
        ("daemon_started", {"version": "t", "config_sha256": None}),  # a crash came between
        wiped("c2", "lost_in_crash"),
    )
    result = audit.verify(state)
    assert result.ok, result.problem
    assert result.unverified_epochs == (1,)  # the crash took epoch 1's seed
