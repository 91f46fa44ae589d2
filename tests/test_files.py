"""Who may read what the daemon leaves on disk, whatever the umask; and where call ids may lead.

Rule: under state_dir, folders are 0750 and files 0640 (the group is the daemon's own, for
auditors), the caller key and the checkpoint key 0600, and nothing has a bit for other users,
whatever umask the daemon was started with. A call id names a file under recordings/ and
nothing else.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hindsight import checkpoint
from hindsight.commitlog import CommitLog
from hindsight.daemon.pseudonym import KEY_NAME, Pseudonyms
from hindsight.daemon.store import Sink
from hindsight.durable import make_dirs
from tests.harness import Daemon, cli
from tests.test_worker import worker_pid

UMASKS = [0o000, 0o022, 0o077, 0o277]  # the last takes even the owner's read and write
# sh runs the daemon (exec: the same process) with the umask a careless unit or shell gives it.
WIDE_OPEN = ("sh", "-c", 'umask 000 && exec "$@"', "sh")


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- each place that creates something, in-process, under umasks that add or take bits ---


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_folders_made_for_recordings_are_0750_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    deepest = tmp_path / "recordings" / "2026" / "05" / "01"
    with umask(mask):
        make_dirs(deepest)
    for folder in (deepest, *list(deepest.parents)[:3]):
        assert mode(folder) == 0o750, folder


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_a_recording_is_0640_from_its_first_instant_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    final = tmp_path / "day" / "c-1.flac"
    with umask(mask):
        sink = Sink(final)
        # The temp file, before a byte is written: no moment where the umask decides.
        assert mode(sink.temp) == 0o640
        sink.write(b"fLaC")
        landed = sink.land()
    assert mode(landed) == 0o640 and landed.read_bytes() == b"fLaC"


def test_a_recording_is_created_0640_not_opened_wider_and_chmodded_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every later chmod gone, the mode it was created with is what is left."""
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    monkeypatch.setattr(os, "fchmod", lambda *args, **kwargs: None)
    with umask(0o000):
        sink = Sink(tmp_path / "c-1.flac")
    try:
        assert mode(sink.temp) == 0o640
    finally:
        sink.discard()


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_the_commit_log_and_the_caller_key_get_their_modes_whatever_the_umask(
    tmp_path: Path, mask: int
) -> None:
    with umask(mask):
        CommitLog.open(tmp_path / "commit.log").close()
        Pseudonyms.open(tmp_path)
    assert mode(tmp_path / "commit.log") == 0o640
    assert mode(tmp_path / "commit.index") == 0o600
    assert mode(tmp_path / KEY_NAME) == 0o600


def test_a_caller_key_open_to_others_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = Pseudonyms.open(tmp_path).ref("+31205550199")
    (tmp_path / KEY_NAME).chmod(0o644)

    with caplog.at_level(logging.WARNING):
        again = Pseudonyms.open(tmp_path).ref("+31205550199")

    assert again == ref  # the same key, only its mode changed
    assert mode(tmp_path / KEY_NAME) == 0o600
    assert "open to the group or others (mode 0644); now 0600" in caplog.text


# --- the real daemon, started with umask 000 ---


