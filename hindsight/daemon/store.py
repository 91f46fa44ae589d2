"""Recordings on disk: what a kept call's record says, FLAC encoding, and the durable write.

Rules:

- Two halves. ``describe`` runs in the daemon: it turns an ended call into a
  ``Keep``, everything about the recording except its audio, path and hash.
  ``Store`` runs in the worker process only: it reads the audio from the
  shared pool and writes the files; it never runs on the audio thread or in
  the control loop.
- Writing a call is idempotent, because a worker that died is replaced and
  its job redone: a recording that already landed whole (sidecar and file
  whose hash matches) is reported again, not written twice; the partial
  files of an earlier attempt are removed first.
- A call is encoded to FLAC in memory, chunk by chunk (libsndfile has crashed
  on one huge write), then streamed through ``Sink`` into a temporary file in
  the target folder. The sink is the seam where encryption will wrap the
  stream, so that plaintext never has to touch the disk.
- A file appears under its final name only whole: temp file, fsync, link to
  the final name (which never replaces an existing file), fsync the folder.
- The sidecar is written the same way, and only after both are durable does
  the worker report the call ``stored``, and the daemon append ``call_committed``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
from hindsight.layout import (
    day_folder,
    inside,
    landed,
    partials,
    recording_path,
    sidecar_path,
)
from hindsight.record import Committed
from hindsight.retention import Terms

COPY_BLOCK = 1 << 20


Tick = Callable[[], None]


def _quiet() -> None:
    pass


@dataclass(frozen=True)
class Keep:
    """A kept call as the worker needs it, all but the audio: built by ``describe``."""

    call_id: str
    folder: str  # YYYY/MM/DD under recordings/, from the call's start
    samplerate: int
    channels: int
    fields: dict[str, Any]  # call_committed's fields but path and sha256
    extra: dict[str, Any]  # what the sidecar holds beyond those

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Keep:
        return cls(**data)


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
        """fsync, then give the file its final name, never replacing one (link fails on an
        existing name, and a redo removes its call's earlier files first); fsync the folder."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.link(self.temp, self.final)
        os.unlink(self.temp)
        fsync_dir(self.final.parent)
        return self.final

    def discard(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


def write_durably(final: Path, data: bytes, tick: Tick = _quiet) -> tuple[Path, str]:
    """Write ``data`` to ``final`` durably; ``tick`` is called between blocks (a heartbeat)."""
    sink = Sink(final)
    try:
        for at in range(0, len(data), COPY_BLOCK):
            sink.write(data[at : at + COPY_BLOCK])
            tick()
        return sink.land(), sink.sha256
    except BaseException:
        sink.discard()
        raise


class Store:
    """Writes kept calls under ``state_dir``/recordings; the worker process's half."""

    def __init__(self, state_dir: Path, tick: Tick = _quiet) -> None:
        self.root = state_dir
        self.tick = tick  # called often during long work: the worker's heartbeat

    def keep(self, keep: Keep, views: Iterable[Int16Array]) -> Committed:
        """Write ``views`` as FLAC plus sidecar; return the fields of its ``call_committed``."""
        try:
            return self._keep(keep, views)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            # No call id: the daemon's own log must not tell which calls are kept.
            raise StoreError(f"cannot write a recording: {exc}") from exc

    def _keep(self, keep: Keep, views: Iterable[Int16Array]) -> Committed:
        done = landed(self.root, keep.call_id, self.tick)
        if done is not None:
            return done
        for partial in partials(self.root, keep.call_id):
            partial.unlink()
        flac = encode_flac(views, keep.samplerate, keep.channels)
        final = recording_path(self.root, keep.folder, keep.call_id)
        path, digest = write_durably(final, flac, self.tick)
        fields = dict(keep.fields, path=path.relative_to(self.root).as_posix(), sha256=digest)
        committed = Committed.from_log(fields)
        sidecar = dict(committed.to_log(), **keep.extra)
        text = json.dumps(sidecar, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        try:
            write_durably(sidecar_path(path, keep.call_id), text.encode("utf-8"))
        except BaseException:
            path.unlink(missing_ok=True)  # a retry writes both again, under the same name
            raise
        return committed

    def delete(self, call_id: str, relative: str) -> None:
        """Unlink a recording and its sidecar durably; what is gone already is fine (a redo)."""
        recording = inside(self.root, relative)
        if recording is None:
            raise StoreError(f"refusing to delete {relative!r}: not under recordings/")
        try:
            _unlink_all([recording, sidecar_path(recording, call_id)])
        except OSError as exc:
            raise StoreError(f"cannot delete a recording: {exc}") from exc


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
    if paths[0].parent.is_dir():
        fsync_dir(paths[0].parent)


def describe(call: Call, config: Config) -> Keep:
    """Everything a kept call's recording says but its audio, path and hash (daemon side)."""
    assert call.ended is not None
    retention = _retention(call, config)
    rate = call.samplerate
    ends = list(retention.values())
    fields = {
        "call_id": call.call_id,
        "line": call.line.name,
        "agent": call.agent,
        "reasons": reasons(call),
        "purposes": list(retention),
        "retention": retention,
        "retain_until": None if None in ends else max(e for e in ends if e is not None),
        "seconds": round(call.buffer.kept_frames / rate, 3),
        "rolled_seconds": round(call.buffer.rolled_total / rate, 3),
        "lost_seconds": round(call.gap_frames / rate, 3),
        "status_flags": call.status_flags,
        "ended": iso(call.ended),
        "caller_ref": call.caller_ref,
    }
    channels = len(call.line.channels)
    extra = _sidecar_extra(call, config, retention)
    return Keep(call.call_id, day_folder(call.started), rate, channels, fields, extra)


def _retention(call: Call, config: Config) -> dict[str, str | None]:
    assert call.ended is not None
    retention: dict[str, str | None] = {}
    for name in purposes(call, config.sampling.purpose):
        purpose = config.purpose(name)
        assert purpose is not None
        # The ledger's own rule, so that the log and the ledger can never disagree.
        until = Terms.of(purpose).first_retain_until(call.ended)
        retention[name] = None if until is None else iso(until)
    return retention


def _sidecar_extra(call: Call, config: Config, retention: dict[str, str | None]) -> dict[str, Any]:
    assert call.ended is not None
    rate = call.samplerate
    terms = {}
    for name, until in retention.items():
        purpose = config.purpose(name)
        assert purpose is not None
        terms[name] = {
            "legal_basis": purpose.legal_basis,
            "retention_days": purpose.retention_days,
            "until_resolved": purpose.until_resolved,
            "grace_days": purpose.grace_days,
            "max_retention_days": purpose.max_retention_days,
            "retain_until": until,
        }
    return {
        "start": iso(call.started),
        "end": iso(call.ended),
        "samplerate": call.samplerate,
        "channels": len(call.line.channels),
        "device": call.line.device,
        "device_channels": list(call.line.channels),
        "format": "FLAC/PCM_16",
        "announced": list(call.announced),
        "purpose_terms": terms,
        "marks": [{"purpose": m.purpose, "time": iso(m.time), "note": m.note} for m in call.marks],
        "gaps": _runs(call.gaps, rate),
        "pauses": _runs(call.pauses, rate),
        "hindsight_version": __version__,
    }


def _runs(runs: list[list[int]], rate: int) -> list[dict[str, float]]:
    return [{"at_seconds": round(at / rate, 3), "seconds": round(n / rate, 3)} for at, n in runs]


def reasons(call: Call) -> list[str]:
    return [r for r, yes in (("sampled", call.sampled), ("marked", call.marked)) if yes]


def purposes(call: Call, sampling_purpose: str) -> list[str]:
    names = [sampling_purpose] if call.sampled else []
    return list(dict.fromkeys(names + call.mark_purposes))
