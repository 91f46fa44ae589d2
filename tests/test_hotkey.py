"""``hindsight hotkey``: the record key as a global X11 key, end to end.

A private Xvfb (``-displayfd`` picks a free display number), the real daemon, the real
``hindsight hotkey`` as a subprocess and keys sent with ``xdotool`` (XTEST): a press marks the
live call (``call_marked`` in the commit log) and prints one line on stderr; a notification
goes out through ``notify-send``, here a stub on PATH that records its arguments.

Xvfb (xvfb), xdotool, xdpyinfo (x11-utils), desktop-file-validate (desktop-file-utils),
systemd-analyze (systemd) and pynput (the test extra) are installed by ``./run test``; without
them these tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import queue
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from hindsight.client import hotkey
from hindsight.client.cli import main as cli_main
from hindsight.client.transport import Refused
from hindsight.errors import ClientError
from hindsight.protocol import Refusal, Request, request_fields
from tests.harness import BIN, Daemon
from tests.pulse import tool, unavailable

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = ROOT / "desktop" / "hindsight-hotkey.desktop"
UNIT = ROOT / "desktop" / "hindsight-hotkey.service"
CLIENT = str(BIN / "hindsight")
LISTENING = "hotkey: listening for "
MARKED = "hotkey: marked the call on desk-01"
NO_CALL = "hotkey: no call on desk-01"
UNREACHABLE = "hotkey: daemon unreachable"
# More than the hotkey's debounce: a press this long after the last one is a new press.
APART = hotkey.DEBOUNCE_SECONDS + 0.2


def need_pynput() -> None:
    if importlib.util.find_spec("pynput") is None:
        unavailable("pynput is not installed (./run setup installs it)")


# --- the X server ---


@contextmanager
def xvfb() -> Iterator[str]:
    """A private Xvfb on a display number it picks itself; yields ``:N`` once it answers."""
    need_pynput()
    server = tool("Xvfb", "xvfb")
    tool("xdotool", "xdotool")
    xdpyinfo = tool("xdpyinfo", "x11-utils")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [server, "-displayfd", str(write), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        number = b""
        deadline = time.monotonic() + 10
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([read], [], [], left)[0], "Xvfb chose no display"
            chunk = os.read(read, 16)
            assert chunk, f"Xvfb exited {proc.wait()} before it chose a display"
            number += chunk
        name = f":{number.decode().strip()}"
        env = {**os.environ, "DISPLAY": name}
        while subprocess.run([xdpyinfo], env=env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, f"Xvfb on {name} accepts no connection"
            time.sleep(0.05)
        yield name
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def display() -> Iterator[str]:
    with xvfb() as name:
        yield name


def press(display: str, *args: str) -> None:
    """``xdotool ARGS`` on the display: ``key F9``, ``keydown F9``, ``key ctrl+alt+r``."""
    subprocess.run(
        ["xdotool", *args], env={**os.environ, "DISPLAY": display}, check=True, timeout=10
    )


# --- the hotkey as the agent's session runs it ---


def session_env(tmp: Path, display: str | None) -> dict[str, str]:
    """An X11 session's environment; ``notify-send`` is a stub that logs its arguments."""
    stubs = tmp / "bin"
    stubs.mkdir(exist_ok=True)
    stub = stubs / "notify-send"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['HOTKEY_TEST_NOTIFIED'], 'a') as log:\n"
        "    log.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    stub.chmod(0o755)
    drop = {"HINDSIGHT_CONFIG", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "DISPLAY"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PATH"] = f"{stubs}{os.pathsep}{env.get('PATH', '')}"
    env["HOTKEY_TEST_NOTIFIED"] = str(tmp / "notified.jsonl")
    if display is not None:
        env["DISPLAY"] = display
    return env


def notifications(tmp: Path, count: int, timeout: float = 5.0) -> list[list[str]]:
    """The arguments of the first ``count`` notify-send runs (they follow the stderr line)."""
    path = tmp / "notified.jsonl"
    deadline = time.monotonic() + timeout
    while True:
        found = path.read_text().splitlines() if path.exists() else []
        if len(found) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in found]
        time.sleep(0.05)


