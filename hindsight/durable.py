"""Durable folders: what the commit log and the store both need from the file system.

A file is durable only when its folder entry is too, so every folder made
here is fsynced into its parent, and callers fsync a folder after they put a
file in it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o750


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of every folder made so the new entries are durable."""
    if directory.is_dir():
        return
    make_dirs(directory.parent)
    directory.mkdir(mode=DIR_MODE, exist_ok=True)
    fsync_dir(directory.parent)
