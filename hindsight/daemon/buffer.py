"""The chunk pool and the per-call buffers built from it.

Rules:

- All audio memory is one numpy array, made once with the pool: private
  memory in unit tests, the shared mapping of ``memory.PoolMemory`` in the
  daemon (which the worker process reads and zeroes in place). Nothing here
  allocates audio memory afterwards; the pool never grows.
- A chunk is a fixed number of int16 samples. A call with C channels views each
  of its chunks as ``(CHUNK_SAMPLES // C, C)`` frames, so lines of any width
  share the one pool.
- A chunk is zeroed whenever it leaves a call: before it returns to the free
  list and when another call takes it over. Audio never survives its call.
- These classes do no locking; the call table serialises access to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CHUNK_SAMPLES = 32768  # 64 KiB of int16: ~1 s of 16 kHz stereo; small enough to roll finely
Int16Array = npt.NDArray[np.int16]
Extent = tuple[int, int, int]  # chunk index, first frame, end frame (frames of the call's width)


def chunk_count(memory_mb: int, chunk_samples: int = CHUNK_SAMPLES) -> int:
    return max(1, memory_mb * 1024 * 1024 // (chunk_samples * 2))


def chunk_frames(index: int, begin: int, end: int, pool: Int16Array, channels: int) -> Int16Array:
    """Frames ``begin:end`` of chunk ``index`` of ``pool`` viewed with ``channels`` per frame."""
    frames = pool.shape[1] // channels
    chunk: Int16Array = pool[index][: frames * channels].reshape(frames, channels)
    return chunk[begin:end]


class Pool:
    """Fixed, equal chunks: ``acquire`` hands one out; ``zero`` and ``give_back`` return it."""

    def __init__(
        self, memory_mb: int, chunk_samples: int = CHUNK_SAMPLES, data: Int16Array | None = None
    ) -> None:
        count = chunk_count(memory_mb, chunk_samples)
        if data is None:
            # np.zeros maps zero pages lazily; memory is committed as calls write into it.
            data = np.zeros((count, chunk_samples), dtype=np.int16)
        assert data.shape == (count, chunk_samples), data.shape
        self.data: Int16Array = data
        self.chunk_samples = chunk_samples
        self._free = list(range(count - 1, -1, -1))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> int | None:
        return self._free.pop() if self._free else None

    def zero(self, index: int) -> None:
        """Zero a chunk that no call holds; needs no lock, so it never stalls the audio path."""
        self.data[index].fill(0)

    def give_back(self, indices: list[int]) -> None:
        """Return zeroed chunks to the free list."""
        self._free.extend(indices)


@dataclass
class Segment:
    """One chunk held by a call: ``frames`` views it, ``start`` is the first valid frame."""

    index: int
    frames: Int16Array
    start: int = 0


class CallBuffer:
    """The audio of one call: a list of chunks, oldest first, rolling past ``max_frames``.

    ``write`` runs on the audio thread: it copies with plain slices into the
    current chunk and takes a new chunk only when that one is full.
    """

    def __init__(self, pool: Pool, channels: int, max_frames: int) -> None:
        self.pool = pool
        self.channels = channels
        self.chunk_frames = pool.chunk_samples // channels
        self.max_frames = max_frames
        # One chunk more than max_frames needs, so that trimming to exactly
        # max_frames at the end is always possible; rolling stays sample-exact.
        self.max_chunks = -(-max_frames // self.chunk_frames) + 1
        self.segments: list[Segment] = []
        self.pos = self.chunk_frames  # write position in the last segment; "full" = none yet
        self.total_frames = 0  # every frame ever written, rolled or not
        self.rolled_frames = 0  # frames lost to rolling (own limit or a dry pool)

    @property
    def held_frames(self) -> int:
        return self.total_frames - self.rolled_frames

    @property
    def chunks(self) -> int:
        return len(self.segments)

    def write(self, block: Int16Array, columns: slice | tuple[int, ...]) -> int:
        """Append ``block[:, columns]``; return the frames written, fewer when the pool ran dry."""
        frames = len(block)
        done = 0
        while done < frames:
            if self.pos == self.chunk_frames and not self._next_chunk():
                break
            n = min(frames - done, self.chunk_frames - self.pos)
            self._copy(block, done, n, columns)
            self.pos += n
            done += n
        self.total_frames += done
        return done

    def skip(self, frames: int) -> None:
        """Count ``frames`` that no chunk could hold as rolled away."""
        self.total_frames += frames
        self.rolled_frames += frames

    def _copy(self, block: Int16Array, at: int, n: int, columns: slice | tuple[int, ...]) -> None:
        dst = self.segments[-1].frames
        if isinstance(columns, slice):
            dst[self.pos : self.pos + n] = block[at : at + n, columns]
        else:
            # Scattered channels: one plain-slice copy per channel; fancy
            # indexing would allocate a temporary array on the audio thread.
            for j, column in enumerate(columns):
                dst[self.pos : self.pos + n, j] = block[at : at + n, column]

    def _next_chunk(self) -> bool:
        if len(self.segments) >= self.max_chunks:
            self.roll_own()
            return True
        index = self.pool.acquire()
        if index is None:
            return False
        self.adopt(index)
        return True

    def adopt(self, index: int) -> None:
        """Make chunk ``index`` (already zeroed) the new write chunk."""
        flat = self.pool.data[index]
        frames = flat[: self.chunk_frames * self.channels].reshape(self.chunk_frames, self.channels)
        self.segments.append(Segment(index, frames))
        self.pos = 0

    def _drop_oldest(self) -> Segment:
        """Take the oldest chunk off the call, counting its audio as rolled away."""
        oldest = self.segments.pop(0)
        self.rolled_frames += self.chunk_frames - oldest.start
        oldest.start = 0
        return oldest

    def roll_own(self) -> None:
        """Reuse the oldest chunk as the newest: the call rolls."""
        self.segments.append(self._drop_oldest())
        self.pos = 0

    def surrender_oldest(self) -> int | None:
        """Give up the oldest chunk (zeroed) for another call; None when only one is held."""
        if len(self.segments) < 2:
            return None
        index = self._drop_oldest().index
        self.pool.data[index].fill(0)
        return index

    @property
    def kept_frames(self) -> int:
        """Frames a recording holds: at most ``max_frames``, the newest ones."""
        return min(self.held_frames, self.max_frames)

    @property
    def rolled_total(self) -> int:
        """Frames rolled away, counting the trim down to exactly ``max_frames``."""
        return self.total_frames - self.kept_frames

    def extents(self) -> list[Extent]:
        """Where the kept audio lies, oldest first: (chunk, first frame, end frame) triples."""
        found = []
        skip = self.held_frames - self.kept_frames
        last = len(self.segments) - 1
        for i, segment in enumerate(self.segments):
            end = self.pos if i == last else self.chunk_frames
            begin = segment.start + skip
            skip = max(0, begin - end)
            if end > begin:
                found.append((segment.index, begin, end))
        return found

    def views(self) -> Iterator[Int16Array]:
        """The kept audio, oldest first, as views into the pool (no copies)."""
        for index, begin, end in self.extents():
            yield chunk_frames(index, begin, end, self.pool.data, self.channels)

    def detach(self) -> list[int]:
        """Let go of every chunk (still holding audio: the caller zeroes them)."""
        indices = [segment.index for segment in self.segments]
        self.segments.clear()
        self.pos = self.chunk_frames
        return indices