def test_nothing_under_state_dir_is_for_other_users_even_with_umask_000(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o755)  # as `mkdir` under the usual umask 022 leaves it: others may enter
    lines = [("desk-01", [1, 2]), ("desk-02", [1, 2])]
    with Daemon(tmp_path, wrap=WIDE_OPEN, lines=lines) as d:
        assert d.proc is not None
        # The daemon's own umask, which its worker inherits: the rule for what nobody names.
        for pid in (d.proc.pid, worker_pid(d)):
            status = Path(f"/proc/{pid}/status").read_text()
            assert "\nUmask:\t0027\n" in status, pid
        for line in ("desk-01", "desk-02"):
            d.ok({"op": "start", "line": line, "caller": "+31205550199"})
        time.sleep(0.5)
        d.ok({"op": "mark", "line": "desk-01"})
        for line in ("desk-01", "desk-02"):
            d.ok({"op": "end", "line": line})
        d.wait_for_event("call_committed", timeout=15)
        d.wait_for_event("call_wiped", timeout=15)
    assert "state was open to other users (mode 0755); now 0750" in d.stderr()
    found = {p.relative_to(state).as_posix(): mode(p) for p in (state, *state.rglob("*"))}
    (committed,) = d.events("call_committed")
    day = committed["path"].removeprefix("recordings/").rsplit("/", 1)[0]
    expected = {
        ".": 0o750,
        "commit.log": 0o640,
        "commit.index": 0o600,  # call ids: for the daemon alone
        KEY_NAME: 0o600,
        checkpoint.KEY_NAME: 0o600,
        "recordings": 0o750,
        **{f"recordings/{day.rsplit('/', n)[0]}": 0o750 for n in (0, 1, 2)},
        committed["path"]: 0o640,
        committed["path"].removesuffix(".flac") + ".json": 0o640,
    }
    assert found == expected
    assert not [p for p, bits in found.items() if bits & stat.S_IRWXO]


# --- call ids ---

HOSTILE_IDS = [
    "../x",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a\\b",
    "x\ny",
    "caf\u00e9",
    "",
    "a" * 65,
]


def test_hostile_call_ids_are_refused_and_lead_nowhere(tmp_path: Path) -> None:
    """Through the command line (the ids that look like paths) and the raw protocol (all of
    them, to every op that takes a call id)."""
    absolute = str(tmp_path / "escaped")
    hostile = [*HOSTILE_IDS, absolute]
    with Daemon(tmp_path) as d:
        for bad in ["../x", "..", "a/b", absolute, "a" * 65]:
            started = cli("start", "desk-01", "--call-id", bad, "--endpoint", d.endpoint)
            assert started.returncode == 1, (bad, started)
            assert started.stderr.rstrip().endswith("(bad_request)"), (bad, started.stderr)
        # No argv holds a NUL: that one goes as JSON.
        for bad in [*hostile, "a\x00b"]:
            reply = d.request({"op": "start", "line": "desk-01", "call_id": bad})
            assert reply["error"]["code"] == "bad_request", bad
            signed = {"call_id": bad, "actor": "auditor", "reason": "test"}
            ops: list[tuple[str, dict[str, Any]]] = [
                ("resolve", {"purpose": "escalation"}),
                ("extend", {"purpose": "training", "days": 1}),
                ("hold", {}),
                ("release", {}),
                ("erase", {}),
            ]
            for op, more in ops:
                reply = d.request({"op": op, **signed, **more})
                assert reply["error"]["code"] == "bad_request", (op, bad)
        (idle,) = d.ok({"op": "status"})["lines"]
        assert idle["call_id"] is None  # no refused start left a call behind
        # The longest id there may be, and one with dots and dashes inside: kept, in place.
        for good in ["a" * 64, "x..y-_.z"]:
            assert d.ok({"op": "start", "line": "desk-01", "call_id": good})["call_id"] == good
            time.sleep(0.2)
            d.ok({"op": "mark", "line": "desk-01"})
            d.ok({"op": "end", "line": "desk-01"})
        committed = d.wait_for_event("call_committed", count=2, timeout=15)
    assert [e["call_id"] for e in d.events("call_started")] == ["a" * 64, "x..y-_.z"]
    outside = sorted(
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if not p.is_relative_to(d.state / "recordings")
    )
    # (The control socket is gone with the daemon.)
    assert outside == [
        "daemon.stderr",
        "hindsight.toml",
        "state",
        "state/caller.key",
        "state/checkpoint.key",
        "state/commit.index",
        "state/commit.log",
    ]
    recordings = (d.state / "recordings").rglob("*")
    kept = sorted(p.relative_to(d.state).as_posix() for p in recordings if p.is_file())
    assert kept == sorted(
        path
        for entry in committed
        for path in (entry["path"], entry["path"].removesuffix(".flac") + ".json")
    )
    assert all(path.startswith("recordings/") and ".." not in path.split("/") for path in kept)
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}*/escaped*"))
