"""Durable files and folders: what the commit log, the store and the auditor need from disk.

A file is durable only when its folder entry is too, so every folder made
here is fsynced into its parent, and callers fsync a folder after they put a
file in it. ``file_sha256`` is how every part hashes a recording.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

DIR_MODE = 0o750
HASH_BLOCK = 1 << 20


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder made so the new entries are durable.

    Every folder made is ``DIR_MODE`` exactly: the mode keeps other users out whatever the
    umask, and the chmod keeps the group's read (auditors) when the umask would take it.
    """
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    try:
        os.mkdir(directory, DIR_MODE)
    except FileExistsError:
        if not directory.is_dir():
            raise
        return  # made meanwhile (the daemon and the worker both make folders)
    os.chmod(directory, DIR_MODE)
    fsync_dir(directory.parent)


def file_sha256(path: Path, tick: Callable[[], None] | None = None) -> str:
    """Hex SHA-256 of the file's bytes; ``tick``, if given, is called after every block."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
            if tick is not None:
                tick()
    return digest.hexdigest()
