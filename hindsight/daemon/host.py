"""Checks of the host against the config: what the pure parser in ``hindsight.config`` cannot see.

Rules:

- Every problem is a ``section.key: message`` string, as in ``ConfigError``, so the command line
  prints it like any other config problem and exits 2.
- The ``*_problems`` functions only look; they never create, lock or allocate anything, so
  ``--check-config`` may run them as any user. A path it may not look at is no problem: the
  daemon's own user may well be allowed.
- ``make_state_dir`` is the one function here that changes the host; its failures are
  ``ConfigError``, never a bare errno. Folders it makes are ``STATE_DIR_MODE`` exactly,
  whatever the umask; an existing state folder that other users may enter is tightened
  (their bits taken away, with a warning), or the daemon refuses to start.
- Files and folders under state_dir: folders 0750, files 0640 (the group is the daemon's
  own, for auditors), secret keys 0600, nothing for other users. The daemon runs with
  ``UMASK`` (set first thing at start-up, inherited by its worker) and every place that
  creates something names its mode too, so neither alone decides.
- The ``/proc`` files and the address-space limit are parameters, so tests feed fake ones.
"""

from __future__ import annotations

import logging
import os
import resource
import stat
from pathlib import Path

from hindsight.config import Config
from hindsight.daemon.server import load_server_keys
from hindsight.errors import ConfigError, StoreError
from hindsight.objectstore import read_credentials

MEMINFO = Path("/proc/meminfo")
SELF_STATUS = Path("/proc/self/status")
STATE_DIR_MODE = 0o750
UMASK = 0o027  # the daemon's own: nothing for other users, group write never

_KIB_PER_MIB = 1024

log = logging.getLogger(__name__)


def check_host(config: Config) -> None:
    """ConfigError with every problem of the host for ``config``; cheap, allocates nothing."""
    problems = state_dir_problems(config.daemon.state_dir)
    problems += memory_problems(config.buffer.memory_mb)
    problems += curve_key_problems(config.daemon.curve_secret_key_file)
    if config.storage.s3:
        problems += s3_credentials_problems(config.storage.s3_credentials_file)
    if problems:
        raise ConfigError(problems)


# --- the state folder ---


def _kind(path: Path) -> str | None:
    """'folder', 'file', 'other' or 'missing'; None when ``path`` may not be looked at."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError:
        return None
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "other"


def state_dir_problems(path: Path) -> list[str]:
    """``path`` must be a folder, or be creatable: its nearest existing ancestor a folder."""
    for where in (path, *path.parents):
        kind = _kind(where)
        if kind == "missing":
            continue
        if kind in ("folder", None):
            return []
        what = "a file, not a folder" if kind == "file" else "not a folder"
        if where == path:
            return [f"daemon.state_dir: {path} is {what}"]
        return [f"daemon.state_dir: {path} is under {where}, which is {what}"]
    return []


def make_state_dir(path: Path) -> None:
    """Create the state folder (and its parents) unless it exists, ``STATE_DIR_MODE`` whatever
    the umask; take other users' bits off an existing one. ConfigError when it cannot."""
    problems = state_dir_problems(path)
    if problems:
        raise ConfigError(problems)
    missing = [where for where in (path, *path.parents) if _kind(where) == "missing"]
    try:
        for folder in reversed(missing):
            try:
                os.mkdir(folder, STATE_DIR_MODE)
            except FileExistsError:
                continue  # made meanwhile; checked below like any existing folder
            os.chmod(folder, STATE_DIR_MODE)  # exactly: the umask may have taken group bits
    except OSError as error:
        # A read-only file system, permission denied, or something that appeared in the way.
        reason = error.strerror or str(error)
        raise ConfigError([f"daemon.state_dir: cannot create {path}: {reason}"]) from error
    _tighten(path)


def _tighten(path: Path) -> None:
    """Take other users' bits off the existing state folder ``path``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & stat.S_IRWXO:
            os.chmod(path, mode & ~stat.S_IRWXO)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            [f"daemon.state_dir: cannot make {path} private to the daemon: {reason}"]
        ) from error
    if mode & stat.S_IRWXO:
        log.warning(
            "daemon.state_dir: %s was open to other users (mode %04o); now %04o",
            path,
            mode,
            mode & ~stat.S_IRWXO,
        )


# --- the key pair of daemon.listen ---


def curve_key_problems(path: Path | None) -> list[str]:
    """``daemon.curve_secret_key_file`` must be readable and hold a matching CURVE key pair.

    Unlike the state folder, a file this user may not read is a problem: the daemon has to
    read it, and ``--check-config`` is meant to run as the daemon's user (or root).
    """
    if path is None:
        return []
    try:
        load_server_keys(path)
    except ConfigError as error:
        return error.problems
    return []


def s3_credentials_problems(path: Path | None) -> list[str]:
    """``storage.s3_credentials_file`` must be readable, hold a key pair in ``[default]``, and
    be closed to other users (it is the host's key to the bucket). Never quotes the secret."""
    if path is None:
        return []
    key = "storage.s3_credentials_file"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return [f"{key}: {path} cannot be read: {exc.strerror or exc}"]
    if mode & 0o007:
        return [f"{key}: {path} is open to other users (mode {mode & 0o777:04o}); chmod 600 it"]
    try:
        read_credentials(path)
    except StoreError as exc:
        return [f"{key}: {exc}"]
    return []


# --- memory for the chunk pool ---


def _kib_field(path: Path, name: str) -> int | None:
    """The ``name:  123 kB`` field of a /proc file in KiB; None when absent or unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if key == name and fields and fields[0].isdigit():
            return int(fields[0])
    return None


def _soft_address_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_AS)[0]


def memory_problems(
    memory_mb: int,
    meminfo: Path = MEMINFO,
    status: Path = SELF_STATUS,
    address_limit: int | None = None,
) -> list[str]:
    """Whether a pool of ``memory_mb`` MiB fits this machine, and this process's limits.

    ``address_limit`` is the RLIMIT_AS soft limit in bytes (``resource.RLIM_INFINITY`` for none);
    None reads the real one.
    """
    problems: list[str] = []
    # The pool is locked in memory, which cannot be swapped out: only available RAM counts.
    available = _kib_field(meminfo, "MemAvailable")
    if available is not None and memory_mb * _KIB_PER_MIB > available:
        problems.append(
            f"buffer.memory_mb: {memory_mb} MiB is more than this machine has available "
            f"({available // _KIB_PER_MIB} MiB)"
        )
    limit = _soft_address_limit() if address_limit is None else address_limit
    if limit != resource.RLIM_INFINITY:
        # The pool is mapped on top of what the process already maps.
        free = max(0, limit // 1024 - (_kib_field(status, "VmSize") or 0))
        if memory_mb * _KIB_PER_MIB > free:
            problems.append(
                f"buffer.memory_mb: {memory_mb} MiB is more than the address-space limit "
                f"(ulimit -v) leaves this process ({free // _KIB_PER_MIB} MiB)"
            )
    return problems
