"""Recordings on disk: the durable write of a kept call's bytes, and their deletion.

Rules:

- ``Store`` runs in the worker process only: given a ``Keep`` (what the
  recording says, built in the daemon by ``hindsight.daemon.kept``) it reads
  the audio from the shared pool and writes the files; it never runs on the
  audio thread or in the control loop.
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
from pathlib import Path
from typing import Any, BinaryIO

import soundfile as sf

from hindsight.daemon.buffer import Int16Array
from hindsight.daemon.encode import FlacStream, pour, seal_text
from hindsight.daemon.kept import Keep
from hindsight.durable import fsync_dir, make_dirs
from hindsight.errors import StoreError
from hindsight.layout import (
    inside,
    landed,
    partials,
    recording_path,
    sidecar_path,
)
from hindsight.record import Committed

COPY_BLOCK = 1 << 20


Tick = Callable[[], None]


def _quiet() -> None:
    pass


class Sink(io.RawIOBase):
    """A temporary file that hashes what passes through it and lands atomically.

    A writable raw stream, so that an encoder or the age encryptor writes straight into it;
    ``tick`` is called on every write (the worker's heartbeat). A write that failed is
    remembered, and such a sink never lands: whoever wrote into it may have swallowed the
    error (pyrage 1.4 does, on the last write of a stream).
    """

    def __init__(self, final: Path) -> None:
        self.final = final
        make_dirs(final.parent)
        self.temp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
        # 0640 from the first instant (no window with the umask's mode), and exactly (fchmod:
        # a stricter umask must not take the auditors' group read).
        fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self._file: BinaryIO = os.fdopen(fd, "wb")  # closed in land/discard
        os.fchmod(fd, 0o640)
        self._hash = hashlib.sha256()
        self._failed: BaseException | None = None

    tick: Tick = staticmethod(_quiet)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            self._file.write(data)
        except BaseException as exc:
            self._failed = exc
            raise
        self._hash.update(data)
        self.tick()
        return len(data)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def land(self) -> Path:
        """fsync, then give the file its final name, never replacing one (link fails on an
        existing name, and a redo removes its call's earlier files first); fsync the folder."""
        if self._failed is not None:
            raise OSError(f"a write into the recording failed: {self._failed}")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.link(self.temp, self.final)
        os.unlink(self.temp)
        fsync_dir(self.final.parent)
        return self.final

    def discard(self) -> None:
        try:
            self._file.close()  # flushes what it buffered, which may fail again: a full disk
        except OSError:
            pass
        finally:
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
        sidecar = dict(committed.to_log(), **sealed_notes(keep.extra, keep.recipients))
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


def sealed_notes(extra: dict[str, Any], recipients: tuple[str, ...]) -> dict[str, Any]:
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
