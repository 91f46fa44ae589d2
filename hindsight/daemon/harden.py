"""Process hardening that keeps buffered audio out of core dumps, swap and debuggers.

Invariant 1 says an unkept call never touches disk: a core dump or a page
swapped out would break that. So the daemon turns core dumps off, marks
itself non-dumpable (which also stops other processes of the same user from
ptrace-reading it) and locks the chunk pool in memory. Locking also faults
every page in at start-up, so the audio thread never takes a page fault.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def harden_process() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    libc = _libc()
    if libc is None:
        log.warning("libc not found: the process stays dumpable")
        return
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())


def lock_in_memory(data: npt.NDArray[np.int16]) -> bool:
    """mlock ``data``; when the limit forbids it, warn and at least fault its pages in."""
    libc = _libc()
    address, size = data.ctypes.data, data.nbytes
    if libc is not None:
        libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        if libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(size)) == 0:
            return True
        errno = ctypes.get_errno()
        log.warning(
            "cannot lock the %d MiB chunk pool in memory (errno %d): buffered audio may be "
            "swapped out; raise the locked-memory limit (systemd: LimitMEMLOCK=infinity)",
            size >> 20,
            errno,
        )
    data.fill(0)  # touch every page now rather than on the audio thread
    return False
