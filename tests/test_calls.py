from __future__ import annotations

import random
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hindsight.config import Config, parse_config
from hindsight.daemon import calls
from hindsight.daemon.buffer import Int16Array, Pool
from hindsight.daemon.calls import NIL, Call, CallTable, columns_for, draw_sample
from hindsight.errors import ProtocolError
from hindsight.replies import LineStatus

CHUNK = 64


def make_config(**sections: Any) -> Config:
    data: dict[str, Any] = {
        "audio": {"source": "synthetic", "channels": 4, "blocksize": 16},
        "lines": [{"name": "a", "channels": [1, 2]}, {"name": "b", "channels": [4, 3]}],
    }
    data.update(sections)
    return parse_config(data, Path("/tmp"))


def block(frames: int = 16, channels: int = 4, value: int = 0) -> Int16Array:
    base = np.arange(frames * channels, dtype=np.int16).reshape(frames, channels)
    return (base + value).astype(np.int16)


def table(chunks: int = 64, one_in_draw: bool = False, **sections: Any) -> CallTable:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    pool._free = pool._free[-chunks:]  # a smaller pool, still the real class
    return CallTable(make_config(**sections), pool, draw=lambda _: (None, one_in_draw))


def test_consecutive_channels_become_a_plain_slice() -> None:
    assert columns_for((1, 2)) == slice(0, 2)
    assert columns_for((3,)) == slice(2, 3)
    assert columns_for((4, 3)) == (3, 2)
    assert columns_for((1, 3)) == (0, 2)


def test_audio_of_an_idle_line_is_dropped() -> None:
    t = table()
    free = t.pool.free
    t.feed("default", block(), False)
    assert t.pool.free == free


def test_feed_routes_each_line_its_channels_in_config_order() -> None:
    t = table()
    a = t.start("a", None, None)
    b = t.start("b", None, None)
    data = block()
    t.feed("default", data, False)
    assert np.array_equal(next(a.buffer.views()), data[:, 0:2])
    assert np.array_equal(next(b.buffer.views()), data[:, [3, 2]])


def test_status_flags_are_counted_per_call() -> None:
    t = table()
    call = t.start("a", None, None)
    t.feed("default", block(), True)
    t.feed("default", block(), False)
    t.feed("default", block(), True)
    assert call.status_flags == 2
    assert t.status()[0].status_flags == 2


def test_fill_silence_keeps_the_timeline_and_counts_the_loss() -> None:
    t = table()
    call = t.start("a", None, None)
    t.feed("default", block(value=1), False)
    t.fill_silence("default", 40)
    t.feed("default", block(value=1), False)
    audio = np.concatenate(list(call.buffer.views()))
    assert len(audio) == 16 + 40 + 16
    assert not audio[16:56].any() and audio[:16].any() and audio[56:].any()
    assert call.gap_frames == 40


def test_start_end_mark_enforce_the_line_states() -> None:
    t = table()
    with pytest.raises(ProtocolError) as e:
        t.start("zz", None, None)
    assert e.value.code == "unknown_line"
    with pytest.raises(ProtocolError) as e:
        t.end("a")
    assert e.value.code == "no_call"
    t.start("a", "c1", "ann")
    with pytest.raises(ProtocolError) as e:
        t.start("a", None, None)
    assert e.value.code == "call_active"
    call = t.mark("a", "escalation", None)
    assert call.marked and call.kept
    t.mark("a", "escalation", "again")
    assert call.mark_purposes == ["escalation"] and len(call.marks) == 2
    assert t.end("a").call_id == "c1"


def test_a_dry_pool_rolls_the_longest_unkept_call_before_a_kept_one() -> None:
    t = table(chunks=8)
    kept = t.start("a", None, None)
    t.mark("a", "escalation", None)
    unkept = t.start("b", None, None)
    # Each call holds 32 frames (64 samples / 2 channels) per chunk: fill 8 chunks.
    for _ in range(8):
        t.feed("default", block(), False)
    assert t.pool.free == 0
    assert kept.buffer.held_frames == unkept.buffer.held_frames == 128
    t.feed("default", block(), False)
    # The kept call takes the unkept call's oldest chunk; the unkept call then rolls
    # its own oldest: two chunks of 32 stereo frames, both off the unkept call.
    assert t.pool_steals == 2
    assert unkept.buffer.rolled_total == 64
    assert kept.buffer.rolled_total == 0
    assert t.pool.free == 0


def test_a_dry_pool_rolls_the_longest_call_first() -> None:
    t = table(chunks=8)
    short = t.start("a", None, None)
    for _ in range(4):  # 64 frames: two chunks
        t.feed("default", block(), False)
    long = t.start("b", None, None)
    t.end("a")
    t.start("a", None, None)  # short: a fresh call while "b" grows
    for _ in range(8):
        t.feed("default", block(), False)
    assert t.pool.free == 0
    assert long.buffer.rolled_total > 0
    assert short.buffer.rolled_total == 0


