"""The call table: which call is live on which line, and each call's state.

Rules:

- The table is the only state that the audio thread, the control loop and the
  keeper share. Its lock is held for a few microseconds at a time and never
  across I/O; nothing in this module does I/O.
- ``feed`` runs on the audio thread. It copies a device's block into the live
  calls of that device's lines and drops the audio of idle lines at once.
- The sampling draw happens at ``start``: the HMAC of the call id under the current
  sampling epoch's secret seed (``hindsight.daemon.epochs``). Its result lives in
  ``Call.sampled`` and is never part of any reply.
- A dry pool takes a chunk from the longest live call, unkept calls before kept
  ones. "Longest" is read from a ranking by the audio a call's chunks can span,
  moved only when a call gains or loses a chunk, so choosing costs O(1) and
  never a scan of the table.
- ``status`` copies a few scalars per line under the lock and builds its rows
  after letting go, so neither audio thread waits on the formatting.
- A call that hangs up (``end``) lingers for ``marking.grace_seconds``: a
  ``mark`` may still keep it, named by its id or as the line's last ended
  call. It is no longer live (not in ``status``, fed nothing, never a dry
  pool's victim) but holds its chunks until the keeper ``close``s it, which
  it does only after the grace, and never while a mark on it is being logged
  (``claim``): every mark is in the commit log before the call's outcome.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from hindsight.clock import utcnow
from hindsight.config import Config, LineConfig
from hindsight.daemon.buffer import CallBuffer, Int16Array, Pool
from hindsight.errors import ProtocolError
from hindsight.replies import LineStatus


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
    ended: datetime | None = None
    marks: list[MarkEvent] = field(default_factory=list)
    announced: tuple[str, ...] = ()  # purposes the caller was told of; none: never buffered
    caller_ref: str | None = None  # the caller's keyed pseudonym; the number is never kept
    status_flags: int = 0  # blocks PortAudio flagged (overflow and the like)
    gap_frames: int = 0  # frames a failed device did not deliver (silence in the file)
    gaps: list[list[int]] = field(default_factory=list)  # [first frame, frames] of each gap
    paused: bool = False  # on hold, a card payment: silence instead of audio
    pauses: list[list[int]] = field(default_factory=list)  # [first frame, frames] of each
    ended_at: float | None = None  # time.monotonic() at its end
    grace: float = 0.0  # seconds after its end that a mark may still keep it
    claims: int = 0  # marks on their way to the log: the keeper does not take it meanwhile
    epoch: int | None = None  # the sampling epoch whose seed drew it
    # The sampling purpose when it started: a reload may change the config's, not the call's.
    sampling_purpose: str = ""

    @property
    def buffered(self) -> bool:
        """A call the caller was told nothing of never has its audio in memory."""
        return bool(self.announced)

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


def _never(_: str) -> bool:
    return False


def new_call_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


NIL = -1  # no slot; also "not ranked"

# What ``status`` copies under the lock for a live line:
# call id, total frames, marked, status flags, gap frames, sample rate.
LineSnapshot = tuple[str, int, bool, int, int, int]


class Ranking:
    """Slots in buckets by a small integer rank: the highest in amortised O(1), no allocation.

    Each bucket is a doubly linked list threaded through per-slot arrays made
    once, oldest arrival first. ``highest`` walks down from the highest rank
    reached so far; every step down was paid for by a step up in ``place``.
    """

    def __init__(self, slots: int, ranks: int) -> None:
        self._rank = [NIL] * slots
        self._prev = [NIL] * slots
        self._next = [NIL] * slots
        self._head = [NIL] * ranks
        self._tail = [NIL] * ranks
        self._top = 0

    def place(self, slot: int, rank: int) -> None:
        """Put ``slot`` at ``rank`` as its newest arrival."""
        self.remove(slot)
        tail = self._tail[rank]
        self._prev[slot], self._next[slot] = tail, NIL
        if tail == NIL:
            self._head[rank] = slot
        else:
            self._next[tail] = slot
        self._tail[rank] = slot
        self._rank[slot] = rank
        if rank > self._top:
            self._top = rank

    def remove(self, slot: int) -> None:
        rank = self._rank[slot]
        if rank == NIL:
            return
        prev, after = self._prev[slot], self._next[slot]
        if prev == NIL:
            self._head[rank] = after
        else:
            self._next[prev] = after
        if after == NIL:
            self._tail[rank] = prev
        else:
            self._prev[after] = prev
        self._rank[slot] = NIL

    def highest(self) -> int:
        """The slot that reached the highest occupied rank first, or NIL."""
        while self._top > 0 and self._head[self._top] == NIL:
            self._top -= 1
        return self._head[self._top]


class CallTable:
    def __init__(
        self,
        config: Config,
        pool: Pool,
        known: Callable[[str], bool] | None = None,
        draw: Callable[[str], tuple[int | None, bool]] | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.lock = threading.Lock()
        # Was this id used already? The commit log's index, which learns each new id when its
        # call_started is appended, right after ``start`` returns; never asked under ``lock``
        # (the audio thread takes that one). Without a log (tests), every id is new.
        self._known = known if known is not None else _never
        # A call id's sampling epoch and draw; the daemon's is its Sampler's (hindsight.daemon.
        # epochs), the default (for tests) a draw from secrets outside any epoch.
        self._draw = draw or (lambda _: (None, draw_sample(self.config.sampling.one_in)))
        self._max_frames = round(config.buffer.max_call_seconds * config.audio.samplerate)
        self.pool_steals = 0  # chunks taken from live calls because the pool ran dry
        self.dropped_frames = 0  # frames no chunk at all could hold
        self._slots: list[Call | None] = []
        # Per line name, the calls that hung up and may still be marked, oldest first; each
        # leaves when the keeper closes it, after its grace.
        self._lingering: dict[str, list[Call]] = {}
        self._set_lines(config)

    def _set_lines(self, config: Config) -> None:
        """Slots, routes and rankings for ``config``'s lines; a live call keeps its line's
        place by name (the caller holds the lock, or nobody else runs yet)."""
        live = {call.line.name: call for call in self._slots if call is not None}
        self._lines = config.lines
        self._slot_of = {line.name: i for i, line in enumerate(config.lines)}
        self._slots = [live.get(line.name) for line in config.lines]
        self._routes = {
            device.name: tuple(
                Route(i, columns_for(line.channels))
                for i, line in enumerate(config.lines)
                if line.device == device.name
            )
            for device in config.audio.devices
        }
        widest = max(len(line.channels) for line in config.lines)
        self._silence: Int16Array = np.zeros((config.audio.blocksize, widest), dtype=np.int16)
        self._init_ranking(min(len(line.channels) for line in config.lines), widest)
        for slot, call in enumerate(self._slots):
            if call is not None:
                self._rank(slot, call)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: lines added, changed or removed, sampling and the rest.

        Every live call's line must be in ``config`` unchanged (``reload.refusals`` sees to
        it): its audio keeps flowing into the same call, whatever its line's new place.
        """
        with self.lock:
            live = [call.line.name for call in self._slots if call is not None]
            assert all(config.line(name) is not None for name in live)
            self.config = config
            self._set_lines(config)

    def live_count(self) -> int:
        with self.lock:
            return sum(call is not None for call in self._slots)

    def live_calls(self) -> list[Call]:
        with self.lock:
            return [call for call in self._slots if call is not None]

    def _init_ranking(self, narrowest: int, widest: int) -> None:
        """Rankings of the calls a dry pool may take from (see ``_rank``)."""
        # Ranks count the audio a call's chunks span in chunks of the widest line,
        # so that calls of any width compare. No call outgrows the pool or its
        # own limit (a chunk more than max_frames needs, plus a partial one).
        self._unit = self.pool.chunk_samples // widest
        span = self.pool.chunk_samples // narrowest
        self._top_rank = min(self.pool.size * span, self._max_frames + 2 * span) // self._unit
        self._unkept = Ranking(len(self._slots), self._top_rank + 1)
        self._kept = Ranking(len(self._slots), self._top_rank + 1)
        self._ranked_chunks = [0] * len(self._slots)  # each slot's chunks when last ranked

    # -- control loop -------------------------------------------------------

    def start(
        self,
        line: str,
        call_id: str | None,
        agent: str | None,
        announced: tuple[str, ...] | None = None,
    ) -> Call:
        """A call begins; ``announced`` (else the line's list) names what the caller was told."""
        slot = self._slot(line)
        config = self._lines[slot]
        # The id first: the sampling draw is of the call id.
        call = self._new_call(
            config, call_id or self._fresh_id(), agent, _announced(config, announced)
        )
        if self._known(call.call_id):
            raise ProtocolError("bad_request", f"call id {call.call_id} was already used")
        with self.lock:
            if self._slots[slot] is not None:
                raise ProtocolError("call_active", f"line {line} already has a live call")
            self._slots[slot] = call
        return call

    def pause(self, line: str) -> Call:
        """From now on the call gets silence instead of audio (on hold, a card payment)."""
        return self._set_paused(line, True)

    def resume(self, line: str) -> Call:
        return self._set_paused(line, False)

    def _set_paused(self, line: str, paused: bool) -> Call:
        slot = self._slot(line)
        with self.lock:
            call = self._slots[slot]
            if call is None:
                raise ProtocolError("no_call", f"line {line} has no live call")
            if call.paused == paused:
                state = "paused" if paused else "not paused"
                raise ProtocolError("not_allowed", f"the call on line {line} is {state} already")
            call.paused = paused
        return call

    def end(self, line: str, *, linger: bool = False) -> Call:
        """The call on ``line`` ends. ``linger`` (a hang-up): for ``marking.grace_seconds`` a
        ``mark`` may still keep it. A call ended by a shutdown, or refused at its start, never
        lingers."""
        slot = self._slot(line)
        ended, ended_at = utcnow(), time.monotonic()
        with self.lock:
            call = self._slots[slot]
            if call is None:
                raise ProtocolError("no_call", f"line {line} has no live call")
            self._slots[slot] = None
            self._unrank(slot)  # an ended call's chunks are the worker's now, never a victim's
            call.ended, call.ended_at = ended, ended_at
            grace = self.config.marking.grace_seconds if linger else 0.0
            if grace > 0:
                call.grace = grace
                self._lingering.setdefault(call.line.name, []).append(call)
        return call

    def mark(self, line: str, purpose: str, note: str | None, call_id: str | None = None) -> Call:
        """Keep the whole call for ``purpose``: the record key (see ``claim``)."""
        call = self.claim(line, call_id)
        self.add_mark(call, purpose, note)
        return call

    def claim(self, line: str, call_id: str | None = None) -> Call:
        """The call a ``mark`` on ``line`` means, held until ``add_mark`` or ``unclaim``.

        Without ``call_id``: the live call, else the call that ended last on the line
        within its grace. With it: that call, live on the line or ended there within its
        grace. Anything else is ``no_call``. The keeper does not take a claimed call, so
        that a mark is logged before the call's outcome.
        """
        slot = self._slot(line)
        now = time.monotonic()
        with self.lock:
            live = self._slots[slot]
            if live is not None and call_id in (None, live.call_id):
                call = live
            else:
                found = self._lingering_call(line, call_id, now)
                if found is None:
                    raise ProtocolError("no_call", self._no_call(line, call_id))
                call = found
            call.claims += 1
        return call

    def add_mark(self, call: Call, purpose: str, note: str | None) -> None:
        """Mark a claimed call, and let go of it."""
        mark = MarkEvent(purpose, utcnow(), note)
        with self.lock:
            was_kept = call.kept
            call.marks.append(mark)
            call.claims -= 1
            slot = self._slot_of.get(call.line.name)
            if not was_kept and slot is not None and self._slots[slot] is call:
                self._unrank(slot)  # a live call moves behind every unkept one
                self._rank(slot, call)

    def unclaim(self, call: Call) -> None:
        """Let go of a claimed call without marking it (the mark was refused, or not logged)."""
        with self.lock:
            call.claims -= 1

    def close(self, call: Call) -> bool:
        """The keeper takes an ended call: from now on no mark reaches it. False while a mark
        on it is being logged; the keeper then tries again a moment later."""
        with self.lock:
            if call.claims:
                return False
            name = call.line.name
            lingering = [c for c in self._lingering.get(name, ()) if c is not call]
            if lingering:
                self._lingering[name] = lingering
            else:
                self._lingering.pop(name, None)
        return True

    def _lingering_call(self, line: str, call_id: str | None, now: float) -> Call | None:
        """The newest call that ended on ``line`` within its grace (with ``call_id``, if given)."""
        for call in reversed(self._lingering.get(line, ())):
            assert call.ended_at is not None
            if now - call.ended_at <= call.grace and call_id in (None, call.call_id):
                return call
        return None

    def _no_call(self, line: str, call_id: str | None) -> str:
        grace = self.config.marking.grace_seconds
        if call_id is not None:
            return f"call {call_id} is not live on line {line}, nor ended there within the grace"
        if grace > 0:
            return f"line {line} has no live call, nor one that ended in the last {grace:g} s"
        return f"line {line} has no live call"

    def end_all(self) -> list[Call]:
        return [self.end(line.name) for line in self._lines if self.live_call(line.name)]

    def live_call(self, line: str) -> Call | None:
        return self._slots[self._slot(line)]

    def status(self) -> list[LineStatus]:
        with self.lock:
            # Scalars only: both audio threads wait while this lock is held.
            seen = [
                None
                if c is None
                else (
                    c.call_id,
                    c.buffer.total_frames,
                    bool(c.marks),
                    c.status_flags,
                    c.gap_frames,
                    c.samplerate,
                )
                for c in self._slots
            ]
        return [self._line_status(line, s) for line, s in zip(self._lines, seen, strict=True)]

    def detach(self, call: Call) -> list[int]:
        """Take an ended call's chunks off it, audio still in them, for the worker to zero."""
        with self.lock:
            return call.buffer.detach()

    def give_back(self, indices: list[int]) -> None:
        """Return chunks that were zeroed (by the worker) to the pool."""
        with self.lock:
            self.pool.give_back(indices)

    def zero_and_give_back(self, indices: list[int]) -> None:
        """Zero chunks here and return them: for when no worker can (shutdown, a refused start).

        The zeroing runs outside the lock, chunk by chunk, so it never stalls the audio thread.
        """
        for index in indices:
            self.pool.zero(index)
        self.give_back(indices)

    def release(self, call: Call) -> None:
        """Zero an ended call's audio here and return its chunks to the pool."""
        self.zero_and_give_back(self.detach(call))

    def _slot(self, line: str) -> int:
        slot = self._slot_of.get(line)
        if slot is None:
            raise ProtocolError("unknown_line", f"unknown line {line}")
        return slot

    def _fresh_id(self) -> str:
        call_id = new_call_id(utcnow())
        while self._known(call_id):
            call_id = new_call_id(utcnow())
        return call_id

    def _new_call(
        self, line: LineConfig, call_id: str, agent: str | None, announced: tuple[str, ...]
    ) -> Call:
        buffer = CallBuffer(self.pool, len(line.channels), self._max_frames)
        rate = self.config.audio.samplerate
        # Drawn for every call, announced or not, so that nothing about the draw varies;
        # it counts only when the caller was told of the sampling purpose.
        epoch, picked = self._draw(call_id)
        purpose = self.config.sampling.purpose
        drawn = picked and purpose in announced
        call = Call(call_id, line, agent, utcnow(), drawn, buffer, rate, announced=announced)
        call.epoch, call.sampling_purpose = epoch, purpose
        return call

    @staticmethod
    def _line_status(line: LineConfig, seen: LineSnapshot | None) -> LineStatus:
        if seen is None:
            return LineStatus(line.name, None, 0.0, False, line.device)
        call_id, frames, marked, flags, gap_frames, rate = seen
        seconds, lost = round(frames / rate, 3), round(gap_frames / rate, 3)
        return LineStatus(line.name, call_id, seconds, marked, line.device, flags, lost)

    # -- audio thread -------------------------------------------------------

    def feed(self, device: str, block: Int16Array, flagged: bool) -> None:
        """Copy ``block`` (frames x device channels) into the live calls of ``device``'s lines."""
        with self.lock:
            for route in self._routes[device]:
                call = self._slots[route.slot]
                if call is None or not call.buffered:
                    continue
                if call.paused:
                    _note_run(call.pauses, call.buffer.total_frames, len(block))
                    self._append_silence(route.slot, call, len(block))
                else:
                    self._append(route.slot, call, block, route.columns)
                call.status_flags += flagged

    def fill_silence(self, device: str, frames: int) -> None:
        """Extend the live calls of ``device``'s lines by ``frames`` of silence: audio was lost."""
        with self.lock:
            for route in self._routes[device]:
                call = self._slots[route.slot]
                if call is not None and call.buffered:
                    _note_run(call.gaps, call.buffer.total_frames, frames)
                    call.gap_frames += frames
                    self._append_silence(route.slot, call, frames)

    def _append(
        self, slot: int, call: Call, block: Int16Array, columns: slice | tuple[int, ...]
    ) -> None:
        written = call.buffer.write(block, columns)
        while written < len(block):
            if not self._relieve(slot, call):
                self.dropped_frames += len(block) - written
                call.buffer.skip(len(block) - written)
                break
            written += call.buffer.write(block[written:], columns)
        if call.buffer.chunks != self._ranked_chunks[slot]:
            self._rank(slot, call)  # it took a chunk from the free list

    def _append_silence(self, slot: int, call: Call, frames: int) -> None:
        while frames > 0:
            n = min(frames, len(self._silence))
            self._append(slot, call, self._silence[:n], slice(0, call.buffer.channels))
            frames -= n

    def _relieve(self, slot: int, requester: Call) -> bool:
        """The pool is dry: roll the longest live call (unkept first) to free a chunk."""
        if requester.buffer.chunks != self._ranked_chunks[slot]:
            self._rank(slot, requester)  # it took chunks from the free list in this block
        victim_slot = self._victim()
        if victim_slot == NIL:
            if not requester.buffer.chunks:
                return False
            victim_slot = slot  # the only call holding audio rolls its own
        self.pool_steals += 1
        if victim_slot == slot:
            requester.buffer.roll_own()
            self._rank(slot, requester)  # its newest chunk is empty again: last of its rank
            return True
        victim = self._slots[victim_slot]
        assert victim is not None
        index = victim.buffer.surrender_oldest()
        assert index is not None
        self._rank(victim_slot, victim)
        requester.buffer.adopt(index)
        self._rank(slot, requester)
        return True

    def _victim(self) -> int:
        """The slot of the longest live call holding two chunks or more, unkept first; or NIL."""
        for ranking in (self._unkept, self._kept):
            slot = ranking.highest()
            if slot != NIL:
                return slot
        return NIL

    def _rank(self, slot: int, call: Call) -> None:
        """Rank ``call``, last of its rank: when it gains or loses a chunk, or rolls its own.

        The rank is the audio its chunks can span, not ``held_frames`` (which
        changes on every block): it tells the longest call within one chunk.
        Among calls of one rank the first to get there goes first: lines are fed
        alike, so it has written the most into its newest chunk. (A call rolling
        at ``max_call_seconds`` inside ``CallBuffer.write`` keeps its place.)
        """
        chunks = call.buffer.chunks
        self._ranked_chunks[slot] = chunks
        ranking = self._kept if call.kept else self._unkept
        if chunks < 2:
            ranking.remove(slot)  # a call keeps its last chunk: it rolls its own instead
            return
        rank = chunks * call.buffer.chunk_frames // self._unit
        ranking.place(slot, min(rank, self._top_rank))

    def _unrank(self, slot: int) -> None:
        self._unkept.remove(slot)
        self._kept.remove(slot)
        self._ranked_chunks[slot] = 0


def _announced(line: LineConfig, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The start request's list wins over the line's."""
    return line.announced if given is None else given


def _note_run(runs: list[list[int]], at: int, frames: int) -> None:
    """Add ``frames`` at frame ``at`` to ``runs`` ([first frame, frames]), merging with the last
    run when it ends there (the same outage or pause, one block later). No allocation then."""
    last = runs[-1] if runs else None
    if last is not None and last[0] + last[1] == at:
        last[1] += frames
    else:
        runs.append([at, frames])
