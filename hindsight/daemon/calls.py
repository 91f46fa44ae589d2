"""The call table: which call is live on which line, and each call's state.

Rules:

- The table is the only state that the audio thread, the control loop and the
  committer share. Its lock is held for a few microseconds at a time and never
  across I/O; nothing in this module does I/O.
- ``feed`` runs on the audio thread. It copies a device's block into the live
  calls of that device's lines and drops the audio of idle lines at once.
- The sampling draw happens at ``start`` from ``secrets``. Its result lives in
  ``Call.sampled`` and is never part of any reply.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

import numpy as np

from hindsight.clock import utcnow
from hindsight.config import Config, LineConfig
from hindsight.daemon.buffer import CallBuffer, Int16Array, Pool
from hindsight.errors import ProtocolError


class CallState(Enum):
    LIVE = "live"
    ENDED = "ended"


@dataclass(frozen=True)
class MarkEvent:
    purpose: str
    time: datetime
    note: str | None


@dataclass
class Call:
    call_id: str
    line: LineConfig
    agent: str | None
    started: datetime
    sampled: bool
    buffer: CallBuffer
    samplerate: int
    state: CallState = CallState.LIVE
    ended: datetime | None = None
    marks: list[MarkEvent] = field(default_factory=list)
    status_flags: int = 0  # blocks PortAudio flagged (overflow and the like)
    gap_frames: int = 0  # frames a failed device did not deliver (silence in the file)
    gaps: list[list[int]] = field(default_factory=list)  # [first frame, frames] of each gap

    @property
    def marked(self) -> bool:
        return bool(self.marks)

    @property
    def kept(self) -> bool:
        return self.sampled or self.marked

    @property
    def mark_purposes(self) -> list[str]:
        return list(dict.fromkeys(mark.purpose for mark in self.marks))

    def seconds(self) -> float:
        return self.buffer.total_frames / self.samplerate


@dataclass(frozen=True)
class LineStatus:
    line: str
    device: str
    call_id: str | None
    seconds: float
    marked: bool
    status_flags: int
    lost_seconds: float


@dataclass(frozen=True)
class Route:
    """Where one device's block goes: a line's slot and its columns in the block."""

    slot: int
    columns: slice | tuple[int, ...]


def columns_for(channels: tuple[int, ...]) -> slice | tuple[int, ...]:
    """1-based device channels as block columns: a plain slice whenever they are consecutive."""
    first = channels[0] - 1
    if list(channels) == list(range(channels[0], channels[0] + len(channels))):
        return slice(first, first + len(channels))
    return tuple(c - 1 for c in channels)


def draw_sample(one_in: int) -> bool:
    return one_in > 0 and secrets.randbelow(one_in) == 0


def new_call_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


class CallTable:
    def __init__(
        self,
        config: Config,
        pool: Pool,
        known_ids: set[str] | None = None,
        draw: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.lock = threading.Lock()
        self._lines = config.lines
        self._slot_of = {line.name: i for i, line in enumerate(config.lines)}
        self._slots: list[Call | None] = [None] * len(config.lines)
        self._routes = {
            device.name: tuple(
                Route(i, columns_for(line.channels))
                for i, line in enumerate(config.lines)
                if line.device == device.name
            )
            for device in config.audio.devices
        }
        # Ids already used: the commit log's own set, which learns each new id
        # when its call_started is appended, right after ``start`` returns.
        self._known_ids = known_ids if known_ids is not None else set()
        self._draw = draw or (lambda: draw_sample(config.sampling.one_in))
        self._max_frames = round(config.buffer.max_call_seconds * config.audio.samplerate)
        widest = max(len(line.channels) for line in config.lines)
        self._silence: Int16Array = np.zeros((config.audio.blocksize, widest), dtype=np.int16)
        self.pool_steals = 0  # chunks taken from live calls because the pool ran dry
        self.dropped_frames = 0  # frames no chunk at all could hold

    # -- control loop -------------------------------------------------------

    def start(self, line: str, call_id: str | None, agent: str | None) -> Call:
        slot = self._slot(line)
        with self.lock:
            if self._slots[slot] is not None:
                raise ProtocolError("call_active", f"line {line} already has a live call")
            call_id = call_id or self._fresh_id()
            if call_id in self._known_ids:
                raise ProtocolError("bad_request", f"call id {call_id} was already used")
            call = self._new_call(self._lines[slot], call_id, agent)
            self._slots[slot] = call
        return call

    def end(self, line: str) -> Call:
        slot = self._slot(line)
        with self.lock:
            call = self._slots[slot]
            if call is None:
                raise ProtocolError("no_call", f"line {line} has no live call")
            self._slots[slot] = None
        call.state = CallState.ENDED
        call.ended = utcnow()
        return call

    def mark(self, line: str, purpose: str, note: str | None) -> Call:
        """Keep the whole call for ``purpose``: the record key."""
        slot = self._slot(line)
        with self.lock:
            call = self._slots[slot]
            if call is None:
                raise ProtocolError("no_call", f"line {line} has no live call")
            call.marks.append(MarkEvent(purpose, utcnow(), note))
        return call

    def end_all(self) -> list[Call]:
        return [self.end(line.name) for line in self._lines if self.live_call(line.name)]

    def live_call(self, line: str) -> Call | None:
        return self._slots[self._slot(line)]

    def status(self) -> list[LineStatus]:
        with self.lock:
            return [self._line_status(line, self._slots[i]) for i, line in enumerate(self._lines)]

    def release(self, call: Call) -> None:
        """Zero an ended call's audio and return its chunks to the pool.

        The zeroing runs outside the lock, chunk by chunk: an hour of audio
        takes tens of milliseconds to zero, which must stall neither the audio
        thread nor a reply (whose timing would tell a wiped call from a kept one).
        """
        with self.lock:
            indices = call.buffer.detach()
        for index in indices:
            self.pool.zero(index)
        with self.lock:
            self.pool.give_back(indices)

    def _slot(self, line: str) -> int:
        slot = self._slot_of.get(line)
        if slot is None:
            raise ProtocolError("unknown_line", f"unknown line {line}")
        return slot

    def _fresh_id(self) -> str:
        call_id = new_call_id(utcnow())
        while call_id in self._known_ids:
            call_id = new_call_id(utcnow())
        return call_id

    def _new_call(self, line: LineConfig, call_id: str, agent: str | None) -> Call:
        buffer = CallBuffer(self.pool, len(line.channels), self._max_frames)
        rate = self.config.audio.samplerate
        return Call(call_id, line, agent, utcnow(), self._draw(), buffer, rate)

    def _line_status(self, line: LineConfig, call: Call | None) -> LineStatus:
        if call is None:
            return LineStatus(line.name, line.device, None, 0.0, False, 0, 0.0)
        rate = call.samplerate
        return LineStatus(
            line.name,
            line.device,
            call.call_id,
            round(call.seconds(), 3),
            call.marked,
            call.status_flags,
            round(call.gap_frames / rate, 3),
        )

    # -- audio thread -------------------------------------------------------

    def feed(self, device: str, block: Int16Array, flagged: bool) -> None:
        """Copy ``block`` (frames x device channels) into the live calls of ``device``'s lines."""
        with self.lock:
            for route in self._routes[device]:
                call = self._slots[route.slot]
                if call is not None:
                    self._append(call, block, route.columns)
                    call.status_flags += flagged

    def fill_silence(self, device: str, frames: int) -> None:
        """Extend the live calls of ``device``'s lines by ``frames`` of silence: audio was lost."""
        with self.lock:
            for route in self._routes[device]:
                call = self._slots[route.slot]
                if call is not None:
                    self._note_gap(call, frames)
                    self._append_silence(call, frames)

    @staticmethod
    def _note_gap(call: Call, frames: int) -> None:
        at = call.buffer.total_frames
        last = call.gaps[-1] if call.gaps else None
        if last is not None and last[0] + last[1] == at:
            last[1] += frames  # the same outage, one supervisor tick later
        else:
            call.gaps.append([at, frames])
        call.gap_frames += frames

    def _append(self, call: Call, block: Int16Array, columns: slice | tuple[int, ...]) -> None:
        written = call.buffer.write(block, columns)
        while written < len(block):
            if not self._relieve(call):
                self.dropped_frames += len(block) - written
                call.buffer.skip(len(block) - written)
                return
            written += call.buffer.write(block[written:], columns)

    def _append_silence(self, call: Call, frames: int) -> None:
        while frames > 0:
            n = min(frames, len(self._silence))
            self._append(call, self._silence[:n], slice(0, call.buffer.channels))
            frames -= n

    def _relieve(self, requester: Call) -> bool:
        """The pool is dry: roll the longest live call (unkept first) to free a chunk."""
        candidates = [c for c in self._slots if c is not None and c.buffer.chunks >= 2]
        if not candidates:
            if requester.buffer.chunks:
                requester.buffer.roll_own()
                self.pool_steals += 1
                return True
            return False
        victim = max(candidates, key=lambda c: (not c.kept, c.buffer.held_frames))
        self.pool_steals += 1
        if victim is requester:
            requester.buffer.roll_own()
            return True
        index = victim.buffer.surrender_oldest()
        assert index is not None
        requester.buffer.adopt(index)
        return True
