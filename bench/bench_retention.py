"""How fast does ``retention.rebuild`` read a big commit log, against bare ``json.loads``?

Writes a synthetic commit log (1,000,000 lines by default) with a realistic mix: calls on 64
desks, 2,000 a day, one in ten sampled for training, 3 in 100 marked for escalation, a few
paused; the rest wiped. Daemon restarts and sampling epochs now and then. Recordings are
reviewed, extended, resolved, held, released, erased and purged as time passes, so most
training recordings are gone by the end and escalations pile up. The lines have the shape the
real ``CommitLog`` writes (same keys in the same order, same serialisation), but their hashes
are chained SHA-256 of each line's bytes, not of the canonical form: rebuild does not check the
chain, and hashing canonically would only slow the writer down.

Then times, best of ``--repeats`` rounds, in the same run: the floor (``json.loads`` of every
line), ``commitlog.read_entries`` alone, ``rebuild``, and two readers that ``read_entries``
could become, each feeding the same ``Ledger.apply``: a leaner one (same rules, less overhead
per line) and one that also skips the lines that name no retention event. Prints lines/s, the
ratio to the floor, and the peak of memory traced during a rebuild. Checks the rebuilt ledger
against what the generator knows exists, is held and was deleted, and that the other readers
build the same ledger.
Run: ``.venv/bin/python bench/bench_retention.py [--lines N] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import heapq
import itertools
import json
import random
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TextIO

from hindsight.clock import iso
from hindsight.commitlog import GENESIS, read_entries
from hindsight.retention import Ledger, Terms, rebuild

START = datetime(2026, 1, 1, 8, tzinfo=UTC)
CALL_GAP = timedelta(days=1) / 2000
DESKS = [f"desk-{i:02d}" for i in range(64)]
AGENTS = [f"agent-{i:02d}" for i in range(80)]
CALLS_PER_RUN = 20_000  # a daemon restart every ten days
PURGE_LAG = timedelta(hours=1)  # purge_interval_seconds = 3600
REASONS = {"training": "sampled", "escalation": "marked"}
TRAINING = Terms("training", 7, False, 0, 92)
ESCALATION = Terms("escalation", None, True, 30, 2555)
Event = dict[str, Any]


@dataclass(order=True)
class Pending:
    """A retention event the simulation will log once its time has come."""

    at: datetime
    order: int
    event: str = field(compare=False)
    fields: Event = field(compare=False)


@dataclass
class Truth:
    """What the generator knows: recordings that exist and are held, deletions logged."""

    live: dict[str, dict[str, datetime | None]] = field(default_factory=dict)  # its retention
    ended: dict[str, datetime] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    deleted: int = 0


class Writer:
    """Writes entries as the real log does: same keys, order and serialisation."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.seq = 0
        self.prev = GENESIS
        self.buffer: list[str] = []

    def write(self, moment: datetime, event: str, fields: Event) -> None:
        self.seq += 1
        entry = {"seq": self.seq, "time": iso(moment), "event": event, **fields, "prev": self.prev}
        body = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        self.prev = hashlib.sha256(body.encode()).hexdigest()
        self.buffer.append(f'{body[:-1]},"hash":"{self.prev}"}}\n')
        if len(self.buffer) >= 10_000:
            self.flush()

    def flush(self) -> None:
        self.out.writelines(self.buffer)
        self.buffer.clear()


