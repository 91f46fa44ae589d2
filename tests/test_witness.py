"""Signed checkpoints and witnesses: a log cut short or rewritten before a witnessed line."""

from __future__ import annotations

import dataclasses
import json
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hindsight import audit
from hindsight.audit.witness import STORE_NAME, Refused, Store
from hindsight.checkpoint import SignedCheckpoint, sign
from hindsight.daemon import rights
from hindsight.errors import ClientError
from hindsight.protocol import Checkpoint, Ping
from tests.harness import BIN, Daemon, cli
from tests.test_client_ops import FakeDaemon
from tests.test_sampling import outcomes, rechain
from tests.test_worker import wait_until


def calls(d: Daemon, count: int) -> None:
    for _ in range(count):
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(0.05)
        d.ok({"op": "end", "line": "desk-01"})


def witness(d: Daemon, store: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "witness", "--endpoint", d.endpoint, "--store", str(store), *more)


def kept(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store / STORE_NAME).read_text().splitlines()]


def test_a_witness_keeps_signed_checkpoints_of_the_daemons_log_head(tmp_path: Path) -> None:
    store = tmp_path / "witness"
    with Daemon(tmp_path, one_in=2) as d:
        first = witness(d, store, "--once")
        assert first.returncode == 0, first.stderr
        calls(d, 2)
        wait_until(lambda: len(outcomes(d)) == 2, what="both outcomes")
        again = witness(d, store)
        assert again.returncode == 0, again.stderr
        same = witness(d, store)
    assert "witnessed line" in first.stdout and "witnessed line" in again.stdout
    assert "no new line since" in same.stdout
    checkpoints = kept(store)
    assert len(checkpoints) == 2
    assert checkpoints[0]["seq"] < checkpoints[1]["seq"]
    entries = {e["seq"]: e for e in d.entries()}
    for checkpoint in checkpoints:
        assert entries[checkpoint["seq"]]["hash"] == checkpoint["hash"]
        assert SignedCheckpoint(**checkpoint).problem() is None
    # Signed by the key the daemon keeps, private to it.
    key = d.state / "checkpoint.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = Ed25519PrivateKey.from_private_bytes(key.read_bytes()).public_key()
    assert checkpoints[0]["public_key"] == public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    assert stat.S_IMODE((store / STORE_NAME).stat().st_mode) == 0o640
    result = audit.verify(d.state, witnessed=Store(store).witnessed())
    assert result.ok, result.problem


def witnessed_state(tmp_path: Path) -> tuple[Daemon, Path]:
    """A stopped daemon's state dir and a witness store that saw its log mid-way."""
    store = tmp_path / "witness"
    with Daemon(tmp_path, one_in=2) as d:
        calls(d, 3)
        wait_until(lambda: len(outcomes(d)) == 3, what="every outcome")
        assert witness(d, store).returncode == 0
        calls(d, 2)
    return d, store


def test_a_log_cut_short_by_whole_lines_before_a_witnessed_line_fails_verify(
    tmp_path: Path,
) -> None:
    d, store = witnessed_state(tmp_path)
    seen = kept(store)[-1]["seq"]
    log = d.state / "commit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[: seen - 2]))  # whole lines: the chain still holds
    cut = cli("audit", "verify", "--state-dir", str(d.state), "--witness", str(store))
    assert cut.returncode == 1
    assert f"ends at line {seen - 2}, but a witness saw line {seen}" in cut.stderr
    assert "cut short" in cut.stderr
    # An emptied log is cut short too.
    log.write_bytes(b"")
    result = audit.verify(d.state, witnessed=Store(store).witnessed())
    assert not result.ok and "ends at line 0" in str(result.problem)


def test_a_log_rewritten_before_a_witnessed_line_fails_verify(tmp_path: Path) -> None:
    d, store = witnessed_state(tmp_path)
    assert audit.verify(d.state, witnessed=Store(store).witnessed()).ok
    # Rewritten and re-chained from line 3 on: every hash after it changes.
    rechain(d.state / "commit.log", lambda e: e | {"x": 1} if e["seq"] == 3 else e)
    seen = kept(store)[-1]["seq"]
    result = audit.verify(d.state, witnessed=Store(store).witnessed())
    assert not result.ok
    assert f"line {seen} has hash" in str(result.problem) and "rewritten" in str(result.problem)
    # Without the witness, the rewrite goes unseen: that is what witnesses are for.
    assert audit.verify(d.state).ok