def test_only_blocks_between_start_and_end_belong_to_the_call() -> None:
    t = table()
    t.feed("default", block(value=1), False)
    t.start("a", None, None)
    for n in range(3):
        t.feed("default", block(value=10 * (n + 2)), False)
    call = t.end("a")
    t.feed("default", block(value=99), False)
    audio = np.concatenate(list(call.buffer.views()))
    expected = np.concatenate([block(value=10 * (n + 2))[:, 0:2] for n in range(3)])
    assert np.array_equal(audio, expected)


def test_the_pool_never_grows_under_pressure() -> None:
    t = table(chunks=6)
    calls = [t.start("a", None, None), t.start("b", None, None)]
    for _ in range(200):
        t.feed("default", block(), False)
    held = sum(c.buffer.chunks for c in calls)
    assert held == 6 and t.pool.free == 0
    assert all(c.buffer.total_frames == 200 * 16 for c in calls)


def test_released_calls_return_zeroed_chunks() -> None:
    t = table(chunks=8)
    t.start("a", None, None)
    t.feed("default", block(value=5), False)
    call = t.end("a")
    indices = [s.index for s in call.buffer.segments]
    t.release(call)
    assert t.pool.free == 8
    assert not t.pool.data[indices].any()


def test_the_sampling_draw_is_one_in_n_from_a_cryptographic_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = sum(draw_sample(10) for _ in range(200_000))
    assert 19_000 < draws < 21_000  # 1/9 or 1/11 would land far outside
    asked: list[int] = []

    def randbelow(n: int) -> int:
        asked.append(n)
        return 0

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    assert draw_sample(7) and asked == [7]
    assert not any(draw_sample(0) for _ in range(1000))
    assert all(draw_sample(1) for _ in range(100))


def two_device_table() -> CallTable:
    config = parse_config(
        {
            "audio": {"source": "synthetic", "blocksize": 16},
            "devices": [
                {"name": "card", "channels": 4},
                {"name": "headset", "channels": 2},
            ],
            "lines": [
                {"name": "a", "channels": [3, 4], "device": "card"},
                {"name": "b", "channels": [1, 2], "device": "headset"},
            ],
        },
        Path("/tmp"),
    )
    return CallTable(config, Pool(memory_mb=1, chunk_samples=CHUNK), draw=lambda _: (None, False))


def test_each_device_feeds_only_its_own_lines() -> None:
    t = two_device_table()
    a = t.start("a", None, None)
    b = t.start("b", None, None)
    card = block(channels=4, value=100)
    t.feed("card", card, False)
    assert a.buffer.total_frames == 16 and b.buffer.total_frames == 0
    assert np.array_equal(next(a.buffer.views()), card[:, 2:4])
    t.feed("headset", block(channels=2), False)
    assert a.buffer.total_frames == 16 and b.buffer.total_frames == 16


def test_a_failed_device_silences_only_its_own_lines() -> None:
    t = two_device_table()
    a = t.start("a", None, None)
    b = t.start("b", None, None)
    t.fill_silence("headset", 800)
    t.fill_silence("headset", 200)
    t.feed("card", block(channels=4), False)
    assert b.gap_frames == 1000 and b.gaps == [[0, 1000]]
    assert a.gap_frames == 0 and a.buffer.total_frames == 16
    assert [s.lost_seconds for s in t.status()] == [0.0, round(1000 / 16000, 3)]


def feed(t: CallTable, blocks: int) -> None:
    for _ in range(blocks):
        t.feed("default", block(), False)


# Each stereo call below holds 32 frames (two 16-frame blocks) per chunk.


def test_a_dry_pool_takes_from_an_unkept_call_before_a_longer_kept_one() -> None:
    t = table(chunks=8)
    kept = t.start("a", None, None)
    t.mark("a", "escalation", None)
    feed(t, 4)
    unkept = t.start("b", None, None)
    feed(t, 5)  # kept: 5 chunks, unkept: 3; the pool is dry
    assert t.pool.free == 0
    feed(t, 2)  # both need a chunk: the kept one takes the unkept one's, which then rolls its own
    assert t.pool_steals == 2
    assert kept.buffer.rolled_total == 0 and kept.buffer.chunks == 6
    assert unkept.buffer.rolled_total == 64 and unkept.buffer.chunks == 2


def test_a_dry_pool_takes_from_the_longest_call_not_the_requester() -> None:
    t = table(chunks=6)
    long = t.start("a", None, None)
    feed(t, 4)
    short = t.start("b", None, None)
    feed(t, 4)  # long: 4 chunks, short: 2; the pool is dry
    assert t.pool.free == 0
    feed(t, 1)  # both need a chunk: the long call rolls its own, then gives one to the short
    assert t.pool_steals == 2
    assert long.buffer.rolled_total == 64 and long.buffer.chunks == 3
    assert short.buffer.rolled_total == 0 and short.buffer.chunks == 3


