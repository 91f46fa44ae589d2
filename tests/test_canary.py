"""A canary: a known signal played into calls that are not kept must leave no trace anywhere.

The signal is seeded noise, so any 16 samples of it occur nowhere else by chance. The daemon
holds audio as int16 in the line's channel order; a leak could be in that layout, in the
device's interleaved one, or byte-swapped: each is searched for in every file the daemon could
have written, and in what it logged. (Encoded audio, FLAC, hides from such a search: that no
recording was written at all is checked apart.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from hindsight.daemon.buffer import Int16Array
from tests.harness import RATE, Daemon, noise_wav
from tests.test_worker import need_ptrace, pool_bytes, wait_until, worker_pid

WINDOW = 16  # samples: 32 bytes
PROBES = 64  # windows per layout

# One stereo device; lines take its channels in order, swapped, and one each.
LINES = {"desk-01": [1, 2], "desk-02": [2, 1], "desk-03": [1], "desk-04": [2]}


def layouts(source: Int16Array) -> dict[str, Int16Array]:
    """The signal's samples, flat, in every order the daemon holds or could write them."""
    found = {"device": source.reshape(-1)}
    for name, channels in LINES.items():
        found[name] = source[:, [c - 1 for c in channels]].reshape(-1)
    return found


def windows(samples: Int16Array, seed: int) -> list[bytes]:
    """``PROBES`` runs of ``WINDOW`` samples from all over ``samples``, little-endian."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(samples) - WINDOW, size=PROBES)
    return [samples[s : s + WINDOW].astype("<i2").tobytes() for s in starts]


def probes(source: Int16Array) -> dict[str, list[bytes]]:
    """Every layout's windows, and the same byte-swapped."""
    found: dict[str, list[bytes]] = {}
    for i, (name, samples) in enumerate(layouts(source).items()):
        little = windows(samples, seed=i)
        found[name] = little
        found[f"{name}, big-endian"] = [
            np.frombuffer(w, dtype="<i2").astype(">i2").tobytes() for w in little
        ]
    return found


def hits(haystack: bytes, needles: list[bytes]) -> int:
    return sum(needle in haystack for needle in needles)


def test_unkept_calls_leave_no_trace_of_their_audio_even_through_a_crash(tmp_path: Path) -> None:
    source = noise_wav(tmp_path / "in.wav", seconds=3.0, seed=11)
    searched = probes(source)
    # The search finds the signal where it is: the WAV holds the device layout as it is.
    wav = (tmp_path / "in.wav").read_bytes()
    assert hits(wav, searched["device"]) == PROBES
    lines = [(name, channels) for name, channels in LINES.items()]
    d = Daemon(tmp_path, source="file", file=str(tmp_path / "in.wav"), one_in=0, lines=lines)
    d.start()
    assert d.proc is not None
    for name in LINES:
        d.ok({"op": "start", "line": name})
    time.sleep(1.0)
    if os.geteuid() == 0:  # reading the pool needs ptrace rights over the daemon
        # The signal is in the daemon's memory, in each line's own layout: what the search
        # below would find, had any of it reached a file.
        pool = pool_bytes(d.proc.pid)
        for name in LINES:
            assert hits(pool, searched[name]) > 0, name
    d.ok({"op": "end", "line": "desk-01"})
    d.ok({"op": "end", "line": "desk-02"})
    d.wait_for_event("call_wiped", count=2, timeout=15)
    d.stop(signal.SIGKILL)  # desk-03 and desk-04 live
    d.start()
    lost = d.wait_for_event("call_wiped", count=4, timeout=15)[2:]
    assert [e["why"] for e in lost] == ["lost_in_crash"] * 2
    assert d.stop() == 0
    assert not d.events("call_committed")

    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "in.wav"]
    state = {p.relative_to(d.state).as_posix() for p in written if p.is_relative_to(d.state)}
    # The log's index holds call ids and offsets, like the log; no audio (searched below).
    assert state == {"commit.log", "commit.index", "caller.key", "checkpoint.key"}
    assert tmp_path / "daemon.stderr" in written
    for path in written:
        data = path.read_bytes()
        for layout, needles in searched.items():
            assert hits(data, needles) == 0, f"{path.name} holds the signal ({layout})"


def test_a_wiped_calls_chunks_are_zero_before_any_call_takes_them_again(tmp_path: Path) -> None:
    """A 1 MiB pool (16 chunks) that eight rolling calls use up whole: every chunk, rolled and
    taken from call to call, is zero once they are wiped, and a chunk the next call reuses
    holds nothing but what that call wrote."""
    need_ptrace()
    noise_wav(tmp_path / "in.wav", seconds=3.0, seed=12)
    lines = [(f"desk-{i}", [1, 2]) for i in range(8)]
    with Daemon(
        tmp_path,
        source="file",
        file=str(tmp_path / "in.wav"),
        lines=lines,
        memory_mb=1,
        max_call_seconds=1,
    ) as d:
        assert d.proc is not None
        worker = worker_pid(d)
        for name, _ in lines:
            d.ok({"op": "start", "line": name})
        time.sleep(2.5)  # each call rolls at 1 s; together they hold every chunk
        chunks = np.frombuffer(pool_bytes(d.proc.pid), dtype=np.int16).reshape(16, -1)
        assert all(chunk.any() for chunk in chunks), "every chunk held audio"
        for name, _ in lines:
            d.ok({"op": "end", "line": name})
        d.wait_for_event("call_wiped", count=8, timeout=20)
        assert not any(pool_bytes(d.proc.pid)) and not any(pool_bytes(worker))

        d.ok({"op": "start", "line": "desk-0"})
        wait_until(lambda: d.ok({"op": "status"})["lines"][0]["seconds"] > 0.2, what="audio")
        pool = np.frombuffer(pool_bytes(d.proc.pid), dtype=np.int16)
        seconds = d.ok({"op": "status"})["lines"][0]["seconds"]
        d.ok({"op": "end", "line": "desk-0"})
    # Noise has hardly a zero: the samples that are not zero are the new call's, no more.
    written = round(seconds * RATE) * 2
    assert 0.99 * 0.2 * RATE * 2 < np.count_nonzero(pool) <= written
