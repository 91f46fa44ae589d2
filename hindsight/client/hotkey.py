"""``hindsight hotkey``: the agent's record key as a global key of the X11 session.

It listens with pynput (``GlobalHotKeys``, the X RECORD extension) and on each press sends
``{"op":"mark","line":LINE,"purpose"?:P}`` through the client's transport. Every press gets
one line on stderr and feedback the agent notices: a desktop notification (``notify-send``)
or, without one, a short tone on the default output. The feedback says that the call was
marked, or why not; never whether the call was sampled (the mark reply does not tell it).

pynput is an optional extra (``pip install 'hindsight[hotkey]'``) and is imported only when
the command runs, so that importing the client never loads it. Exit codes: 0 stopped by
SIGTERM or SIGINT; 1 the X display went away; 2 usage errors, which include pynput missing,
no X display and a Wayland session (X11 clients get no global keys there).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from hindsight.client.options import EXIT_USAGE, endpoint_of
from hindsight.client.transport import EXIT_UNREACHABLE, Refused, send
from hindsight.config import ID_PATTERN
from hindsight.errors import ClientError
from hindsight.protocol import Mark

DEFAULT_KEY = "F9"
# A press less than this long after the previous activation (sent or not) is not sent: a held
# key that the X server repeats as release and press pairs still marks once.
DEBOUNCE_SECONDS = 1.0
EXIT_LOST_DISPLAY = 1
INSTALL_HINT = "pip install 'hindsight[hotkey]'"
WAYLAND_HINT = (
    "this is a Wayland session: X11 clients (this one too) get no global keys there. "
    "Bind the record key in the compositor's own keyboard settings to the command "
    "'hindsight mark LINE' instead (see the README, 'The record key on the desktop')"
)
# A key name without the angle brackets pynput wants: F9, ctrl, page_down.
_BARE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]+")
LISTENER_THREAD = "hotkey-listener"
_STOP = "stop"
_PRESS = "press"


def line_id(text: str) -> str:
    """A line name as the protocol allows it; checked here so that a typo fails at start."""
    if not ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a line name: 1-64 of [A-Za-z0-9._-], not starting with a dot"
        )
    return text


def purpose_id(text: str) -> str:
    if not ID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a purpose name: 1-64 of [A-Za-z0-9._-], not starting with a dot"
        )
    return text


def add_parser(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--line", required=True, type=line_id, help="the agent's line, e.g. desk-01")
    sub.add_argument(
        "--key",
        default=DEFAULT_KEY,
        help="the key or combination, in pynput's syntax: F9 (the default), <f9>, "
        "<ctrl>+<alt>+r; a bare name such as F9 means <f9>",
    )
    sub.add_argument(
        "--purpose",
        type=purpose_id,
        metavar="P",
        help="keep the call for P (default: marking.purpose)",
    )


# --- the key ---


def _parts(text: str) -> Iterator[str]:
    """The parts of a combination as pynput splits them: '+' separates, unless it is a part's
    first character (so '<ctrl>++' is ctrl and '+')."""
    start = 0
    for i, char in enumerate(text):
        if char == "+" and i != start:
            yield text[start:i]
            start = i + 1
    if start == len(text):
        raise ValueError(text)
    yield text[start:]


def hotkey_spec(key: str) -> str:
    """``--key`` in pynput's syntax: a bare key name (``F9``, ``ctrl``) gets its brackets
    (``<f9>``, ``<ctrl>``); single characters and ``<name>`` parts stay as they are."""
    text = key.strip()
    try:
        parts = list(_parts(text)) if text else []
    except ValueError:
        parts = []
    if not parts:
        raise ClientError(f"--key {key!r} is not a key: {_KEY_EXAMPLES}", EXIT_USAGE)
    return "+".join(f"<{p.lower()}>" if _BARE_NAME.fullmatch(p) else p for p in parts)


_KEY_EXAMPLES = "give one key or a combination, e.g. F9, <f9>, <ctrl>+<alt>+r"


def check_key(keyboard: Any, key: str, spec: str) -> None:
    """Refuse (usage error) a key pynput cannot parse."""
    try:
        keyboard.HotKey.parse(spec)
    except ValueError as exc:
        part = exc.args[0] if exc.args else spec
        raise ClientError(
            f"--key {key!r} is not a key: pynput does not know {part!r} ({_KEY_EXAMPLES})",
            EXIT_USAGE,
        ) from None


# --- the session ---


def session_problem(env: Mapping[str, str]) -> str | None:
    """Why this session cannot have a global key for an X11 client, or None."""
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return WAYLAND_HINT
    if not env.get("DISPLAY"):
        return (
            "no X display (DISPLAY is not set): run the hotkey inside the agent's graphical "
            "X11 session, e.g. from its autostart file (desktop/hindsight-hotkey.desktop) or "
            "its systemd user unit (desktop/hindsight-hotkey.service), or set DISPLAY"
        )
    return None


def require_pynput() -> None:
    """pynput (and python-xlib, which it brings on Linux) must be installed."""
    for module in ("pynput", "Xlib"):
        if importlib.util.find_spec(module) is None:
            raise ClientError(
                f"the hotkey needs pynput, which is not installed: {INSTALL_HINT}", EXIT_USAGE
            )


def check_display(name: str) -> None:
    """Connect to the X server once: it must answer and have the RECORD extension."""
    xdisplay = importlib.import_module("Xlib.display")
    try:
        display = xdisplay.Display(name)
    except Exception as exc:  # Xlib raises its own errors, and OSError from the socket
        raise ClientError(
            f"cannot connect to the X server at DISPLAY={name} ({exc}): start the hotkey in "
            "the agent's X11 session, where DISPLAY names a running X server",
            EXIT_USAGE,
        ) from None
    try:
        if not display.has_extension("RECORD"):
            raise ClientError(
                f"the X server at DISPLAY={name} lacks the RECORD extension, which global "
                "keys need: enable it in the X server's configuration",
                EXIT_USAGE,
            )
    finally:
        display.close()


def load_keyboard() -> Any:
    try:
        return importlib.import_module("pynput.keyboard")
    except ImportError as exc:
        raise ClientError(f"pynput cannot use this X session: {exc}", EXIT_USAGE) from None


# --- what the agent hears or sees ---


@dataclass(frozen=True)
class Outcome:
    ok: bool
    line: str  # the stderr line, without "hotkey: "
    summary: str  # the notification's title
    body: str


def mark(endpoint: str, line: str, purpose: str | None, timeout: float) -> Outcome:
    """Send the mark; say what came of it, never anything about sampling."""
    try:
        send(endpoint, Mark(line=line, purpose=purpose), timeout)
    except Refused as exc:
        if exc.code == "no_call":
            return Outcome(False, f"no call on {line}", "Not marked", f"No call on {line}.")
        if exc.code == "not_allowed":
            return Outcome(False, f"not allowed: {exc}", "Not marked", f"Not allowed: {exc}.")
        return Outcome(False, f"not marked: {exc}", "Not marked", str(exc))
    except ClientError as exc:
        if exc.exit_code == EXIT_UNREACHABLE:
            return Outcome(
                False,
                "daemon unreachable",
                "Not marked",
                "The recorder does not answer: tell your supervisor.",
            )
        return Outcome(False, f"not marked: {exc}", "Not marked", str(exc))
    return Outcome(
        True, f"marked the call on {line}", "Call marked", f"The whole call on {line} will be kept."
    )


def _tone(ok: bool) -> None:
    """Two short rising beeps for a mark, one low one for a refusal."""
    import numpy as np
    import sounddevice as sd

    rate = int(sd.query_devices(kind="output")["default_samplerate"])

    def beep(hz: float, seconds: float) -> Any:
        t = np.arange(int(rate * seconds)) / rate
        fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)
        return (0.3 * fade * np.sin(2 * np.pi * hz * t)).astype(np.float32)

    gap = np.zeros(int(rate * 0.05), np.float32)
    sound = np.concatenate([beep(880, 0.08), gap, beep(1320, 0.08)]) if ok else beep(330, 0.35)
    sd.play(sound, rate, blocking=True)


class Feedback:
    """Tells the agent, off the main thread, so that a slow notifier never delays a mark."""

    def __init__(self, notify: str | None, tone: Callable[[bool], None] = _tone) -> None:
        self.notify = notify
        self.tone = tone
        self._queue: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._warned: set[str] = set()
        threading.Thread(target=self._run, name="hotkey-feedback", daemon=True).start()

    def __call__(self, outcome: Outcome) -> None:
        self._queue.put(outcome)

    def _run(self) -> None:
        while True:
            outcome = self._queue.get()
            if self.notify is not None and self._notify(self.notify, outcome):
                continue
            try:
                self.tone(outcome.ok)
            except Exception as exc:  # no output device, PortAudio missing: say so once
                self._warn("tone", f"cannot play the feedback tone: {exc}")

    def _notify(self, program: str, outcome: Outcome) -> bool:
        argv = [
            program,
            "--app-name=Hindsight",
            f"--urgency={'normal' if outcome.ok else 'critical'}",
            f"--icon={'dialog-information' if outcome.ok else 'dialog-warning'}",
            "--expire-time=4000",
            outcome.summary,
            outcome.body,
        ]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._warn("notify", f"notify-send failed ({exc}); a tone instead")
            return False
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
            self._warn("notify", f"notify-send failed ({why}); a tone instead")
            return False
        return True

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            say(message)


def say(message: str) -> None:
    print(f"hotkey: {message}", file=sys.stderr, flush=True)


# --- the key's debounce ---


class Debounce:
    """Lets an activation through only after ``window`` seconds without any activation: a
    key held down, however the X server repeats it, sends one mark."""

    def __init__(self, window: float = DEBOUNCE_SECONDS) -> None:
        self.window = window
        self._last: float | None = None

    def __call__(self, now: float) -> bool:
        quiet = self._last is None or now - self._last >= self.window
        self._last = now
        return quiet


# --- the command ---


@contextmanager
def _stopped_by_signals(events: queue.SimpleQueue[str]) -> Iterator[None]:
    """SIGTERM and SIGINT ask the main loop to stop (SimpleQueue.put is reentrant)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        events.put(_STOP)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _quiet_listener_death() -> Iterator[None]:
    """The listener's thread dies with an Xlib error when the X server goes away; the main
    loop reports that in one line, so no traceback from the thread."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is not None and args.thread.name == LISTENER_THREAD:
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def run(args: argparse.Namespace) -> int:
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    with _stopped_by_signals(events), _quiet_listener_death():
        endpoint = endpoint_of(args)
        spec = hotkey_spec(args.key)
        require_pynput()
        problem = session_problem(os.environ)
        if problem is not None:
            raise ClientError(problem, EXIT_USAGE)
        display = os.environ["DISPLAY"]
        check_display(display)
        keyboard = load_keyboard()
        check_key(keyboard, args.key, spec)
        debounce = Debounce()

        def activated() -> None:
            # In the listener's thread: nothing here blocks or raises.
            if debounce(time.monotonic()):
                events.put(_PRESS)

        feedback = Feedback(shutil.which("notify-send"))
        listener = keyboard.GlobalHotKeys({spec: activated})
        listener.name = LISTENER_THREAD
        listener.start()
        try:
            if not _ready(listener, events):
                return 0
            say(f"listening for {spec} on DISPLAY={display}: a press marks the call on {args.line}")
            return _serve(listener, events, args, endpoint, feedback)
        finally:
            _stop(listener)


def _stop(listener: Any) -> None:
    """Stop a running listener. One whose thread died (the X server went away) is left alone:
    pynput's stop() would talk to the lost display, or wait for a start that never came."""
    if listener.is_alive():
        with contextlib.suppress(Exception):  # the display went away meanwhile
            listener.stop()


def _ready(listener: Any, events: queue.SimpleQueue[str]) -> bool:
    """Wait until the listener runs; False when a signal asked to stop first."""
    ready = threading.Event()

    def wait() -> None:
        listener.wait()
        ready.set()

    threading.Thread(target=wait, name="hotkey-ready", daemon=True).start()
    while not ready.wait(0.1):
        if not listener.is_alive():
            raise ClientError(
                "the key listener stopped before it ran: the X server went away",
                EXIT_LOST_DISPLAY,
            )
        try:
            if events.get_nowait() == _STOP:
                return False
        except queue.Empty:
            pass
    return True


def _serve(
    listener: Any,
    events: queue.SimpleQueue[str],
    args: argparse.Namespace,
    endpoint: str,
    feedback: Feedback,
) -> int:
    while True:
        try:
            event = events.get(timeout=0.5)
        except queue.Empty:
            if not listener.is_alive():
                raise ClientError(
                    "lost the X display: the key listener stopped", EXIT_LOST_DISPLAY
                ) from None
            continue
        if event == _STOP:
            say("stopped")
            return 0
        outcome = mark(endpoint, args.line, args.purpose, args.timeout)
        say(outcome.line)
        feedback(outcome)
