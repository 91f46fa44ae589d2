"""Opening encrypted recordings: ``keygen``, ``access`` (logged first), ``export`` and ``play``.

Through the real daemon, the installed ``hindsight`` command and the Debian ``age`` tool: a
recording the daemon encrypted opens with ``age -d``, and with ``hindsight export`` only once
the commit log holds who opened it and why.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyrage
import pytest
import soundfile as sf

from hindsight import audit
from hindsight.client import access
from hindsight.client.access import Progress
from hindsight.commitlog import CommitLog
from hindsight.errors import ClientError
from tests.harness import BIN, RATE, Daemon, find_offset, looped_span, noise_wav
from tests.pulse import Capture, PulseServer, best_ncc, unavailable
from tests.test_audit import DAY, commit, start

CLIENT = str(BIN / "hindsight")
NOTE = "customer threatened legal action"
ARMOR = "-----BEGIN AGE ENCRYPTED FILE-----"
Int16 = np.ndarray[Any, np.dtype[np.int16]]


def age() -> str:
    found = shutil.which("age")
    if found is None:
        unavailable("age not found on PATH (apt-get install age)")
    assert found is not None
    return found


def hs(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[bytes]:
    """The installed client; bytes out, so that ``export -o -`` can be compared."""
    base = {k: v for k, v in os.environ.items() if k != "HINDSIGHT_CONFIG"}
    result = subprocess.run(
        [CLIENT, *args],
        capture_output=True,
        timeout=timeout,
        env={**base, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


def keygen(path: Path) -> str:
    """``hindsight keygen -o path``; its recipient."""
    made = hs("keygen", "-o", str(path))
    assert made.returncode == 0, made.stderr.decode()
    recipient = made.stdout.decode().strip()
    assert recipient.startswith("age1") and "\n" not in recipient
    return recipient


def age_decrypt(identity: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [age(), "-d", "-i", str(identity)], input=data, capture_output=True, timeout=30
    )


def export(d: Daemon, call_id: str, identity: Path, out: str, *more: str) -> Any:
    return hs(
        "--config", str(d.config), "export", call_id, "--identity", str(identity),
        "-o", out, "--reason", "ticket 4711", *more,
    )  # fmt: skip


def sealed(recipients: str, purposes: str = "") -> str:
    return f"[storage]\nrecipients = [{recipients}]\n{purposes}"


def file_daemon(tmp: Path, extra: str, **over: Any) -> tuple[Daemon, Int16]:
    source = noise_wav(tmp / "in.wav")
    return Daemon(tmp, source="file", file=str(tmp / "in.wav"), extra=extra, **over), source


def kept_call(d: Daemon, line: str = "desk-01", note: str | None = NOTE) -> dict[str, Any]:
    """A call marked part-way (with ``note``, unless None: then not marked at all); its
    ``call_committed``."""
    call_id = d.ok({"op": "start", "line": line, "agent": "ann"})["call_id"]
    time.sleep(0.5)
    if note is not None:
        d.ok({"op": "mark", "line": line, "note": note})
    time.sleep(0.5)
    d.ok({"op": "end", "line": line})
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for committed in d.events("call_committed"):
            if committed["call_id"] == call_id:
                return committed
        time.sleep(0.05)
    raise AssertionError(f"{call_id} was not committed: {d.stderr()}")


def assert_is_the_call(flac: bytes, source: Int16, committed: dict[str, Any]) -> None:
    """``flac`` holds exactly the input the call heard, sample for sample."""
    audio, rate = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
    assert rate == RATE and audio.shape[1] == 2
    assert len(audio) == round(committed["seconds"] * RATE) > RATE // 2
    assert np.array_equal(audio, looped_span(source, find_offset(source, audio), len(audio)))


def accesses(d: Daemon) -> list[dict[str, Any]]:
    return d.events("recording_accessed")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------------------
# keygen


def test_keygen_makes_a_0600_identity_under_umask_000_that_age_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[tuple[int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((flags, mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", spy)
    key = tmp_path / "reviewer.key"
    old = os.umask(0)
    try:
        recipient = access.keygen(str(key))
    finally:
        os.umask(old)
    flags, mode = opened[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600  # never wider, not once
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    created, public, secret = key.read_text().splitlines()
    assert created.startswith("# created: 20") and public == f"# public key: {recipient}"
    assert secret.startswith("AGE-SECRET-KEY-1") and str(pyrage.x25519.Identity.from_str(secret))
    sealed_text = pyrage.encrypt(
        b"for the reviewer only", [pyrage.x25519.Recipient.from_str(recipient)]
    )
    opened_by_age = age_decrypt(key, sealed_text)
    assert opened_by_age.returncode == 0, opened_by_age.stderr
    assert opened_by_age.stdout == b"for the reviewer only"


def test_keygen_never_overwrites_and_never_writes_a_secret_to_stdout(tmp_path: Path) -> None:
    key = tmp_path / "k"
    recipient = keygen(key)
    before = key.read_bytes()
    again = hs("keygen", "-o", str(key))
    assert again.returncode == 2 and b"exists" in again.stderr and again.stdout == b""
    assert key.read_bytes() == before
    dash = hs("keygen", "-o", "-")
    assert dash.returncode == 2 and b"SECRET" not in dash.stdout + dash.stderr
    assert hs("keygen").returncode == 2  # -o is required
    assert recipient not in (again.stderr + dash.stderr).decode()


def test_an_identity_file_that_is_wrong_is_named_never_quoted(tmp_path: Path) -> None:
    recipient_only = tmp_path / "recipient.txt"
    recipient_only.write_text(str(pyrage.x25519.Identity.generate().to_public()) + "\n")
    with pytest.raises(ClientError) as caught:
        access.load_identities(recipient_only)
    assert caught.value.exit_code == 2 and "public recipient" in str(caught.value)
    broken = tmp_path / "broken.key"
    secret = str(pyrage.x25519.Identity.generate())
    broken.write_text("# a comment\n\n" + secret[:-3] + "qqq\n")
    with pytest.raises(ClientError) as caught:
        access.load_identities(broken)
    assert "line 3" in str(caught.value) and secret[16:30] not in str(caught.value)
    with pytest.raises(ClientError) as caught:
        access.load_identities(tmp_path / "absent.key")
    assert caught.value.exit_code == 2


# ---------------------------------------------------------------------------------------------
# the whole path through the real daemon


def test_a_kept_call_opens_with_age_and_with_export_after_the_log_names_who_and_why(
    tmp_path: Path,
) -> None:
    key = tmp_path / "reviewer.key"
    recipient = keygen(key)
    daemon, source = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    out = tmp_path / "out" / "call.flac"
    out.parent.mkdir()
    with daemon as d:
        committed = kept_call(d)
        call_id = committed["call_id"]
        assert committed["path"].endswith(f"/{call_id}.flac.age")
        stored = (d.state / committed["path"]).read_bytes()
        assert stored.startswith(b"age-encryption.org/v1\n") and b"fLaC" not in stored

        # The Debian age tool opens the recording and the note with the identity keygen made.
        plain = age_decrypt(key, stored)
        assert plain.returncode == 0, plain.stderr
        assert_is_the_call(plain.stdout, source, committed)
        sidecar = json.loads((d.state / committed["path"]).with_name(f"{call_id}.json").read_text())
        (mark,) = sidecar["marks"]
        assert "note" not in mark and mark["note_age"].startswith(ARMOR)
        note = age_decrypt(key, mark["note_age"].encode())
        assert note.returncode == 0 and note.stdout.decode() == NOTE

        # export: the access is logged (who, why), then the FLAC lands, 0600, nothing else.
        assert accesses(d) == []
        done = export(d, call_id, key, str(out), "--actor", "reviewer-1")
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout == b"" and NOTE.encode() not in done.stderr
        log_written = (d.state / "commit.log").stat().st_mtime_ns
        (logged,) = accesses(d)
        assert d.entries()[-1] == logged
        assert (logged["call_id"], logged["actor"], logged["reason"]) == (
            call_id,
            "reviewer-1",
            "ticket 4711",
        )
        assert log_written <= out.stat().st_mtime_ns  # logged before the file was written
        assert out.read_bytes() == plain.stdout
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert leftovers(out.parent) == []

        # -o - writes the same FLAC to stdout, for a player; the actor defaults to the login.
        piped = export(d, call_id, key, "-")
        assert piped.returncode == 0, piped.stderr.decode()
        assert piped.stdout == plain.stdout
        assert accesses(d)[-1]["actor"] == getpass.getuser()

        # The auditor sees each access: verify accepts them, the report lists who, when, why.
        result = audit.verify(d.state)
        assert result.ok, result.problem
        report = json.loads(hs("audit", "report", "--state-dir", str(d.state), "--json").stdout)
        assert [(a["call_id"], a["actor"], a["reason"]) for a in report["accesses"]] == [
            (call_id, "reviewer-1", "ticket 4711"),
            (call_id, getpass.getuser(), "ticket 4711"),
        ]
        assert report["accesses"][0]["time"] == logged["time"]
        text = hs("audit", "report", "--state-dir", str(d.state)).stdout.decode()
        rows = text.split("\nAccesses\n")[1].splitlines()[2:]
        assert rows[0].split()[:3] == [call_id, str(logged["seq"]), logged["time"]]
        assert rows[0].split()[3:] == ["reviewer-1", "ticket", "4711"]

        # An erased recording opens no more, and nothing more is logged for it.
        d.ok({"op": "erase", "call_id": call_id, "actor": "dpo", "reason": "erasure request"})
        gone = export(d, call_id, key, str(tmp_path / "again.flac"))
        assert gone.returncode == 1 and b"(unknown_call)" in gone.stderr
        assert b"deleted (erased)" in gone.stderr
        assert len(accesses(d)) == 2 and not (tmp_path / "again.flac").exists()
        never = d.request({"op": "access", "call_id": "no-such", "actor": "a", "reason": "r"})
        assert never["error"]["code"] == "unknown_call" and "path" not in never
        assert len(accesses(d)) == 2


@contextmanager
def log_refuses_appends(d: Daemon) -> Iterator[None]:
    """The daemon can no longer extend any file past the commit log's size (RLIMIT_FSIZE on
    its process; Python ignores SIGXFSZ, so the append fails with EFBIG), until the end."""
    assert d.proc is not None
    size = (d.state / "commit.log").stat().st_size
    soft, hard = resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))


def test_an_access_the_log_cannot_hold_exports_nothing(tmp_path: Path) -> None:
    key = tmp_path / "k"
    recipient = keygen(key)
    daemon, _ = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    out = tmp_path / "out.flac"
    with daemon as d:
        call_id = kept_call(d)["call_id"]
        entries = len(d.entries())
        with log_refuses_appends(d):
            refused = export(d, call_id, key, str(out))
            asked = {"op": "access", "call_id": call_id, "actor": "a", "reason": "r"}
            direct = d.request(asked)
        assert refused.returncode == 1 and b"(internal)" in refused.stderr, refused.stderr
        assert direct == {"ok": False, "error": direct["error"]}
        assert direct["error"]["code"] == "internal"
        assert not out.exists() and leftovers(tmp_path) == []
        assert len(d.entries()) == entries  # nothing was logged, so nothing was opened
        # The log takes appends again: the same export now works, logged once.
        assert export(d, call_id, key, str(out)).returncode == 0
        assert len(accesses(d)) == 1 and out.exists()
    assert audit.verify(d.state).ok


def test_a_wrong_or_missing_identity_leaves_no_output(tmp_path: Path) -> None:
    key, stranger = tmp_path / "k", tmp_path / "stranger"
    recipient = keygen(key)
    keygen(stranger)
    daemon, _ = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    out = tmp_path / "out.flac"
    with daemon as d:
        call_id = kept_call(d)["call_id"]
        wrong = export(d, call_id, stranger, str(out))
        assert wrong.returncode == 1 and b"cannot decrypt" in wrong.stderr
        assert b"AGE-SECRET-KEY" not in wrong.stderr
        assert not out.exists() and leftovers(tmp_path) == []
        assert len(accesses(d)) == 1  # the attempt was logged: the daemon cannot tell keys apart
        piped = export(d, call_id, stranger, "-")
        assert piped.returncode == 1 and piped.stdout == b""
        missing = export(d, call_id, tmp_path / "absent.key", str(out))
        assert missing.returncode == 2 and b"does not exist" in missing.stderr
        assert not out.exists() and len(accesses(d)) == 2  # checked before asking the daemon


def test_a_purposes_own_recipient_opens_its_recordings_and_no_others(tmp_path: Path) -> None:
    first, second = tmp_path / "r1.key", tmp_path / "r2.key"
    r1, r2 = keygen(first), keygen(second)
    purposes = (
        '[purposes.training]\nlegal_basis = "consent"\nretention_days = 1\n'
        '[purposes.escalation]\nlegal_basis = "contract"\nretention_days = 1\n'
        f'recipients = ["{r2}"]\n'
    )
    daemon, source = file_daemon(tmp_path, sealed(f'"{r1}"', purposes), one_in=1)
    with daemon as d:
        escalation = kept_call(d)  # sampled (one_in = 1) and marked
        training = kept_call(d, note=None)  # sampled only
        assert escalation["purposes"] == ["training", "escalation"]
        assert training["purposes"] == ["training"]
        for identity in (first, second):
            opened = age_decrypt(identity, (d.state / escalation["path"]).read_bytes())
            assert opened.returncode == 0, opened.stderr
            assert_is_the_call(opened.stdout, source, escalation)
        stored = (d.state / training["path"]).read_bytes()
        by_r1 = age_decrypt(first, stored)
        assert by_r1.returncode == 0
        assert_is_the_call(by_r1.stdout, source, training)
        assert age_decrypt(second, stored).returncode != 0
        out = tmp_path / "training.flac"
        assert export(d, training["call_id"], second, str(out)).returncode == 1
        assert not out.exists()
        assert export(d, training["call_id"], first, str(out)).returncode == 0
        assert out.read_bytes() == by_r1.stdout


def test_an_altered_or_replaced_recording_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    recipient = keygen(key)
    daemon, _ = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    out = tmp_path / "out.flac"
    with daemon as d:
        committed = kept_call(d)
        call_id, stored = committed["call_id"], d.state / committed["path"]
        original = stored.read_bytes()
        # Anyone with the public key can make a valid recording: only the logged hash tells.
        forged = pyrage.encrypt(
            age_decrypt(key, original).stdout[:-4096],
            [pyrage.x25519.Recipient.from_str(recipient)],
        )
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 1
        for altered in (forged, bytes(flipped), original[:-10], original[:-100]):
            stored.write_bytes(altered)
            refused = export(d, call_id, key, str(out))
            assert refused.returncode == 1 and b"altered" in refused.stderr, refused.stderr
            assert not out.exists() and leftovers(tmp_path) == []
            piped = export(d, call_id, key, "-")
            assert piped.returncode == 1 and piped.stdout == b""
        stored.write_bytes(original)
        assert export(d, call_id, key, str(out)).returncode == 0


def test_the_audit_checks_that_an_accessed_recording_existed_and_who_opened_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        start(log, "c1", "desk-01", "ann")
        commit(log, tmp_path, "c1", "desk-01", {"training": "2099-01-01T00:00:00.000Z"})
        log.append("recording_accessed", call_id="c1", actor="rev", reason="weekly review")
    assert audit.verify(tmp_path).ok
    report = audit.report(tmp_path)
    assert [(a.call_id, a.actor, a.reason, a.log_line) for a in report.accesses] == [
        ("c1", "rev", "weekly review", 4)
    ]
    for fields, needle in (
        ({"call_id": "c9", "actor": "rev", "reason": "r"}, "'c9', which has no recording"),
        ({"call_id": "c1", "actor": "", "reason": "r"}, "must say who opened"),
        ({"call_id": "c1", "actor": "rev"}, "must say who opened"),
    ):
        broken = tmp_path / "broken"
        shutil.rmtree(broken, ignore_errors=True)
        shutil.copytree(tmp_path, broken, ignore=shutil.ignore_patterns("broken"))
        with CommitLog.open(broken / "commit.log") as log:
            log.append("recording_accessed", **fields)
        result = audit.verify(broken)
        assert not result.ok and result.problem is not None
        assert result.problem.startswith("commit.log line 5: ") and needle in result.problem
    with CommitLog.open(path) as log:
        log.append("recording_deleted", call_id="c1", path=f"{DAY}/c1.flac", why="erased",
                   actor="dpo", reason="asked")  # fmt: skip
        log.append("recording_accessed", call_id="c1", actor="rev", reason="too late")
    (tmp_path / DAY / "c1.flac").unlink()
    (tmp_path / DAY / "c1.json").unlink()
    result = audit.verify(tmp_path)
    assert result.problem == (
        "commit.log line 6: recording_accessed for call 'c1', which has no recording at that "
        "point (deleted on line 5)"
    )
    assert [a.reason for a in audit.report(tmp_path).accesses] == ["weekly review", "too late"]


# ---------------------------------------------------------------------------------------------
# play


def test_progress_shows_for_long_calls_only() -> None:
    out = io.StringIO()
    progress = Progress("c1", 12.0, out)
    for tenth in range(1, 121):
        progress.show(tenth / 10)
    progress.done()
    assert out.getvalue().splitlines() == [
        "hindsight: playing c1 0:05 / 0:12",
        "hindsight: playing c1 0:10 / 0:12",
    ]
    short = io.StringIO()
    quiet = Progress("c2", 3.0, short)
    quiet.show(1.0)
    quiet.stopped(1.0)
    assert short.getvalue() == "hindsight: stopped at 0:01 of 0:03\n"


def wait_for(what: str, check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def test_play_logs_the_access_and_sounds_the_call_on_the_device(
    pulse: PulseServer, tmp_path: Path
) -> None:
    key = tmp_path / "k"
    recipient = keygen(key)
    daemon, _ = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    with daemon as d:
        committed = kept_call(d)
        call_id = committed["call_id"]
        flac = age_decrypt(key, (d.state / committed["path"]).read_bytes()).stdout
        recording, _ = sf.read(io.BytesIO(flac), dtype="int16", always_2d=True)
        argv = [
            "--config", str(d.config), "play", call_id, "--identity", str(key),
            "--reason", "listening for the review", "--device", "pulse",
        ]  # fmt: skip
        with Capture(pulse, tmp_path / "monitor.npy") as monitor:
            played = hs(*argv, env=pulse.client_env())
            time.sleep(0.3)
            heard = monitor.stop()
        assert played.returncode == 0, played.stderr.decode()
        (logged,) = accesses(d)
        assert logged["reason"] == "listening for the review"
        for channel in (0, 1):
            similarity, _ = best_ncc(heard[:, channel], recording[:, channel])
            assert similarity > 0.9, (channel, similarity)


def test_ctrl_c_stops_play_cleanly(pulse: PulseServer, tmp_path: Path) -> None:
    key = tmp_path / "k"
    recipient = keygen(key)
    daemon, _ = file_daemon(tmp_path, sealed(f'"{recipient}"'))
    with daemon as d:
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        d.ok({"op": "mark", "line": "desk-01"})
        time.sleep(3.0)
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed")
        argv = [
            CLIENT, "--config", str(d.config), "play", call_id, "--identity", str(key),
            "--reason", "r", "--device", "pulse",
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            env=pulse.client_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # A shell's background job ignores SIGINT, and Python then keeps it ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        wait_for("access", lambda: accesses(d))
        # Logged before the client decrypts and opens its stream: wait until it plays.
        wait_for("playback", lambda: pulse.pactl("list", "short", "sink-inputs").strip() != "")
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - started < 2.0
    assert proc.returncode == 130, err.decode()
    assert re.search(rb"hindsight: stopped at 0:0[0-2] of 0:0[23]\n", err), err.decode()
    assert b"Traceback" not in err