def test_a_lone_call_rolls_its_own_chunks_on_a_dry_pool() -> None:
    t = table(chunks=3)
    call = t.start("a", None, None)
    feed(t, 7)
    assert t.pool_steals == 1 and call.buffer.rolled_total == 32 and call.buffer.chunks == 3
    t = table(chunks=1)
    holder, starved = t.start("a", None, None), t.start("b", None, None)
    feed(t, 3)  # one chunk, no call with two: the holder rolls it, the other gets nothing
    assert holder.buffer.rolled_total == 32 and holder.buffer.chunks == 1
    assert starved.buffer.chunks == 0 and t.dropped_frames == 3 * 16


def test_a_mark_moves_a_call_behind_every_unkept_one() -> None:
    t = table(chunks=8)
    marked = t.start("a", None, None)
    feed(t, 4)
    other = t.start("b", None, None)
    feed(t, 5)  # marked: 5 chunks, other: 3; the pool is dry
    t.mark("a", "escalation", None)
    feed(t, 2)
    # Unmarked, the longer call would have rolled its own chunk.
    assert marked.buffer.rolled_total == 0 and marked.buffer.chunks == 6
    assert other.buffer.rolled_total == 64 and other.buffer.chunks == 2


def test_an_ended_call_is_no_longer_a_victim() -> None:
    t = table(chunks=6)
    ended = t.start("a", None, None)
    feed(t, 8)
    t.end("a")  # not released: its chunks stay with it until they are wiped
    other = t.start("b", None, None)
    feed(t, 6)
    assert ended.buffer.chunks == 4 and ended.buffer.rolled_total == 0
    assert other.buffer.rolled_total == 32 and other.buffer.chunks == 2


def test_a_new_call_on_the_line_of_an_ended_one_starts_unranked() -> None:
    t = table(chunks=5)
    ended = t.start("b", None, None)
    feed(t, 6)
    other = t.start("a", None, None)
    feed(t, 2)  # ended: 4 chunks, other: 1; the pool is dry
    t.end("b")
    fresh = t.start("b", None, None)
    feed(t, 1)  # "a" is fed first: it must not take from the fresh call, which holds nothing
    assert ended.buffer.chunks == 4 and ended.buffer.rolled_total == 0
    assert other.buffer.rolled_total == 32 and other.buffer.chunks == 1
    assert fresh.buffer.chunks == 0 and t.dropped_frames == 16


class CheckedTable(CallTable):
    """Checks every victim against a scan of the table: the rule the ranking must keep."""

    def _victim(self) -> int:
        slot = super()._victim()
        held = [c for c in self._slots if c is not None and c.buffer.chunks >= 2]
        if not held:
            assert slot == NIL
            return slot
        victim = self._slots[slot]
        assert victim is not None
        assert victim_key(victim) == max(victim_key(c) for c in held)
        return slot


def victim_key(call: Call) -> tuple[bool, int]:
    # The audio a call's chunks span, in chunks of the widest line (32 frames here).
    return not call.kept, call.buffer.chunks * call.buffer.chunk_frames // 32


def test_chunks_are_conserved_and_victims_follow_the_rule_under_random_traffic() -> None:
    rng = random.Random(20240611)
    lines = [
        {"name": "a", "channels": [1, 2]},
        {"name": "b", "channels": [3]},
        {"name": "c", "channels": [4]},
        {"name": "d", "channels": [2, 4]},
    ]
    config = make_config(lines=lines, buffer={"max_call_seconds": 0.04})
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    pool._free = pool._free[-20:]
    t = CheckedTable(config, pool, draw=lambda _: (None, rng.random() < 0.1))
    ended: list[Call] = []
    for _ in range(5000):
        step(t, rng, ended)
        held = sum(c.buffer.chunks for c in ended)
        held += sum(c.buffer.chunks for line in lines if (c := t.live_call(str(line["name"]))))
        assert pool.free + held == 20
    assert t.pool_steals > 500


def step(t: CallTable, rng: random.Random, ended: list[Call]) -> None:
    """One random thing that happens on a call floor."""
    line = rng.choice("abcd")
    live = t.live_call(line) is not None
    roll = rng.random()
    if roll < 0.6:
        t.feed("default", block(frames=rng.choice([1, 16, 40])), False)
    elif roll < 0.65:
        t.fill_silence("default", rng.randrange(1, 60))
    elif roll < 0.75 and not live:
        t.start(line, None, None)
    elif roll < 0.8 and live:
        t.mark(line, "escalation", None)
    elif roll < 0.9 and live:
        ended.append(t.end(line))
    elif ended:
        t.release(ended.pop(rng.randrange(len(ended))))


def test_status_rows_are_built_outside_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    t = table()
    t.start("a", None, None)
    t.mark("a", "escalation", None)
    t.feed("default", block(), True)
    t.fill_silence("default", 8)
    built: list[bool] = []

    def row(*fields: Any) -> LineStatus:
        built.append(t.lock.locked())
        return LineStatus(*fields)

    monkeypatch.setattr(calls, "LineStatus", row)
    a, b = t.status()
    assert built == [False, False]
    assert (a.seconds, a.marked, a.status_flags) == (round(24 / 16000, 3), True, 1)
    assert a.lost_seconds == round(8 / 16000, 3)
    assert b.call_id is None and b.seconds == 0.0
