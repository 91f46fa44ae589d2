"""The chunk pool's memory: one shared mapping, made once, locked, kept out of core dumps.

Rules:

- The daemon makes the memory once at start-up (``PoolMemory.create``): an
  anonymous memfd, sealed against growing and shrinking, mapped shared. The
  worker process maps the same memfd (``PoolMemory.attach``), so it reads a
  call's audio in place and zeroes it there; nothing is copied between them.
- Both mappings are marked ``MADV_DONTDUMP`` (no core dump holds audio) and
  ``MADV_DONTFORK`` (a child forked to run another program does not inherit
  it), and locked in memory so that audio is never swapped out.
- When locking fails the memory is left untouched: pages are then committed
  as calls write into them, never all at once at start-up (a pool the
  machine cannot give must not be faulted in whole). The daemon then warns
  and goes on, or, with ``buffer.require_lock``, refuses to start: a
  ``ConfigError`` naming the limit to raise and by how much.
- The memfd has no name in any file system; it is gone when both processes
  have closed it.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import mmap
import os
import resource
from dataclasses import dataclass

import numpy as np

from hindsight.daemon.buffer import Int16Array
from hindsight.daemon.harden import libc
from hindsight.errors import ConfigError, HindsightError

log = logging.getLogger(__name__)

MEMFD_NAME = "hindsight-pool"
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
_MIB = 1 << 20


@dataclass
class PoolMemory:
    """A shared mapping of ``size`` bytes on memfd ``fd``; ``locked`` says whether mlock held."""

    fd: int
    size: int
    mapping: mmap.mmap
    locked: bool

    @classmethod
    def create(cls, size: int, require_lock: bool = False) -> PoolMemory:
        """A fresh, zeroed, sealed memfd of ``size`` bytes, mapped, advised and locked.

        With ``require_lock``, a pool that cannot be locked is a ``ConfigError``, not a warning.
        """
        try:
            fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError as exc:
            raise HindsightError(f"cannot create the chunk pool's memory: {exc}") from exc
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        except OSError as exc:
            os.close(fd)
            raise HindsightError(f"cannot size the chunk pool's memory: {exc}") from exc
        try:
            return cls.attach(fd, size, require_lock)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int, size: int, require_lock: bool = False) -> PoolMemory:
        """Map memfd ``fd`` (made by ``create``, maybe in another process), advised and locked."""
        try:
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except (OSError, ValueError) as exc:
            raise HindsightError(
                f"cannot map the {size >> 20} MiB chunk pool: {exc} "
                "(lower buffer.memory_mb, or raise the address-space limit, ulimit -v)"
            ) from exc
        mapping.madvise(mmap.MADV_DONTDUMP)
        mapping.madvise(mmap.MADV_DONTFORK)
        why = _mlock(mapping)
        if why is None:
            return cls(fd, size, mapping, True)
        if require_lock:
            mapping.close()
            raise ConfigError([f"buffer.require_lock: {lock_failure(size, why)}"])
        log.warning(
            "%s; buffered audio may be swapped out (buffer.require_lock = true refuses to start "
            "instead)",
            lock_failure(size, why),
        )
        return cls(fd, size, mapping, False)

    def array(self, chunk_samples: int) -> Int16Array:
        """The mapping as ``(chunks, chunk_samples)`` int16: the pool's data, no copy."""
        count = self.size // (chunk_samples * 2)
        return np.frombuffer(self.mapping, dtype=np.int16, count=count * chunk_samples).reshape(
            count, chunk_samples
        )


def lock_failure(size: int, why: str) -> str:
    """What a pool of ``size`` bytes that could not be locked (``why``) needs: which limit, and
    how high, in the systemd unit's and the shell's own units."""
    mib = -(-size // _MIB)
    soft = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
    now = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft >> 10} KiB"
    return (
        f"cannot lock the {mib} MiB chunk pool in memory ({why}); raise the locked-memory limit "
        f"(now {now}) to at least {mib} MiB: LimitMEMLOCK={mib}M (or infinity) in the systemd "
        f"unit, ulimit -l {mib << 10} (KiB) by hand"
    )


def _mlock(mapping: mmap.mmap) -> str | None:
    """Lock ``mapping`` in memory: None when it held, else why not."""
    lib = libc()
    if lib is None:
        return "libc not found"
    view = (ctypes.c_char * len(mapping)).from_buffer(mapping)
    try:
        address = ctypes.addressof(view)
        lib.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        if lib.mlock(ctypes.c_void_p(address), ctypes.c_size_t(len(mapping))) == 0:
            return None
        errno = ctypes.get_errno()
    finally:
        del view  # a live ctypes view would keep the mapping from ever closing
    return os.strerror(errno)
