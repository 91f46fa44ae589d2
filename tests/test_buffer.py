from __future__ import annotations

import numpy as np

from hindsight.daemon.buffer import CallBuffer, Int16Array, Pool

CHUNK = 64  # samples per chunk: tiny, so rolling happens within a few blocks


def ramp(start: int, frames: int, channels: int) -> Int16Array:
    """Frames numbered from ``start`` (mod 2**15), channel c offset by c * 1000."""
    n = (np.arange(start, start + frames) % 30000).astype(np.int16)
    return np.stack([n + c * 1000 for c in range(channels)], axis=1).astype(np.int16)


def collected(buffer: CallBuffer) -> Int16Array:
    return np.concatenate(list(buffer.views())) if buffer.chunks else np.zeros((0, 1), np.int16)


def test_pool_is_sized_from_memory_and_hands_out_each_chunk_once() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    assert pool.size == 1024 * 1024 // (CHUNK * 2)
    taken = {pool.acquire() for _ in range(pool.size)}
    assert len(taken) == pool.size
    assert pool.acquire() is None


def test_detached_chunks_go_back_zeroed() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=2, max_frames=10_000)
    buffer.write(ramp(1, 100, 2), slice(0, 2))
    used = buffer.detach()
    assert any(pool.data[i].any() for i in used)
    for index in used:
        pool.zero(index)
    pool.give_back(used)
    assert pool.free == pool.size
    assert not pool.data[used].any()
    assert buffer.chunks == 0


def test_blocks_spanning_chunks_are_kept_gap_free() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=2, max_frames=10_000)
    for start in range(0, 300, 7):
        buffer.write(ramp(start, 7, 2), slice(0, 2))
    assert np.array_equal(collected(buffer), ramp(0, 301, 2))
    assert buffer.total_frames == 301 and buffer.rolled_total == 0


def test_scattered_channels_are_copied_in_config_order() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=2, max_frames=10_000)
    block = ramp(0, 50, 4)
    buffer.write(block, (3, 0))
    got = collected(buffer)
    assert np.array_equal(got[:, 0], block[:, 3])
    assert np.array_equal(got[:, 1], block[:, 0])


def test_a_long_call_rolls_to_exactly_max_frames_of_its_newest_audio() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=1, max_frames=150)
    for start in range(0, 1000, 10):
        buffer.write(ramp(start, 10, 1), slice(0, 1))
    assert buffer.chunks <= buffer.max_chunks
    assert buffer.kept_frames == 150
    assert buffer.rolled_total == 850
    assert np.array_equal(collected(buffer), ramp(850, 150, 1))


def test_rolling_never_takes_more_chunks_than_its_limit() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=2, max_frames=100)
    for start in range(0, 5000, 32):
        buffer.write(ramp(start, 32, 2), slice(0, 2))
    assert pool.size - pool.free == buffer.max_chunks


def test_write_reports_short_when_the_pool_is_dry() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    while pool.acquire() is not None:
        pass
    buffer = CallBuffer(pool, channels=1, max_frames=10_000)
    assert buffer.write(ramp(0, 10, 1), slice(0, 1)) == 0
    assert buffer.total_frames == 0


def test_surrendered_chunk_is_zeroed_and_counted_as_rolled() -> None:
    pool = Pool(memory_mb=1, chunk_samples=CHUNK)
    buffer = CallBuffer(pool, channels=1, max_frames=10_000)
    buffer.write(ramp(1, 3 * CHUNK, 1), slice(0, 1))
    index = buffer.surrender_oldest()
    assert index is not None
    assert not pool.data[index].any()
    assert buffer.rolled_total == CHUNK
    assert np.array_equal(collected(buffer), ramp(1 + CHUNK, 2 * CHUNK, 1))