def checkpoint(seq: int, head: str = "ab" * 32, key: bytes = b"k" * 32) -> SignedCheckpoint:
    return sign(key, seq, head, f"2026-11-29T12:00:{seq % 60:02d}.000Z")


def test_the_witness_refuses_a_broken_signature_a_step_back_a_fork_and_a_new_key(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    assert store.keep(checkpoint(10))
    refused = [
        dataclasses.replace(checkpoint(11), hash="cd" * 32),  # signed over another hash
        dataclasses.replace(checkpoint(11), signature="00" * 64),
        checkpoint(9),  # backwards
        checkpoint(10, head="ef" * 32),  # the same line with another hash
        checkpoint(12, key=b"x" * 32),  # another key
    ]
    for bad in refused:
        with pytest.raises(Refused):
            store.keep(bad)
    assert not store.keep(checkpoint(10))  # the same again adds nothing
    assert store.keep(checkpoint(12))
    assert [c["seq"] for c in kept(tmp_path)] == [10, 12]
    assert [c.seq for c in Store(tmp_path).kept] == [10, 12]  # read back


def test_a_store_edited_behind_the_witness_is_not_trusted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.keep(checkpoint(10))
    path = tmp_path / STORE_NAME
    path.write_text(path.read_text().replace('"seq":10', '"seq":11'))
    with pytest.raises(ClientError, match="line 11 cannot be trusted"):
        Store(tmp_path).witnessed()


def test_the_witness_command_refuses_a_checkpoint_with_a_broken_signature(
    tmp_path: Path,
) -> None:
    store = tmp_path / "witness"
    good = checkpoint(5)
    with FakeDaemon(f"ipc://{tmp_path}/fake.sock") as fake:
        fake.reply = {"ok": True, "checkpoint": dataclasses.asdict(good)}
        ok = cli("audit", "witness", "--endpoint", fake.endpoint, "--store", str(store))
        assert ok.returncode == 0, ok.stderr
        forged = dataclasses.replace(checkpoint(6), hash="99" * 32)
        fake.reply = {"ok": True, "checkpoint": dataclasses.asdict(forged)}
        bad = cli("audit", "witness", "--endpoint", fake.endpoint, "--store", str(store))
    assert bad.returncode == 1
    assert "checkpoint refused" in bad.stderr and "signature is not valid" in bad.stderr
    assert [c["seq"] for c in kept(store)] == [5]


def test_a_witness_running_every_few_seconds_rides_out_a_daemon_restart(tmp_path: Path) -> None:
    store = tmp_path / "witness"
    d = Daemon(tmp_path, one_in=2)
    d.start()
    every = subprocess.Popen(
        [
            str(BIN / "hindsight"),
            "audit",
            "witness",
            "--endpoint",
            d.endpoint,
            "--store",
            str(store),
            "--every",
            "0.3",
            "--timeout",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert d.stop() == 0
        time.sleep(1.0)  # unreachable meanwhile: it says so and tries again
        d.start()
        calls(d, 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            not (store / STORE_NAME).exists() or len(kept(store)) < 2
        ):
            time.sleep(0.2)
        d.stop()
    finally:
        every.send_signal(signal.SIGTERM)
        _, err = every.communicate(timeout=10)
    assert len(kept(store)) >= 2
    assert "trying again" in err
    assert audit.verify(d.state, witnessed=Store(store).witnessed()).ok


def test_only_the_auditor_role_but_admin_may_ask_for_checkpoints() -> None:
    allowed = {role for role, ops in rights.ALLOWED.items() if Checkpoint in ops}
    assert allowed == {"auditor"}
    assert rights.ALLOWED["auditor"] == {Ping, Checkpoint}


def test_a_witness_store_without_checkpoints_proves_nothing_and_says_so(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        calls(d, 1)
    typo = cli("audit", "verify", "--state-dir", str(d.state), "--witness", str(tmp_path / "x"))
    assert typo.returncode == 1 and "no checkpoint kept there" in typo.stderr


def test_a_checkpoint_signed_by_a_key_the_log_never_named_fails_verify(tmp_path: Path) -> None:
    d, store = witnessed_state(tmp_path)
    (started, *_) = d.events("daemon_started")
    assert started["checkpoint_key"] == kept(store)[0]["public_key"]
    real = {e["seq"]: e["hash"] for e in d.entries()}
    other = Store(tmp_path / "other")
    other.keep(sign(b"x" * 32, 3, real[3], "2026-11-29T12:00:00.000Z"))
    result = audit.verify(d.state, witnessed=other.witnessed())
    assert not result.ok and "which no daemon_started in commit.log names" in str(result.problem)
