"""Where a call's files lie under state_dir, and how to tell a whole recording from a partial.

One place names every path of a recording, so that the store (writing), the
worker redoing a job, recovery after a crash and the auditor agree on what
belongs to a call: ``recordings/YYYY/MM/DD/<call_id>.flac`` (``.flac.age`` when
encrypted), its sidecar ``<call_id>.json`` beside it (named by the call,
whatever the recording's suffix), and the store's temp files
``.<call_id>.<suffix>.<random>.tmp``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, TypeVar

from hindsight.durable import file_sha256
from hindsight.record import Committed

log = logging.getLogger(__name__)

RECORDINGS = "recordings"
RECORDING_SUFFIX = ".flac"
ENCRYPTED_SUFFIX = ".flac.age"
AnyPath = TypeVar("AnyPath", bound=PurePath)
_FOLDERS = f"{RECORDINGS}/*/*/*"


def day_folder(started: datetime) -> str:
    """The folder of a call's files under recordings/, from the day (UTC) it started."""
    return f"{started:%Y/%m/%d}"


def recording_path(state_dir: Path, folder: str, call_id: str, encrypted: bool = False) -> Path:
    suffix = ENCRYPTED_SUFFIX if encrypted else RECORDING_SUFFIX
    return state_dir / RECORDINGS / folder / f"{call_id}{suffix}"


def sidecar_path(recording: AnyPath, call_id: str) -> AnyPath:
    """The sidecar beside ``recording``."""
    return recording.parent / f"{call_id}.json"


def inside(state_dir: Path, relative: str) -> Path | None:
    """``state_dir / relative`` when ``relative`` names a place under recordings/ (as every
    logged path does), else None: a path from the log is never followed out of it."""
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] != RECORDINGS or ".." in parts or relative.startswith("/"):
        return None
    return state_dir.joinpath(*parts)


def landed(
    state_dir: Path, call_id: str, tick: Callable[[], None] | None = None
) -> Committed | None:
    """What ``call_id``'s sidecar says, when it and its recording landed whole (hash
    checked), else None."""
    for sidecar in sorted(state_dir.glob(f"{_FOLDERS}/{call_id}.json")):
        try:
            data: dict[str, Any] = json.loads(sidecar.read_text(encoding="utf-8"))
            recording = state_dir / data["path"]
            if recording.is_file() and file_sha256(recording, tick) == data["sha256"]:
                return Committed.from_log(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable sidecar %s: %s", sidecar, exc)
    return None


def partials(state_dir: Path, call_id: str) -> list[Path]:
    """Every file of ``call_id`` under recordings/: temp files, a recording, a sidecar."""
    return [
        *state_dir.glob(f"{_FOLDERS}/.{call_id}.*.tmp"),
        *state_dir.glob(f"{_FOLDERS}/{call_id}{RECORDING_SUFFIX}"),
        *state_dir.glob(f"{_FOLDERS}/{call_id}{ENCRYPTED_SUFFIX}"),
        *state_dir.glob(f"{_FOLDERS}/{call_id}.json"),
    ]