class Simulation:
    """Calls, one after another, with the retention events they lead to."""

    def __init__(self, writer: Writer, seed: int) -> None:
        self.w = writer
        self.rng = random.Random(seed)
        self.truth = Truth()
        self.queue: list[Pending] = []
        self.order = itertools.count()
        self.now = START
        self.epoch = 0

    def run(self, lines: int) -> Truth:
        for number in itertools.count():
            if self.w.seq >= lines:
                break
            if number % CALLS_PER_RUN == 0:
                self.restart()
            self.now += CALL_GAP
            self.due_events()
            self.call(f"c{number:07d}")
        self.w.write(self.now, "daemon_stopped", {"version": "0.2.0"})
        self.w.flush()
        return self.truth

    def restart(self) -> None:
        if self.epoch:
            self.w.write(self.now, "sampling_reveal", {"epoch": self.epoch, "seed": "ab" * 32})
            self.w.write(self.now, "daemon_stopped", {"version": "0.2.0"})
        self.epoch += 1
        self.w.write(self.now, "daemon_started", {"version": "0.2.0"})
        commitment = hashlib.sha256(str(self.epoch).encode()).hexdigest()
        fields = {"epoch": self.epoch, "one_in": 10, "commitment": commitment}
        self.w.write(self.now, "sampling_epoch", fields)

    def call(self, call_id: str) -> None:
        line, rng = self.rng.choice(DESKS), self.rng
        seconds = round(rng.uniform(20, 600), 3)
        started = {"call_id": call_id, "line": line, "agent": rng.choice(AGENTS)}
        announced = ["training", "escalation"]
        self.w.write(self.now, "call_started", {**started, "announced": announced, "epoch": 1})
        if rng.random() < 0.05:
            self.w.write(self.now, "call_paused", {"call_id": call_id, "line": line})
            self.w.write(self.now, "call_resumed", {"call_id": call_id, "line": line})
        purposes = ["training"] if rng.random() < 0.1 else []
        if rng.random() < 0.03:
            self.w.write(
                self.now, "call_marked", {"call_id": call_id, "line": line, "purpose": "escalation"}
            )
            purposes.append("escalation")
        ended = self.now + timedelta(seconds=seconds)
        if purposes:
            self.commit(started, purposes, ended, seconds)
        else:
            fields = {"call_id": call_id, "line": line, "seconds": seconds, "why": "not_kept"}
            self.w.write(ended, "call_wiped", fields)

    def commit(self, started: Event, purposes: list[str], ended: datetime, seconds: float) -> None:
        terms = {"training": TRAINING, "escalation": ESCALATION}
        retention = {p: terms[p].first_retain_until(ended) for p in purposes}
        call_id = started["call_id"]
        fields = {
            **started,
            "reasons": [REASONS[p] for p in purposes],
            "purposes": purposes,
            "retention": {p: iso(t) if t else None for p, t in retention.items()},
            "retain_until": iso(max(t for t in retention.values() if t)),
            "path": f"recordings/{ended:%Y/%m/%d}/{call_id}.flac",
            "sha256": hashlib.sha256(call_id.encode()).hexdigest(),
            "seconds": seconds,
            "rolled_seconds": 0,
            "lost_seconds": 0,
            "status_flags": 0,
            "ended": iso(ended),
            "caller_ref": f"ref-{self.rng.randrange(50_000):05d}",
        }
        self.w.write(ended + timedelta(seconds=2), "call_committed", fields)
        self.truth.ended[call_id] = ended
        self.truth.live[call_id] = retention
        self.plan(call_id, purposes, ended)

    def plan(self, call_id: str, purposes: list[str], ended: datetime) -> None:
        """A recording's later life: a review, an escalation resolved, sometimes a hold."""
        rng, day = self.rng, timedelta(days=1)
        who = {"call_id": call_id, "actor": "hr-01", "reason": "weekly review"}
        if "escalation" in purposes:
            self.later(
                ended + rng.uniform(2, 40) * day, "resolve", {**who, "purpose": "escalation"}
            )
            if rng.random() < 0.02:
                self.later(ended + day, "recording_held", who)
                self.later(ended + rng.uniform(60, 400) * day, "recording_released", who)
        elif rng.random() < 0.2:
            self.later(ended + 3 * day, "resolve", {**who, "purpose": "training"})
        elif rng.random() < 0.05:
            self.later(ended + 5 * day, "extend", {**who, "purpose": "training", "days": 30})
        if rng.random() < 0.005:
            self.later(ended + day, "erase", {**who, "reason": "erasure request"})
        self.later(ended + 7 * day + PURGE_LAG, "purge", {"call_id": call_id})

    def later(self, at: datetime, event: str, fields: Event) -> None:
        heapq.heappush(self.queue, Pending(at, next(self.order), event, fields))

    def due_events(self) -> None:
        while self.queue and self.queue[0].at <= self.now:
            pending = heapq.heappop(self.queue)
            if pending.fields["call_id"] in self.truth.live:
                self.act(pending)

    def act(self, pending: Pending) -> None:
        call_id, at, truth = pending.fields["call_id"], pending.at, self.truth
        if pending.event in ("resolve", "extend"):
            self.change(pending)
        elif pending.event == "recording_held":
            truth.held.add(call_id)
            self.w.write(at, pending.event, pending.fields)
        elif pending.event == "recording_released":
            truth.held.discard(call_id)
            self.w.write(at, pending.event, pending.fields)
        elif pending.event == "erase" and call_id not in truth.held:
            self.delete(at, call_id, {"why": "erased", "actor": "dpo", "reason": "art. 17"})
        elif pending.event == "purge":
            self.purge(at, call_id)

    def change(self, pending: Pending) -> None:
        """Resolve or extend as the daemon would; the ledger's own rules pick the new time."""
        fields, at = pending.fields, pending.at
        call_id, purpose = fields["call_id"], fields["purpose"]
        mirror = self.mirror(call_id)
        terms = {TRAINING.name: TRAINING, ESCALATION.name: ESCALATION}
        if pending.event == "resolve":
            until = mirror.resolve(call_id, purpose, at, terms)
        else:
            until = mirror.extend(call_id, purpose, fields["days"], at, terms)
        event = "recording_resolved" if pending.event == "resolve" else "recording_extended"
        self.w.write(at, event, {**without(fields, "days"), "retain_until": iso(until)})
        self.truth.live[call_id][purpose] = until

    def mirror(self, call_id: str) -> Ledger:
        """A one-recording ledger to decide with, as the daemon does."""
        ledger = Ledger()
        retention = self.truth.live[call_id]
        ledger.apply(
            {
                "seq": 1,
                "time": iso(self.now),
                "event": "call_committed",
                "call_id": call_id,
                "line": "x",
                "path": "x",
                "ended": iso(self.truth.ended[call_id]),
                "retention": {p: None if t is None else iso(t) for p, t in retention.items()},
            }
        )
        return ledger

    def purge(self, at: datetime, call_id: str) -> None:
        """Purged once due (by the rule written out again here, to check the ledger's);
        a recording not yet due is looked at again a week later."""
        ends = self.truth.live[call_id].values()
        due = None not in ends and max(t for t in ends if t) + PURGE_LAG <= at
        if due and call_id not in self.truth.held:
            self.delete(at, call_id, {"why": "expired"})
        else:
            self.later(at + timedelta(days=7), "purge", {"call_id": call_id})

    def delete(self, at: datetime, call_id: str, why: Event) -> None:
        path = f"recordings/{self.truth.ended[call_id]:%Y/%m/%d}/{call_id}.flac"
        self.w.write(at, "recording_deleted", {"call_id": call_id, "path": path, **why})
        del self.truth.live[call_id]
        self.truth.deleted += 1


