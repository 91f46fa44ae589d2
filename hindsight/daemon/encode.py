"""From a call's audio to the bytes that land on disk: FLAC, streamed, then age, streamed.

Rules:

- Nothing is built whole in memory. ``FlacStream`` is a readable stream that
  encodes the next piece of audio only when its reader asks for more bytes, so
  what it holds at once is one piece's worth of FLAC. Its reader is either the
  age encryptor (``pyrage.encrypt_io``) or a plain copy; both write into the
  store's ``Sink``, so plaintext never touches the disk when there are
  recipients, and a 2-hour call is never held twice.
- libFLAC writes its STREAMINFO block first with the length unknown, then seeks
  back at the end to fill in the length, frame sizes and MD5. A stream cannot
  go back, so the header is held until it is whole, the total sample count
  (known before the first sample is encoded) is written into it, and it is let
  go; the rewrite at the end is checked to touch that header only, then
  dropped. The FLAC is valid: min/max frame size and the MD5 are "unknown" (0),
  which the format allows. Integrity is the SHA-256 of the stored file, logged.
- The daemon holds public keys only: a recording is encrypted to every
  recipient of its purposes (``Config.recipients``), with the age format's
  X25519 recipients, readable by the standard ``age`` tool.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyrage
import soundfile as sf

from hindsight.daemon.buffer import Int16Array

_MAGIC = b"fLaC"
_STREAMINFO = 0  # metadata block type
_TOTAL_AT = 4 + 4 + 10  # magic, block header, min/max block and frame sizes
_TOTAL_BITS = 36


class FlacError(RuntimeError):
    """libFLAC or libsndfile did something this stream cannot follow."""


class _Output:
    """The seekable file libsndfile believes it writes: a held header, then a queue of bytes
    not yet read, and a position that may go back into the header only."""

    def __init__(self, total_frames: int, samplerate: int, channels: int) -> None:
        self.total = total_frames
        self.format = (samplerate, channels)
        self.header: bytearray | None = bytearray()  # None once let go
        self.header_size = 0
        self.ready = bytearray()  # encoded, not yet read
        self.written = 0  # bytes let go (header included) + len(ready): the stream's end
        self.pos = 0

    # -- the virtual file libsndfile calls -----------------------------------

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.header is not None:
            self._write_header(data)
        elif self.pos < self.header_size:
            self._rewrite(data)
        elif self.pos == self.written:
            self.ready += data
            self.written += len(data)
        else:
            raise FlacError(f"libsndfile wrote at {self.pos}, past the header and before the end")
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self._end()}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:  # libsndfile never reads in write mode
        raise FlacError("libsndfile read back what it wrote")

    def _end(self) -> int:
        return len(self.header) if self.header is not None else self.written

    # -- the header ----------------------------------------------------------

    def _write_header(self, data: bytes) -> None:
        assert self.header is not None
        end = self.pos + len(data)
        if end > len(self.header):
            self.header.extend(bytes(end - len(self.header)))
        self.header[self.pos : end] = data
        size = _metadata_size(self.header)
        if size is not None:
            self._let_go(size)

    def _let_go(self, size: int) -> None:
        assert self.header is not None
        header, rest = self.header[:size], self.header[size:]
        _set_total(header, self.total)
        self.header, self.header_size = None, size
        self.ready += header + rest
        self.written = size + len(rest)

    def _rewrite(self, data: bytes) -> None:
        if self.pos + len(data) > self.header_size:
            raise FlacError("libFLAC rewrote more than its header")
        # The length, frame sizes and MD5 of the finished stream: dropped, see the rules.

    def finish(self) -> None:
        if self.header is not None and not self.header:
            # libsndfile writes nothing at all for a call without audio
            self.header = _empty_flac(*self.format)
        if self.header is not None:
            size = _metadata_size(self.header)
            if size is None:
                raise FlacError("libFLAC never finished its header")
            self._let_go(size)

    def take(self, size: int) -> bytes:
        out = bytes(self.ready[:size])
        del self.ready[:size]
        return out


def _metadata_size(header: bytearray) -> int | None:
    """Bytes of ``fLaC`` plus every metadata block, once the last one is whole; else None."""
    if len(header) < 4:
        return None
    if header[:4] != _MAGIC:
        raise FlacError("libsndfile's FLAC stream does not start with fLaC")
    at = 4
    while at + 4 <= len(header):
        last, length = header[at] & 0x80, int.from_bytes(header[at + 1 : at + 4], "big")
        at += 4 + length
        if last:
            return at if at <= len(header) else None
    return None


def _empty_flac(samplerate: int, channels: int) -> bytearray:
    """A FLAC stream of no samples: the magic and a STREAMINFO block, the last one."""
    fields = (samplerate << 44) | ((channels - 1) << 41) | ((16 - 1) << 36)  # 16 bits/sample
    info = (4096).to_bytes(2, "big") * 2 + bytes(6) + fields.to_bytes(8, "big") + bytes(16)
    return bytearray(_MAGIC + bytes([0x80 | _STREAMINFO]) + len(info).to_bytes(3, "big") + info)


def _set_total(header: bytearray, frames: int) -> None:
    if header[4] & 0x7F != _STREAMINFO:
        raise FlacError("the first metadata block is not STREAMINFO")
    if frames >= 1 << _TOTAL_BITS:
        frames = 0  # "unknown": longer than FLAC can say
    field = int.from_bytes(header[_TOTAL_AT : _TOTAL_AT + 8], "big")
    field = (field & ~((1 << _TOTAL_BITS) - 1)) | frames
    header[_TOTAL_AT : _TOTAL_AT + 8] = field.to_bytes(8, "big")


class FlacStream(io.RawIOBase):
    """The FLAC of ``views`` (``frames`` frames in all), encoded as it is read."""

    def __init__(
        self, views: Iterable[Int16Array], samplerate: int, channels: int, frames: int
    ) -> None:
        super().__init__()
        self._views: Iterator[Int16Array] = iter(views)
        self._out = _Output(frames, samplerate, channels)
        self._frames = frames
        self._seen = 0
        self._flac: sf.SoundFile | None = sf.SoundFile(
            self._out, "w", samplerate, channels, subtype="PCM_16", format="FLAC"
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while len(self._out.ready) < len(view) and self._flac is not None:
            self._encode_more()
        data = self._out.take(len(view))
        view[: len(data)] = data
        return len(data)

    def _encode_more(self) -> None:
        assert self._flac is not None
        piece = next(self._views, None)
        if piece is not None:
            self._seen += len(piece)
            self._flac.write(piece)
            return
        self._flac.close()  # the last frame, then libFLAC's rewrite of the header
        self._flac = None
        self._out.finish()
        if self._seen != self._frames:
            raise FlacError(f"expected {self._frames} frames, the audio had {self._seen}")

    def close(self) -> None:
        if self._flac is not None:
            self._flac.close()
            self._flac = None
        super().close()


def recipients(keys: Sequence[str]) -> list[pyrage.x25519.Recipient]:
    return [pyrage.x25519.Recipient.from_str(key) for key in keys]


def pour(source: io.RawIOBase, sink: io.RawIOBase, keys: Sequence[str], block: int) -> None:
    """Everything ``source`` gives into ``sink``: encrypted to ``keys`` when there are any."""
    if keys:
        try:
            pyrage.encrypt_io(source, sink, recipients(keys))
        except pyrage.EncryptError as exc:
            raise FlacError(f"cannot encrypt the recording: {exc}") from exc
        return
    buffer = bytearray(block)
    while n := source.readinto(buffer):
        sink.write(memoryview(buffer)[:n])


def seal_text(text: str, keys: Sequence[str]) -> str:
    """``text`` encrypted to ``keys``, ASCII-armored (``age -d`` opens it)."""
    sealed: bytes = pyrage.encrypt(text.encode("utf-8"), recipients(keys), armored=True)
    return sealed.decode("ascii")
