"""Recordings on disk: FLAC encoding and the atomic, durable write of a file and its sidecar.

Rules:

- Only the committer thread calls this module; it never runs on the audio
  thread or in the control loop.
- A call is encoded to FLAC in memory, chunk by chunk (libsndfile has crashed
  on one huge write), then streamed through ``Sink`` into a temporary file in
  the target folder. The sink is the seam where encryption will wrap the
  stream, so that plaintext never has to touch the disk.
- A file appears under its final name only whole: temp file, fsync, link to
  the final name (which never replaces an existing file), fsync the folder.
- The sidecar is written the same way, and only after both are durable does
  the caller append ``call_committed`` to the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import soundfile as sf

from hindsight import __version__
from hindsight.clock import iso
from hindsight.config import Config
from hindsight.daemon.buffer import Int16Array
from hindsight.daemon.calls import Call
from hindsight.durable import fsync_dir, make_dirs
from hindsight.errors import StoreError

RECORDINGS = "recordings"
COPY_BLOCK = 1 << 20
# The fields of a call_committed line; every sidecar holds them too.
COMMITTED_FIELDS = (
    "call_id",
    "line",
    "agent",
    "reasons",
    "purposes",
    "retention",
    "retain_until",
    "path",
    "sha256",
    "seconds",
    "rolled_seconds",
    "lost_seconds",
    "status_flags",
)


@dataclass(frozen=True)
class Committed:
    """What the log line ``call_committed`` says about a kept call."""

    fields: dict[str, Any]


def encode_flac(views: Iterable[Int16Array], samplerate: int, channels: int) -> bytes:
    memory = io.BytesIO()
    with sf.SoundFile(memory, "w", samplerate, channels, subtype="PCM_16", format="FLAC") as flac:
        for view in views:
            flac.write(view)
    return memory.getvalue()


class Sink:
    """A temporary file that hashes what passes through it and lands atomically."""

    def __init__(self, final: Path) -> None:
        self.final = final
        make_dirs(final.parent)
        self.temp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
        self._file: BinaryIO = open(self.temp, "xb")  # noqa: SIM115 - closed in land/discard
        os.chmod(self.temp, 0o640)
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def land(self) -> Path:
        """fsync, then give the file its final name without ever replacing one; fsync the folder."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = _free_name(self.final)
        os.link(self.temp, final)
        os.unlink(self.temp)
        fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


def _free_name(path: Path) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``… when a file (say from a crash) holds it."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def write_durably(final: Path, data: bytes) -> tuple[Path, str]:
    sink = Sink(final)
    try:
        for at in range(0, len(data), COPY_BLOCK):
            sink.write(data[at : at + COPY_BLOCK])
        return sink.land(), sink.sha256
    except BaseException:
        sink.discard()
        raise


class Store:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = config.daemon.state_dir

    def commit(self, call: Call) -> Committed:
        """Write ``call`` as FLAC plus sidecar; return the fields of its ``call_committed``."""
        try:
            return self._commit(call)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            raise StoreError(f"cannot write recording of call {call.call_id}: {exc}") from exc

    def _commit(self, call: Call) -> Committed:
        assert call.ended is not None
        channels = len(call.line.channels)
        flac = encode_flac(call.buffer.views(), call.samplerate, channels)
        folder = self.root / RECORDINGS / f"{call.started:%Y/%m/%d}"
        path, digest = write_durably(folder / f"{call.call_id}.flac", flac)
        fields = self._fields(call, path, digest)
        sidecar = dict(fields, **self._sidecar_extra(call, fields["retention"]))
        text = json.dumps(sidecar, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        try:
            write_durably(path.with_suffix(".json"), text.encode("utf-8"))
        except BaseException:
            path.unlink(missing_ok=True)  # a retry writes both again, under the same name
            raise
        return Committed(fields)

    def _fields(self, call: Call, path: Path, digest: str) -> dict[str, Any]:
        assert call.ended is not None
        retention = self._retention(call, call.ended)
        rate = call.samplerate
        fields = {
            "call_id": call.call_id,
            "line": call.line.name,
            "agent": call.agent,
            "reasons": reasons(call),
            "purposes": list(retention),
            "retention": retention,
            "retain_until": max(retention.values()),
            "path": path.relative_to(self.root).as_posix(),
            "sha256": digest,
            "seconds": round(call.buffer.kept_frames / rate, 3),
            "rolled_seconds": round(call.buffer.rolled_total / rate, 3),
            "lost_seconds": round(call.gap_frames / rate, 3),
            "status_flags": call.status_flags,
        }
        assert tuple(fields) == COMMITTED_FIELDS
        return fields

    def _retention(self, call: Call, ended: datetime) -> dict[str, str]:
        retention = {}
        for name in purposes(call, self.config.sampling.purpose):
            purpose = self.config.purpose(name)
            assert purpose is not None
            retention[name] = iso(ended + timedelta(days=purpose.retention_days))
        return retention

    def _sidecar_extra(self, call: Call, retention: dict[str, str]) -> dict[str, Any]:
        assert call.ended is not None
        rate = call.samplerate
        terms = {}
        for name, retain_until in retention.items():
            purpose = self.config.purpose(name)
            assert purpose is not None
            terms[name] = {
                "legal_basis": purpose.legal_basis,
                "retention_days": purpose.retention_days,
                "retain_until": retain_until,
            }
        return {
            "start": iso(call.started),
            "end": iso(call.ended),
            "samplerate": call.samplerate,
            "channels": len(call.line.channels),
            "device": call.line.device,
            "device_channels": list(call.line.channels),
            "format": "FLAC/PCM_16",
            "purpose_terms": terms,
            "marks": [
                {"purpose": m.purpose, "time": iso(m.time), "note": m.note} for m in call.marks
            ],
            "gaps": [
                {"at_seconds": round(at / rate, 3), "seconds": round(n / rate, 3)}
                for at, n in call.gaps
            ],
            "hindsight_version": __version__,
        }


def reasons(call: Call) -> list[str]:
    return [r for r, yes in (("sampled", call.sampled), ("marked", call.marked)) if yes]


def purposes(call: Call, sampling_purpose: str) -> list[str]:
    names = [sampling_purpose] if call.sampled else []
    return list(dict.fromkeys(names + call.mark_purposes))