class Hotkey:
    """``hindsight hotkey ARGS`` as a subprocess; its stderr read line by line."""

    def __init__(self, tmp: Path, display: str | None, *args: str) -> None:
        self.proc = subprocess.Popen(
            [CLIENT, "hotkey", *args],
            env=session_env(tmp, display),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s: {self.lines}") from None
            if line is None:
                self._new.put(None)
                raise AssertionError(f"hotkey exited {self.proc.wait()}: {self.lines}")
            self.lines.append(line)
            if wanted(line):
                return line

    def wait_line(self, text: str, timeout: float = 10.0) -> str:
        return self.wait_for(lambda line: line == text, timeout)

    def listening(self) -> str:
        return self.wait_for(lambda line: line.startswith(LISTENING), timeout=15.0)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``; the exit status, once every line is read."""
        self.proc.send_signal(sig)
        code = self.proc.wait(10)
        while (line := self._new.get(timeout=5)) is not None:
            self.lines.append(line)
        self._new.put(None)
        assert not any("Traceback" in line for line in self.lines), self.lines
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def hotkeys(tmp_path: Path) -> Iterator[Callable[..., Hotkey]]:
    """Starts ``hindsight hotkey`` processes and kills whatever a failed test left running."""
    started: list[Hotkey] = []

    def start(display: str | None, *args: str) -> Hotkey:
        proc = Hotkey(tmp_path, display, *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def run_hotkey(tmp: Path, display: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """A hotkey expected to refuse at once."""
    result = subprocess.run(
        [CLIENT, "hotkey", *args],
        env=session_env(tmp, display),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def marks_in_sidecar(d: Daemon, call_id: str) -> list[dict[str, Any]]:
    """End-of-call check: the marks the daemon received, from the kept call's sidecar."""
    committed = [e for e in d.wait_for_event("call_committed") if e["call_id"] == call_id]
    (entry,) = committed
    sidecar = d.state / Path(entry["path"]).parent / f"{call_id}.json"
    marks: list[dict[str, Any]] = json.loads(sidecar.read_text())["marks"]
    return marks


# --- end to end ---


@pytest.mark.parametrize("one_in", [0, 1], ids=["unsampled", "sampled"])
def test_f9_marks_the_live_call_then_says_there_is_no_call(
    tmp_path: Path, display: str, hotkeys: Callable[..., Hotkey], one_in: int
) -> None:
    """The default key marks the call on the line; the line and the notification are the
    same whether or not the call was sampled (``one_in`` 1 samples every call); after the
    call ends, a press says there is no call. SIGTERM stops it with status 0."""
    with Daemon(tmp_path, one_in=one_in) as d:
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        hk = hotkeys(display, "--line", "desk-01", "--config", str(d.config))
        assert hk.listening() == (
            f"{LISTENING}<f9> on DISPLAY={display}: a press marks the call on desk-01"
        )
        press(display, "key", "F9")
        hk.wait_line(MARKED)
        (marked,) = d.wait_for_event("call_marked")
        assert (marked["call_id"], marked["purpose"]) == (call_id, "escalation")

        d.ok({"op": "end", "line": "desk-01"})
        (committed,) = d.wait_for_event("call_committed")
        assert committed["call_id"] == call_id
        assert ("sampled" in committed["reasons"]) == (one_in == 1), committed
        time.sleep(APART)
        press(display, "key", "F9")
        hk.wait_line(NO_CALL)
        # notify-send runs after the stderr line, on a daemon thread: wait before stopping.
        told = notifications(tmp_path, 2)
        assert hk.stop() == 0
    assert [line for line in hk.lines if not line.startswith(LISTENING)] == [
        MARKED,
        NO_CALL,
        "hotkey: stopped",
    ]
    assert told == [
        [
            "--app-name=Hindsight",
            "--urgency=normal",
            "--icon=dialog-information",
            "--expire-time=4000",
            "Call marked",
            "The whole call on desk-01 will be kept.",
        ],
        [
            "--app-name=Hindsight",
            "--urgency=critical",
            "--icon=dialog-warning",
            "--expire-time=4000",
            "Not marked",
            "No call on desk-01.",
        ],
    ]


def test_a_combination_and_a_purpose(
    tmp_path: Path, display: str, hotkeys: Callable[..., Hotkey]
) -> None:
    """``--key '<ctrl>+<alt>+r' --purpose training``: the combination marks the call for
    training; its parts alone (r, alt+r) and F9 do nothing. SIGINT stops it with status 0."""
    with Daemon(tmp_path) as d:
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        hk = hotkeys(
            display,
            *("--line", "desk-01", "--endpoint", d.endpoint),
            *("--key", "<ctrl>+<alt>+r", "--purpose", "training"),
        )
        assert hk.listening().startswith(f"{LISTENING}<ctrl>+<alt>+r on ")
        press(display, "key", "r", "alt+r", "ctrl+r", "F9")
        with pytest.raises(AssertionError, match="no such line"):
            hk.wait_for(lambda line: True, timeout=APART)
        press(display, "key", "ctrl+alt+r")
        hk.wait_line(MARKED)
        (marked,) = d.wait_for_event("call_marked")
        assert (marked["call_id"], marked["purpose"]) == (call_id, "training")
        assert hk.stop(signal.SIGINT) == 0


def test_a_held_key_marks_once(
    tmp_path: Path, display: str, hotkeys: Callable[..., Hotkey]
) -> None:
    """F9 held for 1.2 s (the X server repeats it: a second listener counts the presses) sends
    one mark; so do three presses 50 ms apart; a press after a pause sends the next. The
    daemon's sidecar shows what it received: two marks."""
    witness = subprocess.Popen(
        [sys.executable, "-c", WITNESS],
        env={**os.environ, "DISPLAY": display},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert witness.stdout is not None and witness.stdout.readline() == "ready\n"
        with Daemon(tmp_path) as d:
            call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
            hk = hotkeys(display, "--line", "desk-01", "--endpoint", d.endpoint)
            hk.listening()
            press(display, "keydown", "F9")
            time.sleep(1.2)
            press(display, "keyup", "F9")
            hk.wait_line(MARKED)
            time.sleep(APART + 1.0)  # the debounce counts from the last repeat the hotkey handled
            press(display, "key", "--delay", "50", "F9", "F9", "F9")
            hk.wait_line(MARKED)
            time.sleep(0.5)
            d.ok({"op": "end", "line": "desk-01"})
            assert hk.stop() == 0
            assert [line for line in hk.lines if line == MARKED] == [MARKED, MARKED]
            assert len(marks_in_sidecar(d, call_id)) == 2
        seen, _ = witness.communicate(timeout=10)
    finally:
        if witness.poll() is None:
            witness.kill()
            witness.wait()
    assert seen.count("press") > 4 + 3, f"the X server did not repeat the held key: {seen!r}"


WITNESS = """
import sys
from pynput import keyboard

def on_press(key, injected=False):
    if key == keyboard.Key.f9:
        print("press", flush=True)

with keyboard.Listener(on_press=on_press):
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_a_daemon_that_is_down_is_reported_and_the_hotkey_carries_on(
    tmp_path: Path, display: str, hotkeys: Callable[..., Hotkey]
) -> None:
    """No daemon: the press says so, and the hotkey keeps running; once the daemon is up, the
    next press marks the call."""
    endpoint = f"ipc://{tmp_path}/ctl.sock"
    hk = hotkeys(display, "--line", "desk-01", "--endpoint", endpoint, "--timeout", "2")
    hk.listening()
    press(display, "key", "F9")
    hk.wait_line(UNREACHABLE)
    pressed = time.monotonic()
    assert notifications(tmp_path, 1)[0][-2:] == [
        "Not marked",
        "The recorder does not answer: tell your supervisor.",
    ]
    assert hk.proc.poll() is None
    with Daemon(tmp_path, control=endpoint) as d:
        call_id = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        time.sleep(max(0.0, pressed + APART - time.monotonic()))
        press(display, "key", "F9")
        hk.wait_line(MARKED)
        assert d.wait_for_event("call_marked")[0]["call_id"] == call_id
        assert hk.stop() == 0


def test_a_purpose_the_caller_was_not_told_of_is_not_allowed(
    tmp_path: Path, display: str, hotkeys: Callable[..., Hotkey]
) -> None:
    with Daemon(tmp_path) as d:
        d.ok({"op": "start", "line": "desk-01", "announced": ["training"]})
        hk = hotkeys(display, "--line", "desk-01", "--endpoint", d.endpoint)
        hk.listening()
        press(display, "key", "F9")
        line = hk.wait_for(lambda line: line.startswith("hotkey: not allowed: "))
        assert "escalation" in line and line.endswith("(not_allowed)"), line
        d.wait_for_event("mark_refused")
        assert not d.events("call_marked")
        told = notifications(tmp_path, 1)  # before the stop: it follows the stderr line
        assert hk.stop() == 0
    assert told[0][-2].startswith("Not marked")


def test_the_x_server_going_away_ends_the_hotkey_with_status_1(
    tmp_path: Path, hotkeys: Callable[..., Hotkey]
) -> None:
    """A logout takes the X server away: one line, status 1 (the systemd unit restarts it,
    and then it refuses with 2, which is not retried), no traceback."""
    with xvfb() as name:
        hk = hotkeys(name, "--line", "desk-01", "--endpoint", f"ipc://{tmp_path}/none.sock")
        hk.listening()
    assert hk.proc.wait(10) == 1
    assert hk.stop() == 1
    assert hk.lines[-1] == "hindsight: lost the X display: the key listener stopped"


# --- refusals at start: status 2 ---


def free_display() -> str:
    """A display number no X server holds here."""
    for n in range(4242, 4342):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return f":{n}"
    raise AssertionError("no free display number")


def test_no_x_display_is_a_usage_error_that_says_what_to_do(tmp_path: Path) -> None:
    need_pynput()
    args = ("--line", "desk-01", "--endpoint", f"ipc://{tmp_path}/ctl.sock")
    unset = run_hotkey(tmp_path, None, *args)
    assert unset.returncode == 2, unset
    assert "hindsight: no X display (DISPLAY is not set)" in unset.stderr
    assert "desktop/hindsight-hotkey.desktop" in unset.stderr
    nobody = run_hotkey(tmp_path, free_display(), *args)
    assert nobody.returncode == 2, nobody
    assert "hindsight: cannot connect to the X server at DISPLAY=:" in nobody.stderr


@pytest.mark.parametrize(
    "session",
    [{"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, {"XDG_SESSION_TYPE": "wayland"}],
    ids=["wayland-display", "session-type"],
)
def test_wayland_is_refused_with_the_compositor_shortcut_as_the_way(
    tmp_path: Path, session: dict[str, str]
) -> None:
    need_pynput()
    result = subprocess.run(
        [CLIENT, "hotkey", "--line", "desk-01", "--endpoint", f"ipc://{tmp_path}/ctl.sock"],
        env={**session_env(tmp_path, None), **session},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2, result
    assert "Wayland session: X11 clients (this one too) get no global keys" in result.stderr
    assert "'hindsight mark LINE'" in result.stderr and "README" in result.stderr


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("F99", "pynput does not know '<f99>'"),
        ("<ctrl>+<nokey>", "pynput does not know '<nokey>'"),
        ("<ctrl>+<ctrl>", "pynput does not know '<ctrl>+<ctrl>'"),
        ("ctrl+", "is not a key: give one key or a combination"),
        ("", "is not a key: give one key or a combination"),
    ],
)
def test_a_bad_key_is_a_usage_error(tmp_path: Path, display: str, key: str, why: str) -> None:
    result = run_hotkey(
        tmp_path, display, "--line", "desk-01", "--endpoint", "ipc:///x.sock", "--key", key
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"hindsight: --key {key!r} is not a key"), result.stderr
    assert why in result.stderr, result.stderr


def test_a_bad_line_or_option_is_a_usage_error(tmp_path: Path) -> None:
    for args in (
        ("--line", ".hidden"),
        ("--line", "desk-01", "--purpose", "no spaces"),
        (),
        ("--line", "desk-01", "--endpoint", "desk-01"),
    ):
        result = run_hotkey(tmp_path, None, *args)
        assert result.returncode == 2, (args, result)


def test_without_pynput_it_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pynput", None)  # what an import of a missing one finds
    code = cli_main(["hotkey", "--line", "desk-01", "--endpoint", "ipc:///nowhere.sock"])
    assert code == 2
    assert capsys.readouterr().err == (
        "hindsight: the hotkey needs pynput, which is not installed: "
        "pip install 'hindsight[hotkey]'\n"
    )


def test_importing_the_client_does_not_import_pynput() -> None:
    probe = (
        "import sys, hindsight.client.cli, hindsight.client.hotkey; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pynput', 'Xlib')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30
    )
    assert found.stdout == "[]\n"


# --- the parts ---


@pytest.mark.parametrize(
    ("given", "spec"),
    [
        ("F9", "<f9>"),
        ("f12", "<f12>"),
        ("<f9>", "<f9>"),
        ("<ctrl>+<alt>+r", "<ctrl>+<alt>+r"),
        ("ctrl+alt+R", "<ctrl>+<alt>+R"),
        ("<ctrl>++", "<ctrl>++"),
        ("pause", "<pause>"),
    ],
)
def test_key_names_get_the_brackets_pynput_wants(given: str, spec: str) -> None:
    assert hotkey.hotkey_spec(given) == spec


def test_the_debounce_lets_a_press_through_only_after_a_quiet_second() -> None:
    debounce = hotkey.Debounce(1.0)
    # A key repeated every 40 ms for 2 s, then a press 1.2 s later.
    repeats = [0.04 * i for i in range(50)]
    assert [debounce(t) for t in repeats] == [True] + [False] * 49
    assert debounce(repeats[-1] + 0.9) is False
    assert debounce(repeats[-1] + 0.9 + 1.0) is True


def test_every_outcome_says_marked_or_why_not_and_never_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What each reply turns into; no text names the call, or sampling."""
    replies: list[Exception | dict[str, Any]] = [
        {"ok": True, "call_id": "20261129T055421Z-65d6bc9e"},
        Refused(Refusal("no_call", "no call on line desk-01")),
        Refused(Refusal("not_allowed", "the caller was not told of purpose training")),
        Refused(Refusal("unknown_line", "no line desk-99")),
        ClientError("daemon unreachable at ipc://x (no answer within 2 s)", 3),
        ClientError("the daemon at ipc://x sent a malformed reply", 1),
        {"ok": True, "call_id": "20261129T055421Z-65d6bc9e"},
    ]
    sent: list[dict[str, Any]] = []

    def fake(endpoint: str, request: Request, timeout: float) -> dict[str, Any]:
        sent.append(request_fields(request))
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(hotkey, "send", fake)
    outcomes = [hotkey.mark("ipc://x", "desk-01", "training", 2.0) for _ in range(6)]
    assert sent == [{"op": "mark", "line": "desk-01", "purpose": "training"}] * 6
    assert [(o.ok, o.line) for o in outcomes] == [
        (True, "marked the call on desk-01"),
        (False, "no call on desk-01"),
        (False, "not allowed: the caller was not told of purpose training (not_allowed)"),
        (False, "not marked: no line desk-99 (unknown_line)"),
        (False, "daemon unreachable"),
        (False, "not marked: the daemon at ipc://x sent a malformed reply"),
    ]
    for outcome in outcomes:
        text = f"{outcome.line} {outcome.summary} {outcome.body}".lower()
        assert "sampl" not in text and "65d6bc9e" not in text
    assert hotkey.mark("ipc://x", "desk-01", None, 2.0).ok
    assert sent[-1] == {"op": "mark", "line": "desk-01"}


def _stubbed_feedback(notify: str | None) -> tuple[hotkey.Feedback, list[bool]]:
    played: list[bool] = []
    return hotkey.Feedback(notify, tone=played.append), played


def _settle(played: list[bool], count: int) -> None:
    deadline = time.monotonic() + 5
    while len(played) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_feedback_is_a_tone_without_notify_send_or_when_it_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = hotkey.Outcome(True, "marked the call on desk-01", "Call marked", "b")
    refused = hotkey.Outcome(False, "no call on desk-01", "Not marked", "b")
    feedback, played = _stubbed_feedback(None)
    feedback(ok)
    feedback(refused)
    _settle(played, 2)
    assert played == [True, False]

    failing = tmp_path / "notify-send"
    failing.write_text("#!/bin/sh\necho 'no notification daemon' >&2\nexit 1\n")
    failing.chmod(0o755)
    feedback, played = _stubbed_feedback(str(failing))
    feedback(ok)
    feedback(ok)
    _settle(played, 2)
    assert played == [True, True]
    warned = capsys.readouterr().err.splitlines()
    assert warned == ["hotkey: notify-send failed (no notification daemon); a tone instead"]


def test_the_tones_are_short_and_tell_a_mark_from_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    played: list[tuple[Any, int, bool]] = []
    fake = SimpleNamespace(
        query_devices=lambda kind: {"default_samplerate": 48000.0},
        play=lambda data, rate, blocking: played.append((data, rate, blocking)),
    )
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    hotkey._tone(True)
    hotkey._tone(False)
    (mark, rate, blocking), (refusal, _, _) = played
    assert rate == 48000 and blocking
    for sound in (mark, refusal):
        assert sound.dtype == np.float32 and sound.ndim == 1
        assert len(sound) < 0.5 * rate and 0.1 < float(np.abs(sound).max()) <= 0.31
    assert len(mark) != len(refusal)


# --- the desktop files ---


def desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(DESKTOP.read_text())
    return parser["Desktop Entry"]


def test_the_autostart_entry_is_valid_and_runs_the_hotkey() -> None:
    entry = desktop_entry()
    argv = shlex.split(entry["Exec"])
    assert Path(argv[0]).name == "hindsight" and argv[1:3] == ["hotkey", "--line"], argv
    assert "%" not in entry["Exec"]
    assert (entry["Type"], entry["Terminal"]) == ("Application", "false")
    validate = tool("desktop-file-validate", "desktop-file-utils")
    checked = subprocess.run([validate, str(DESKTOP)], capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked


def test_the_user_unit_is_valid_and_runs_the_hotkey_in_the_graphical_session() -> None:
    analyze = tool("systemd-analyze", "systemd")
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    values = dict(line.split("=", 1) for line in lines if "=" in line and line[0] not in "#;")
    argv = values["ExecStart"].split()
    assert argv[1:] == ["hotkey", "--line", "${HINDSIGHT_LINE}"], argv
    assert values["WantedBy"] == values["PartOf"] == "graphical-session.target"
    assert values["RestartPreventExitStatus"] == "2" and values["Restart"] == "on-failure"
    with tempfile.TemporaryDirectory() as runtime:
        verified = subprocess.run(
            [analyze, "--user", "verify", str(UNIT)],
            env={**os.environ, "XDG_RUNTIME_DIR": runtime, "HOME": runtime},
            capture_output=True,
            text=True,
            timeout=60,
        )
    allowed = set()
    if not os.access(argv[0], os.X_OK):
        allowed.add(f"{UNIT.name}: Command {argv[0]} is not executable: No such file or directory")
    complaints = [line for line in (verified.stdout + verified.stderr).splitlines() if line]
    assert [line for line in complaints if line not in allowed] == [], complaints


def test_the_files_and_the_docs_name_the_same_command() -> None:
    docs = (ROOT / "docs" / "commands.md").read_text()
    assert "### `hotkey`" in docs
    for name in ("desktop/hindsight-hotkey.desktop", "desktop/hindsight-hotkey.service"):
        assert name in docs
    assert re.search(r"hindsight mark LINE", docs)
