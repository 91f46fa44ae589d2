"""Process hardening that keeps buffered audio out of core dumps and debuggers.

Invariant 1 says an unkept call never touches disk: a core dump would break
that, so the daemon turns core dumps off and marks itself non-dumpable
(which also stops other processes of the same user from ptrace-reading it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4


def harden_process() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        log.warning("libc not found: the process stays dumpable")
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