def without(fields: Event, key: str) -> Event:
    return {k: v for k, v in fields.items() if k != key}


def write_log(path: Path, lines: int) -> Truth:
    with path.open("w", encoding="utf-8") as out:
        return Simulation(Writer(out), seed=1).run(lines)


def floor(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        for line in handle:
            json.loads(line)
            count += 1
    return count


def read_only(path: Path) -> int:
    return sum(1 for _ in read_entries(path))


def reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


DECODER = json.JSONDecoder(parse_constant=reject_constant)
RELEVANT = (b'"call_committed"', b'"recording_')


def leaner_entries(path: Path, prefilter: bool) -> Iterator[dict[str, Any]]:
    """The happy path of ``read_entries`` as it could be: one decoder for all lines, UTF-8
    decoded directly (``json.loads`` of bytes sniffs the encoding and builds a decoder when
    given ``parse_constant``), no object per line. ``prefilter``: parse only lines that name a
    retention event somewhere (the event's own JSON string is always in its line, whatever
    the spacing or key order, so no retention line is ever skipped)."""
    with path.open("rb") as handle:
        for data in handle:
            if not data.endswith(b"\n"):
                raise ValueError("the last line is torn")
            if not prefilter or RELEVANT[0] in data or RELEVANT[1] in data:
                yield DECODER.decode(data.decode())


def rebuild_leaner(path: Path, prefilter: bool) -> Ledger:
    ledger = Ledger()
    for entry in leaner_entries(path, prefilter):
        ledger.apply(entry)
    return ledger


def timed(run: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def peak_mb(path: Path) -> tuple[float, float]:
    """The peak traced during a rebuild, and what the ledger still holds after it."""
    gc.collect()
    tracemalloc.start()
    ledger = rebuild(path)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ledger is not None
    return peak / 2**20, held / 2**20


def check(ledger: Ledger, truth: Truth) -> None:
    live = {recording.call_id: recording for recording in ledger.recordings()}
    assert live.keys() == truth.live.keys(), "the ledger disagrees on what exists"
    assert {r.call_id for r in live.values() if r.held} == truth.held, "and on what is held"
    assert len(ledger.deletions()) == truth.deleted, "and on what was deleted"
    assert not any(d.premature for d in ledger.deletions()), "a purge deleted too early"


def measure(path: Path, repeats: int) -> dict[str, float]:
    """The best time of each, over rounds that run each once: a busy moment on the machine
    then slows one round of all of them, not all rounds of one."""
    runs: dict[str, Callable[[], object]] = {
        "json.loads floor": lambda: floor(path),
        "read_entries": lambda: read_only(path),
        "rebuild": lambda: rebuild(path),
        "leaner reader": lambda: rebuild_leaner(path, prefilter=False),
        "  and prefilter": lambda: rebuild_leaner(path, prefilter=True),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="log lines to write")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of timed runs; the best counts"
    )
    parser.add_argument("--quick", action="store_true", help="small and short, for the tests")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.repeats = 20_000, 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "commit.log"
        started = time.perf_counter()
        truth = write_log(path, args.lines)
        lines = floor(path)
        size = path.stat().st_size / 2**20
        took = time.perf_counter() - started
        print(f"{lines} lines ({size:.0f} MB) written in {took:.1f} s")
        ledger = rebuild(path)
        check(ledger, truth)
        for prefilter in (False, True):
            leaner = rebuild_leaner(path, prefilter)
            assert leaner.recordings() == ledger.recordings(), "the leaner readers must agree"
            assert leaner.deletions() == ledger.deletions()
        print(
            f"ledger: {len(ledger.recordings())} recordings, {len(truth.held)} held, "
            f"{len(ledger.deletions())} deletions"
        )
        times = measure(path, args.repeats)
        for name, seconds in times.items():
            ratio = seconds / times["json.loads floor"]
            rate = lines / seconds
            print(f"  {name:18} {seconds:7.3f} s  {rate:11,.0f} lines/s  ratio {ratio:5.2f}")
        peak, held = peak_mb(path)
        print(f"  rebuild peak memory {peak:.1f} MB traced, ledger holds {held:.1f} MB")


if __name__ == "__main__":
    main()
