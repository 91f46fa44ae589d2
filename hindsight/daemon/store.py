"""Recordings on disk: what a kept call's record says, and the durable write of its bytes.

Rules:

- Two halves. ``describe`` runs in the daemon: it turns an ended call into a
  ``Keep``, everything about the recording except its audio, path and hash:
  reasons, purposes, retention, and who may read it (its age recipients).
  ``Store`` runs in the worker process only: it reads the audio from the
  shared pool and writes the files; it never runs on the audio thread or in
  the control loop.
- What the bytes are is ``hindsight.daemon.encode``'s business (FLAC encoded
  as it is read, then age-encrypted as it is read); where and how they land is
  ``Sink``'s: a temp file in the target folder that hashes what it is given.
  Nothing is built whole in memory, and with recipients no plaintext
  recording touches the disk (``<call_id>.flac.age``; without, ``.flac``).
- Writing a call is idempotent, because a worker that died is replaced and
  its job redone: a recording that already landed whole (sidecar and file
  whose hash matches) is reported again, not written twice; the partial
  files of an earlier attempt are removed first.
- A file appears under its final name only whole: temp file, fsync, link to
  the final name (which never replaces an existing file), fsync the folder.
- The sidecar is readable metadata, written the same way; an agent's note in
  it is sealed to the recording's recipients (``note_age``), never plain. Only
  after both are durable does the worker report the call ``stored``, and the
  daemon append ``call_committed``.
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
from hindsight.daemon.encode import FlacStream, pour, seal_text
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
    recipients: tuple[str, ...]  # age recipients; none: a plain FLAC

    def to_wire(self) -> dict[str, Any]:
        return dict(vars(self), recipients=list(self.recipients))

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Keep:
        return cls(**dict(data, recipients=tuple(data["recipients"])))


class Sink(io.RawIOBase):
    """A temporary file that hashes what passes through it and lands atomically.

    A writable raw stream, so that an encoder or the age encryptor writes straight into it;
    ``tick`` is called on every write (the worker's heartbeat).
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        make_dirs(final.parent)
        self.temp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
        self._file: BinaryIO = open(self.temp, "xb")  # noqa: SIM115 - closed in land/discard
        os.chmod(self.temp, 0o640)
        self._hash = hashlib.sha256()

    tick: Tick = staticmethod(_quiet)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.tick()
        return len(data)

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


def write_durably(
    final: Path, fill: Callable[[Sink], object], tick: Tick = _quiet
) -> tuple[Path, str]:
    """Land at ``final`` durably what ``fill`` writes into a sink; return its path and hash."""
    sink = Sink(final)
    sink.tick = tick
    try:
        fill(sink)
        return sink.land(), sink.sha256
    except BaseException:
        sink.discard()
        raise


class Store:
    """Writes kept calls under ``state_dir``/recordings; the worker process's half."""

    def __init__(self, state_dir: Path, tick: Tick = _quiet) -> None:
        self.root = state_dir
        self.tick = tick  # called often during long work: the worker's heartbeat

    def keep(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Committed:
        """Write ``views`` (``frames`` frames) as a recording plus sidecar; return the fields
        of its ``call_committed``."""
        try:
            return self._keep(keep, views, frames)
        except (OSError, sf.LibsndfileError, RuntimeError) as exc:
            # No call id: the daemon's own log must not tell which calls are kept.
            raise StoreError(f"cannot write a recording: {exc}") from exc

    def _keep(self, keep: Keep, views: Iterable[Int16Array], frames: int) -> Committed:
        done = landed(self.root, keep.call_id, self.tick)
        if done is not None:
            return done
        for partial in partials(self.root, keep.call_id):
            partial.unlink()

        def fill(sink: Sink) -> None:
            flac = FlacStream(views, keep.samplerate, keep.channels, frames)
            with flac:
                pour(flac, sink, keep.recipients, COPY_BLOCK)

        final = recording_path(self.root, keep.folder, keep.call_id, bool(keep.recipients))
        path, digest = write_durably(final, fill, self.tick)
        fields = dict(keep.fields, path=path.relative_to(self.root).as_posix(), sha256=digest)
        committed = Committed.from_log(fields)
        sidecar = dict(committed.to_log(), **_sealed_notes(keep.extra, keep.recipients))
        text = json.dumps(sidecar, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        try:
            write_durably(sidecar_path(path, keep.call_id), lambda sink: sink.write(text.encode()))
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


def _sealed_notes(extra: dict[str, Any], recipients: tuple[str, ...]) -> dict[str, Any]:
    """The sidecar's fields with every mark's note sealed to ``recipients`` (``note_age``)."""
    if not recipients:
        return extra
    marks = []
    for mark in extra["marks"]:
        mark = dict(mark)
        note = mark.pop("note", None)
        if note is not None:
            mark["note_age"] = seal_text(note, recipients)
        marks.append(mark)
    return dict(extra, marks=marks)


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
    recipients = config.recipients(retention)
    folder = day_folder(call.started)
    return Keep(call.call_id, folder, rate, channels, fields, extra, recipients)


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
