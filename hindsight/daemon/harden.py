"""Process hardening that keeps buffered audio out of core dumps, swap and debuggers.

Invariant 1 says an unkept call never touches disk: a core dump or a page
swapped out would break that. So both the daemon and its worker turn core
dumps off and mark themselves non-dumpable (which also stops other processes
of the same user from ptrace-reading them); the chunk pool itself is locked
and kept out of dumps where it is mapped (``memory``).

The worker also steps aside: it runs at idle scheduling priority, so that the
audio threads and the control loop always win the CPU, and it dies with the
daemon rather than outlive it holding audio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import signal

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4


def libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def _prctl(option: int, value: int) -> bool:
    lib = libc()
    if lib is None or lib.prctl(option, value, 0, 0, 0) != 0:
        log.warning("prctl(%d, %d) failed: %s", option, value, os.strerror(ctypes.get_errno()))
        return False
    return True


def harden_process() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _prctl(PR_SET_DUMPABLE, 0)


def lower_priority() -> str:
    """Run this process at idle priority (SCHED_IDLE, else nice 19); return which."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return "SCHED_IDLE"
    except (OSError, AttributeError):
        os.nice(19 - os.nice(0))
        return "nice 19"


def die_with_parent(parent: int) -> None:
    """Be killed when ``parent`` dies; exit now if it already has."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
