"""The systemd notify protocol in a few lines: a no-op unless systemd gave us $NOTIFY_SOCKET.

Rules:

- ``READY=1`` once every source runs and the control socket is bound;
  ``STOPPING=1`` when a stop begins; ``STATUS=`` a line about the live calls,
  sent when it changes (counts only: nothing in it tells which calls are kept).
- ``WATCHDOG=1`` from the main loop, every half of ``$WATCHDOG_USEC``, and only
  while audio flows: when a running source has delivered no block for
  ``STALL_SECONDS``, the pings stop and systemd restarts the service. A source
  that knows it lost its device (and is reopening it) is not stuck.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

STALL_SECONDS = 2.0  # a running source silent this long is stuck


def notify(state: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        except OSError:
            return False
    return True


class StartProgress:
    """Long work before ``READY=1`` (checking a whole commit log the first time): every
    ``every`` seconds, the journal hears how far it has come, and systemd's start timeout is
    pushed out by ``grace`` seconds, so a big log is never cut short by ``TimeoutStartSec``."""

    def __init__(
        self,
        what: str,
        total_bytes: int,
        every: float = 5.0,
        grace: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.total, self.every, self.grace, self.clock = (
            what, max(total_bytes, 1), every, grace, clock,
        )  # fmt: skip
        self.started = self.last = clock()

    def __call__(self, lines: int, done_bytes: int) -> None:
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        percent = min(100.0, 100.0 * done_bytes / self.total)
        notify(
            f"EXTEND_TIMEOUT_USEC={int(self.grace * 1e6)}\n"
            f"STATUS={self.what}: {percent:.0f}% ({lines} lines)"
        )
        log.info("%s: %.0f%% (%d lines in %.0f s)", self.what, percent, lines, now - self.started)


def watchdog_interval(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between pings asked for by systemd (half its timeout); None when not asked."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class Flow:
    """When each source last delivered a block; set on the audio thread, one float store."""

    def __init__(self, names: list[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = dict.fromkeys(names, clock())

    def wrap(self, name: str, deliver: Callable[..., None]) -> Callable[..., None]:
        last, clock = self.last, self.clock

        def delivered(*args: object) -> None:
            last[name] = clock()
            deliver(*args)

        return delivered

    def stalled(self, states: Mapping[str, str]) -> list[str]:
        """The running sources that delivered nothing for ``STALL_SECONDS``."""
        now = self.clock()
        return [
            name
            for name, when in self.last.items()
            if states.get(name) == "running" and now - when > STALL_SECONDS
        ]


class Notifier:
    """What the main loop tells systemd each tick: STATUS on change, WATCHDOG while flowing."""

    def __init__(self, flow: Flow, interval: float | None, active: bool) -> None:
        self.flow = flow
        self.interval = interval
        self.active = active  # under systemd ($NOTIFY_SOCKET): else STATUS= is never built
        self.next_ping = 0.0
        self.status = ""
        self.stalled: list[str] = []

    def tick(self, now: float, status: Callable[[], str], states: Mapping[str, str]) -> list[str]:
        """Send what is due; return the sources that newly stalled (for the log)."""
        line = status() if self.active else ""
        if line != self.status:
            self.status = line
            notify(f"STATUS={line}")
        stalled = self.flow.stalled(states)
        newly = [name for name in stalled if name not in self.stalled]
        self.stalled = stalled
        if self.interval is not None and not stalled and now >= self.next_ping:
            notify("WATCHDOG=1")
            self.next_ping = now + self.interval
        return newly
