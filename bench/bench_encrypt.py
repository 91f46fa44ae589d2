"""What does a durable, encrypted commit cost against writing the same FLAC bare?

One long stereo call (1 hour at 16 kHz by default, 230 MB of raw audio) is
laid out in chunks as the pool holds it, then committed four ways, each timed
and measured for the peak memory it adds to the process (the resident-set
high-water mark, reset before each run through ``/proc/self/clear_refs``, so
that libsndfile's and the age library's own allocations count too):

- (a) bare: ``soundfile.write`` of the whole array to a FLAC file, plus one
  fsync: the floor, what any program that writes FLAC pays;
- (b) Hindsight, encrypted: ``Store.keep`` with one age recipient, the
  worker's own path (FLAC encoded as it is read, through age, into a temp file
  that is fsynced and linked, then the sidecar);
- (c) Hindsight, plain: the same without recipients;
- (d) before: the whole FLAC built in memory first, then written and fsynced,
  as the store did before the stream.

Prints each run's seconds and extra memory, then (b) against (a) and against
the goals (at most 1.5x the bare write; extra memory under 10% of the call's
raw size). The age file is decrypted and checked to hold the same audio.
Run: ``.venv/bin/python bench/bench_encrypt.py [--seconds 3600] [--quick]``;
about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyrage
import soundfile as sf

from hindsight.daemon.buffer import CHUNK_SAMPLES, Int16Array, chunk_frames
from hindsight.daemon.kept import Keep
from hindsight.daemon.sources import synthetic_table
from hindsight.daemon.store import Store, write_durably

RATE = 16000
CHANNELS = 2
TIME_GOAL = 1.5
MEMORY_GOAL = 0.10


@dataclass(frozen=True)
class Run:
    label: str
    seconds: float
    extra_mb: float
    size_mb: float


def pooled(seconds: float) -> tuple[Int16Array, list[tuple[int, int, int]]]:
    """The call as the pool holds it: whole chunks, and the extents the worker is given."""
    table = synthetic_table(RATE, CHANNELS, 12.0)
    frames = round(seconds * RATE)
    per_chunk = CHUNK_SAMPLES // CHANNELS
    count = -(-frames // per_chunk)
    pool = np.zeros((count, CHUNK_SAMPLES), dtype=np.int16)
    flat = pool.reshape(-1)
    for at in range(0, frames, len(table)):
        n = min(len(table), frames - at)
        flat[at * CHANNELS : (at + n) * CHANNELS] = table[:n].reshape(-1)
    extents = [(i, 0, min(per_chunk, frames - i * per_chunk)) for i in range(count)]
    return pool, extents


def views(pool: Int16Array, extents: list[tuple[int, int, int]]) -> Iterator[Int16Array]:
    for index, begin, end in extents:
        yield chunk_frames(index, begin, end, pool, CHANNELS)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured(label: str, work: Callable[[], Path]) -> Run:
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark := the current RSS
    before = _kib("VmRSS")
    t0 = time.perf_counter()
    path = work()
    seconds = time.perf_counter() - t0
    extra = max(0, _kib("VmHWM") - before)
    return Run(label, seconds, extra / 1024, path.stat().st_size / 2**20)


def keep_of(call_id: str, frames: int, recipients: tuple[str, ...]) -> Keep:
    seconds = frames / RATE
    fields = {
        "call_id": call_id,
        "line": "desk-01",
        "agent": None,
        "reasons": ["marked"],
        "purposes": ["escalation"],
        "retention": {"escalation": None},
        "retain_until": None,
        "seconds": seconds,
        "rolled_seconds": 0.0,
        "lost_seconds": 0.0,
        "status_flags": 0,
    }
    extra = {"marks": [{"purpose": "escalation", "time": "", "note": "bench"}]}
    return Keep(call_id, "2026/01/01", RATE, CHANNELS, fields, extra, recipients)


def run(args: argparse.Namespace) -> int:
    seconds = 60.0 if args.quick else args.seconds
    pool, extents = pooled(seconds)
    frames = sum(end - begin for _, begin, end in extents)
    audio = pool.reshape(-1)[: frames * CHANNELS].reshape(frames, CHANNELS)
    raw_mb = audio.nbytes / 2**20
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    with tempfile.TemporaryDirectory(prefix="hindsight-bench-") as tmp:
        root = Path(tmp)
        store = Store(root / "state")

        def bare() -> Path:
            path = root / "bare.flac"
            sf.write(str(path), audio, RATE, subtype="PCM_16", format="FLAC")
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            return path

        def ours(call_id: str, keys: tuple[str, ...]) -> Callable[[], Path]:
            def commit() -> Path:
                keep = keep_of(call_id, frames, keys)
                return store.root / store.keep(keep, views(pool, extents), frames).path

            return commit

        def before() -> Path:
            memory = io.BytesIO()
            with sf.SoundFile(memory, "w", RATE, CHANNELS, subtype="PCM_16", format="FLAC") as f:
                for view in views(pool, extents):
                    f.write(view)
            data = memory.getvalue()
            block = 1 << 20

            def fill(sink: io.RawIOBase) -> None:
                for at in range(0, len(data), block):
                    sink.write(data[at : at + block])

            return write_durably(root / "before.flac", fill)[0]

        print(
            f"a {seconds / 3600:g} h call, {CHANNELS} channels at {RATE} Hz: "
            f"{raw_mb:.0f} MB of raw audio, in {len(extents)} pool chunks"
        )
        runs = [
            measured("(a) bare soundfile.write + fsync", bare),
            measured("(b) Hindsight, encrypted (age)", ours("enc", (recipient,))),
            measured("(c) Hindsight, plain FLAC", ours("plain", ())),
            measured("(d) before: whole FLAC in memory", before),
        ]
        sealed = next(root.rglob("enc.flac.age")).read_bytes()
        decoded = sf.read(io.BytesIO(pyrage.decrypt(sealed, [identity])), dtype="int16")[0]
        same = np.array_equal(decoded, audio)
    for r in runs:
        print(
            f"{r.label:<36} {r.seconds:7.2f} s  +{r.extra_mb:6.1f} MB peak  "
            f"file {r.size_mb:6.1f} MB"
        )
    bare_run, enc = runs[0], runs[1]
    ratio = enc.seconds / bare_run.seconds
    share = enc.extra_mb / raw_mb
    print(f"encrypted commit vs bare write: {ratio:.2f}x (goal <= {TIME_GOAL}x)")
    print(
        f"encrypted commit's extra memory: {enc.extra_mb:.1f} MB, {share:.1%} of the raw call "
        f"(goal < {MEMORY_GOAL:.0%}); before the stream: {runs[3].extra_mb:.1f} MB"
    )
    print(f"decrypted recording {'equals' if same else 'DIFFERS FROM'} the call's audio")
    verdict = ratio <= TIME_GOAL and share < MEMORY_GOAL and same
    print("PASS" if verdict else "MISS")
    return 0 if same else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="length of the call")
    parser.add_argument("--quick", action="store_true", help="a 60 s call: a smoke test")
    return parser.parse_args()


def main() -> int:
    return run(parse_args())


if __name__ == "__main__":
    sys.exit(main())
