"""The upload spool of the S3 backend: kept calls on local disk until the store has them.

With ``storage.backend = "s3"`` the worker writes a kept call here first, exactly as it would
write it under recordings/ (FLAC, age-encrypted to the recording's recipients, through a
``store.Sink``: never plaintext when there are recipients), and the recording is uploaded from
here; only once the recording and its sidecar are durable in the store does the daemon log
``call_committed``, and only then are the spool files removed. A store that is down or slow
therefore never holds up a call: kept calls wait here, in the order they were kept.

An entry is two files in ``state_dir/spool/``, numbered in the order the calls were kept:

- ``NNNNNNNNNNNN.<call_id>.flac.age`` (``.flac`` without recipients): the recording's bytes,
  as they will be in the store;
- ``NNNNNNNNNNNN.<call_id>.json``: the manifest, written last (so an entry without one is
  partial): the object key, the recording's SHA-256 and size, the ``call_committed`` fields
  but ``path``, ``sha256`` and ``version_id``, and what the sidecar adds to them (the agents'
  notes already sealed).

Both are written durably (temp file, fsync, link, fsync the folder), mode 0640. Nothing here
is ever logged by call: the journal gets counts only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hindsight.durable import file_sha256, fsync_dir
from hindsight.layout import ENCRYPTED_SUFFIX, RECORDING_SUFFIX

SPOOL = "spool"
MANIFEST_SUFFIX = ".json"
_DIGITS = 12


@dataclass(frozen=True, order=True)
class Entry:
    """One spooled call, by its number (the order it was kept in) and call id."""

    number: int
    call_id: str
    name: str  # the manifest's file name; names the entry on the worker's channel

    @property
    def stem(self) -> str:
        return f"{self.number:0{_DIGITS}d}.{self.call_id}"


@dataclass(frozen=True)
class Usage:
    """What the spool holds: whole entries and every byte of its files (partial ones too)."""

    entries: int
    bytes: int

    @property
    def mib(self) -> float:
        return self.bytes / (1 << 20)


def _parse(name: str) -> tuple[int, str, str] | None:
    """(number, call id, what) of a spool file name; what is manifest or recording."""
    head, dot, rest = name.partition(".")
    if not dot or len(head) != _DIGITS or not head.isdigit():
        return None
    for suffix, what in (
        (MANIFEST_SUFFIX, "manifest"),
        (ENCRYPTED_SUFFIX, "recording"),
        (RECORDING_SUFFIX, "recording"),
    ):
        if rest.endswith(suffix) and len(rest) > len(suffix):
            return int(head), rest[: -len(suffix)], what
    return None


class Spool:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / SPOOL

    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    def entries(self) -> list[Entry]:
        """Every entry with a manifest, in the order the calls were kept."""
        found = []
        for name in self.names():
            parsed = _parse(name)
            if parsed is not None and parsed[2] == "manifest":
                found.append(Entry(parsed[0], parsed[1], name))
        return sorted(found)

    def entry(self, name: str) -> Entry:
        parsed = _parse(name)
        if parsed is None or parsed[2] != "manifest" or "/" in name:
            raise ValueError(f"not a spool manifest: {name!r}")
        return Entry(parsed[0], parsed[1], name)

    def next_number(self) -> int:
        numbers = [parsed[0] for name in self.names() if (parsed := _parse(name)) is not None]
        return max(numbers, default=0) + 1

    def manifest(self, entry: Entry) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / entry.name).read_text(encoding="utf-8"))
        return data

    def recording(self, entry: Entry, manifest: dict[str, Any]) -> Path:
        suffix = ENCRYPTED_SUFFIX if str(manifest["key"]).endswith(ENCRYPTED_SUFFIX) else ""
        return self.root / f"{entry.stem}{suffix or RECORDING_SUFFIX}"

    def whole(self, entry: Entry) -> dict[str, Any] | None:
        """The entry's manifest when its recording is there with the SHA-256 it names."""
        try:
            manifest = self.manifest(entry)
            recording = self.recording(entry, manifest)
            if recording.is_file() and file_sha256(recording) == manifest["sha256"]:
                return manifest
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return None

    def find(self, call_id: str) -> Entry | None:
        """The (last) entry of ``call_id`` that has a manifest."""
        found = [entry for entry in self.entries() if entry.call_id == call_id]
        return found[-1] if found else None

    def files_of(self, call_id: str) -> list[Path]:
        """Every file of ``call_id`` here: manifests, recordings and the sinks' temp files."""
        found = []
        for name in self.names():
            # A sink's temp file is ".<final name>.<random>.tmp".
            final = name[1:].rsplit(".", 2)[0] if name.startswith(".") else name
            parsed = _parse(final)
            if parsed is not None and parsed[1] == call_id:
                found.append(self.root / name)
        return found

    def temp_files(self) -> list[Path]:
        return [self.root / name for name in self.names() if name.endswith(".tmp")]

    def remove(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        if paths and self.root.is_dir():
            fsync_dir(self.root)

    def remove_entry(self, entry: Entry) -> None:
        """The entry's files, its manifest first: a removal cut short by a crash leaves a
        recording without a manifest, which a restart takes for partial and removes."""
        stems = [
            self.root / f"{entry.stem}{ENCRYPTED_SUFFIX}",
            self.root / f"{entry.stem}{RECORDING_SUFFIX}",
        ]
        self.remove([self.root / entry.name, *stems])

    def usage(self) -> Usage:
        entries = total = 0
        for name in self.names():
            try:
                total += (self.root / name).stat().st_size
            except OSError:
                continue
            parsed = _parse(name)
            entries += parsed is not None and parsed[2] == "manifest"
        return Usage(entries, total)
