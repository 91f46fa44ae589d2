"""The keeper: the daemon's side of the worker process, where every ended call gets its outcome.

Every ended call, kept or not, takes the same path at the same moments: the
control loop hands it to ``submit`` (a queue put, nothing more) and answers
at once; after the call's grace (``marking.grace_seconds``, during which a
``mark`` may still keep it) and then a random settle delay (``SETTLE_DELAY``)
the keeper thread closes it in the table (no mark reaches it after that),
only then describes it, and turns it into a job for the worker process,
which writes a kept call (``stored``) and zeroes every call's chunks
(``zeroed``) in the shared pool; the keeper then logs the outcome (it is the
commit log's writer for outcomes) and gives the zeroed chunks back to the
pool. The work that takes time, and differs between kept and wiped calls,
happens in the worker at idle priority, so neither a reply nor the audio
path waits on it, and only after the delay, so that it overlaps neither the
reply to ``end`` (or to a late ``mark``) nor a request right after it.

- Order per call: kept: stored, ``call_committed`` logged, zeroed, chunks
  back. Not kept: zeroed, chunks back, ``call_wiped`` logged. A kept call
  that ended before its first block has no audio to write: it is wiped with
  ``why: "no_audio"`` and its ``reasons``.
- The worker holds one job at a time, wipes before writes. A step that
  fails (a full disk) is retried with a backoff while other calls go on
  being settled; the call stays in memory until it is on disk. A failed log append is retried the
  same way, without the worker.
- A worker that dies is restarted (with a backoff when it keeps dying) and
  the job it held is redone; redoing is safe because writing is idempotent
  (``store``) and every step done is remembered here. A worker that says
  nothing for ``hang_seconds`` is killed and handled the same way.
- At shutdown every waiting call is taken at once, its grace and settle
  delay cut short (the control loop takes no more marks by then). The
  retries go on until ``finish``'s deadline; then the worker is stopped,
  what is left is zeroed here, and each call still gets exactly one outcome
  (``call_wiped`` with ``why: "store_failed"`` for a kept call that could
  not be written).
- The daemon's own log names no call as kept or wiped (only the commit log
  does): settling is logged at debug level, failures without call ids.
- S3 backend (``lane``): the worker writes a kept call into the spool
  (``spooled``) instead of ``recordings/``; the call has no outcome yet. Its
  upload, and every other call to the store, goes through the ``Lane``, which
  logs ``call_committed`` once the store has the recording and its sidecar.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hindsight.clock import iso, utcnow
from hindsight.commitlog import CommitLog
from hindsight.config import Config
from hindsight.daemon import jobs
from hindsight.daemon.buffer import Extent
from hindsight.daemon.calls import Call, CallTable
from hindsight.daemon.kept import Keep, describe, reasons
from hindsight.daemon.lane import Lane
from hindsight.daemon.memory import PoolMemory
from hindsight.errors import HindsightError
from hindsight.record import Committed
from hindsight.replies import WorkerState

log = logging.getLogger(__name__)

RETRY_FIRST = 1.0
RETRY_MAX = 60.0
SHUTDOWN_GRACE = 60.0  # seconds a stopping daemon keeps retrying writes
HANG_SECONDS = 60.0  # a worker silent this long is taken for hung (it says alive twice a second)
RESTART_FIRST = 0.5
RESTART_MAX = 30.0
STEADY_SECONDS = 10.0  # a worker that lived this long resets the restart backoff
TICK = 0.25
# Seconds between a call's end (after its grace, when it has one) and the start of its job,
# drawn anew per call. The work a kept call costs (its description here, FLAC in the worker)
# then never overlaps the reply to ``end``, a late ``mark`` or a request right after either,
# and lands at no fixed time after any of them.
SETTLE_DELAY = (0.3, 1.2)


class WorkerHandle(Protocol):
    """A running worker: the daemon's end of its channel, and a way to stop it."""

    sock: socket.socket
    pid: int | None

    def name(self) -> str: ...

    def kill(self) -> None: ...

    def reap(self, timeout: float) -> str:
        """Wait for it to be gone; say how it ended."""
        ...


Spawn = Callable[[], WorkerHandle]


class WorkerProcess:
    """The real worker: ``python -m hindsight.daemon.worker`` with the pool's memfd."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.proc = proc
        self.sock = sock
        self.pid: int | None = proc.pid

    def name(self) -> str:
        return f"worker (pid {self.proc.pid})"

    def kill(self) -> None:
        self.proc.kill()

    def reap(self, timeout: float) -> str:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return f"exit code {code}" if code >= 0 else f"signal {-code}"


def process_spawner(
    memory: PoolMemory, chunk_samples: int, state_dir: Path, storage: str | None = None
) -> Spawn:
    """``storage``: the S3 backend's settings as JSON (``s3store.Settings``), or None."""

    def spawn() -> WorkerHandle:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [
            sys.executable,
            "-m",
            "hindsight.daemon.worker",
            f"--channel-fd={theirs.fileno()}",
            f"--pool-fd={memory.fd}",
            f"--pool-size={memory.size}",
            f"--chunk-samples={chunk_samples}",
            f"--state-dir={state_dir}",
            f"--parent={os.getpid()}",
        ]
        if storage is not None:
            argv.append(f"--storage={storage}")
        with theirs:
            proc = subprocess.Popen(
                argv, pass_fds=(theirs.fileno(), memory.fd), stdin=subprocess.DEVNULL
            )
        return WorkerProcess(proc, ours)

    return spawn


@dataclass
class Job:
    """An ended call on its way to its outcome; remembers the steps already done."""

    number: int
    call: Call
    chunks: list[int]
    extents: list[Extent]
    keep: Keep | None
    why: str  # the wipe's reason when not kept: not_kept or no_audio
    delay: float
    committed: Committed | None = None  # once stored
    spooled: bool = False  # S3 backend: in the spool; its outcome comes with its upload
    zeroed: bool = False
    logged: bool = False
    due: float = 0.0

    @property
    def writes(self) -> bool:
        """Whether the worker has a recording to write for it (not only chunks to zero)."""
        return self.keep is not None and self.committed is None and not self.spooled

    def message(self) -> dict[str, Any]:
        keep = self.keep if self.writes else None
        return {
            "kind": "settle",
            "job": self.number,
            "channels": self.call.buffer.channels,
            "chunks": self.chunks,
            "extents": self.extents,
            "keep": keep.to_wire() if keep is not None else None,
        }


@dataclass
class DeleteJob:
    """A recording whose deletion is logged, on its way off the disk."""

    number: int
    call_id: str
    path: str
    delay: float
    due: float = 0.0
    writes = False

    def message(self) -> dict[str, Any]:
        return {"kind": "delete", "job": self.number, "call_id": self.call_id, "path": self.path}


Work = Job | DeleteJob


@dataclass
class _Link:
    """The current worker and what the keeper knows of it."""

    handle: WorkerHandle
    generation: int
    born: float
    heard: float
    busy: Work | None = None


@dataclass
class _Restart:
    at: float = 0.0
    delay: float = RESTART_FIRST
    count: int = 0


@dataclass
class _State:
    # (due, call): in its grace and settle delay
    waiting: list[tuple[float, Call]] = field(default_factory=list)
    ready: deque[Work] = field(default_factory=deque)
    retries: list[Work] = field(default_factory=list)
    stopping: bool = False
    deadline: float = float("inf")


class Keeper:
    def __init__(
        self,
        table: CallTable,
        commit_log: CommitLog,
        config: Config,
        spawn: Spawn,
        retry_first: float = RETRY_FIRST,
        hang_seconds: float = HANG_SECONDS,
        settle_delay: tuple[float, float] = SETTLE_DELAY,
        lane: Lane | None = None,
    ) -> None:
        self.table = table
        self.lane = lane  # the S3 backend's calls to the store; None: the local backend
        self.log = commit_log
        self.config = config
        self.spawn = spawn
        self.retry_first = retry_first
        self.hang_seconds = hang_seconds
        self.failures = 0  # jobs the worker could not do, retried since (metrics)
        self.last_error: tuple[str, str] | None = None  # (message, when) of the last failure
        self.settle_delay = settle_delay
        self._events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self._state = _State()
        self._link: _Link | None = None
        self._restart = _Restart()
        self._generation = 0
        self._numbers = 0
        self._ready = threading.Event()  # a worker has spoken: it runs and has mapped the pool
        self._thread = threading.Thread(target=self._run, name="keeper", daemon=True)

    # -- called from other threads ------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, call: Call) -> None:
        """Hand an ended call over; returns at once, whatever the call's fate."""
        self._events.put(("call", 0, call))

    def delete(self, call_id: str, path: str) -> None:
        """Have the worker unlink a recording and its sidecar (its deletion is logged)."""
        self._events.put(("delete", 0, (call_id, path)))

    def store(self, kind: str, fields: dict[str, Any], recovered: bool = False) -> None:
        """S3 backend: have the worker's store thread do ``kind`` (``upload``, ``s3delete``,
        ``hold``, ``retain``) in its turn; returns at once."""
        self._events.put(("store", 0, (kind, fields, recovered)))

    def finish(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Settle every call handed in so far, retrying for at most ``grace`` seconds, then stop."""
        self._events.put(("stop", 0, time.monotonic() + grace))

    def wait_ready(self, timeout: float) -> bool:
        """True once the first worker has said it is alive: start-up waits for this."""
        return self._ready.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once ``finish`` has settled every call."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def restarts(self) -> int:
        return self._restart.count

    def waiting_calls(self) -> list[Call]:
        """Ended calls not yet described (in their grace or settle delay): a reload must not
        take away what they will be described with."""
        return [call for _, call in list(self._state.waiting)]

    def backlog(self) -> int:
        """Jobs waiting for the worker, retries included (for the metrics' sampled snapshot)."""
        state = self._state
        return len(state.waiting) + len(state.ready) + len(state.retries)

    def state(self) -> WorkerState:
        """For ``status``: the worker's pid (None while it restarts) and its restarts so far.

        Nothing about jobs: how long the worker is busy would tell kept calls from wiped ones.
        """
        link = self._link
        return WorkerState(link.handle.pid if link is not None else None, self.restarts)

    # -- the keeper thread --------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._done():
                try:
                    self._next_event()
                    self._tick(time.monotonic())
                except Exception:  # a bug must not stop every later call from settling
                    log.exception("keeper: unexpected error; carrying on")
                    time.sleep(TICK)
        finally:
            self._close_link()

    def _done(self) -> bool:
        state = self._state
        busy = self._link is not None and self._link.busy is not None
        lane = self.lane is None or self.lane.finished()
        return (
            state.stopping and lane and not (state.waiting or state.ready or state.retries or busy)
        )

    def deletions_pending(self) -> bool:
        """S3 backend: whether a logged deletion may not be done in the store yet."""
        return self.lane is not None and self.lane.deletions_pending()

    def _next_event(self) -> None:
        try:
            kind, generation, payload = self._events.get(timeout=self._wait())
        except queue.Empty:
            return
        if kind == "call":
            # The grace first, the same for every call, kept or not; the random delay on top.
            due = time.monotonic() + payload.grace + self._settle_delay()
            self._state.waiting.append((due, payload))
        elif kind == "delete":
            self._numbers += 1
            call_id, path = payload
            self._state.ready.append(DeleteJob(self._numbers, call_id, path, self.retry_first))
        elif kind == "store" and self.lane is not None:
            self.lane.add(*payload)
        elif kind == "stop":
            self._state.stopping, self._state.deadline = True, payload
            if self.lane is not None:
                self.lane.stopping = True
        elif self._link is not None and generation == self._link.generation:
            if kind == "message":
                self._on_message(self._link, payload)
            else:
                self._lost_worker(f"it closed its channel ({payload})")

    def _wait(self) -> float:
        dues = [job.due for job in self._state.retries] + [due for due, _ in self._state.waiting]
        wake = min([time.monotonic() + TICK, *dues, self._state.deadline])
        return max(0.0, wake - time.monotonic())

    def _tick(self, now: float) -> None:
        state = self._state
        if state.stopping and now >= state.deadline:
            self._give_up_all()
            return
        self._check_hang(now)
        self._take_waiting(now)
        due = [job for job in state.retries if job.due <= now]
        state.retries = [job for job in state.retries if job.due > now]
        for job in due:
            self._retry(job)
        if self._link is None and now >= self._restart.at:
            self._start_worker(now)
        self._dispatch()
        if self.lane is not None:
            self.lane.check(now)
            self._dispatch_store(self.lane, now)

    def _settle_delay(self) -> float:
        low, high = self.settle_delay
        return low + (high - low) * secrets.randbelow(1 << 30) / (1 << 30)

    def _take_waiting(self, now: float) -> None:
        """Calls whose grace and settle delay are over (every call, once stopping) become jobs.

        Each is closed in the table first, so that no mark reaches it once it is described; a
        call a mark is being logged for is taken a tick later.
        """
        state = self._state
        due: list[Call] = []
        still: list[tuple[float, Call]] = []
        for at, call in state.waiting:
            if at > now and not state.stopping:
                still.append((at, call))
            elif self.table.close(call):
                due.append(call)
            else:
                still.append((now + TICK, call))
        state.waiting = still
        state.ready.extend(self._job(call) for call in due)

    def _job(self, call: Call) -> Job:
        """Describe a closed call (its marks are final) and take its chunks for the worker."""
        self._numbers += 1
        extents = call.buffer.extents()
        chunks = self.table.detach(call)
        keep = describe(call, self.config) if call.kept and extents else None
        why = "no_audio" if call.kept else "not_kept"
        return Job(self._numbers, call, chunks, extents, keep, why, self.retry_first)

    # -- the worker ---------------------------------------------------------

    def _start_worker(self, now: float) -> None:
        try:
            handle = self.spawn()
        except (OSError, HindsightError) as exc:
            log.error("cannot start the worker process: %s", exc)
            self._schedule_restart(now, born=now)
            return
        self._generation += 1
        self._link = _Link(handle, self._generation, born=now, heard=now)
        threading.Thread(
            target=self._read, args=(handle, self._generation), name="keeper-read", daemon=True
        ).start()
        log.debug("%s started", handle.name())

    def _read(self, handle: WorkerHandle, generation: int) -> None:
        """The reader thread of one worker: every message becomes an event."""
        while True:
            try:
                message = jobs.receive(handle.sock)
            except jobs.ChannelClosed as exc:
                self._events.put(("closed", generation, str(exc)))
                return
            self._events.put(("message", generation, message))

    def _dispatch(self) -> None:
        link = self._link
        if link is None or link.busy is not None or not self._state.ready:
            return
        job = self._next_job()
        link.busy = job
        try:
            jobs.send(link.handle.sock, job.message())
        except jobs.ChannelClosed as exc:
            self._lost_worker(str(exc))

    def _dispatch_store(self, lane: Lane, now: float) -> None:
        link = self._link
        if link is None:
            return
        op = lane.next(now)
        if op is None:
            return
        try:
            jobs.send(link.handle.sock, op.message())
        except jobs.ChannelClosed as exc:
            self._lost_worker(str(exc))

    def _next_job(self) -> Work:
        """Wipes first: an unkept call's audio should not wait behind a long recording."""
        ready = self._state.ready
        job = next((job for job in ready if not job.writes), ready[0])
        ready.remove(job)
        return job

    def _check_hang(self, now: float) -> None:
        link = self._link
        if link is not None and now - link.heard > self.hang_seconds:
            log.error(
                "%s said nothing for %.0f s: taken for hung, killing it",
                link.handle.name(),
                now - link.heard,
            )
            self._lost_worker("it hung")

    def _lost_worker(self, why: str) -> None:
        link, self._link = self._link, None
        assert link is not None
        link.handle.kill()
        ended = link.handle.reap(5.0)
        link.handle.sock.close()
        now = time.monotonic()
        log.error("%s is gone (%s; %s); starting another", link.handle.name(), why, ended)
        if self.lane is not None:
            self.lane.lost()
        if link.busy is not None:
            self._failed(link.busy, "the worker was lost while it held this call")
        self._schedule_restart(now, link.born)

    def _schedule_restart(self, now: float, born: float) -> None:
        """At once after a worker that ran steadily; with a growing delay when it keeps dying."""
        restart = self._restart
        restart.count += 1
        if now - born >= STEADY_SECONDS:
            restart.at, restart.delay = now, RESTART_FIRST
            return
        restart.at = now + restart.delay
        restart.delay = min(restart.delay * 2, RESTART_MAX)

    def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        link.handle.sock.close()  # the worker exits at the end of its channel
        log.debug("%s stopped (%s)", link.handle.name(), link.handle.reap(5.0))

    # -- what the worker says ---------------------------------------------------

    def _on_message(self, link: _Link, message: dict[str, Any]) -> None:
        link.heard = time.monotonic()
        self._ready.set()
        step = message.get("step")
        lane = self.lane
        if lane is not None and lane.busy is not None and message.get("job") == lane.busy.number:
            lane.reply(message, time.monotonic())
            return
        job = link.busy
        if step == "alive" or job is None or message.get("job") != job.number:
            return
        if step == "spooled" and isinstance(job, Job) and lane is not None:
            job.spooled = True  # its outcome is logged once it is in the store
            lane.upload(str(message["entry"]))
        elif step == "stored" and isinstance(job, Job):
            job.committed = Committed.from_log(message["fields"])
            self._log_outcome(job)
        elif step == "zeroed" and isinstance(job, Job):
            link.busy = None
            self._zeroed(job)
        elif step == "deleted":
            link.busy = None
            log.debug("a recording's files deleted")
        elif step == "failed":
            link.busy = None
            self._failed(job, str(message.get("error")))

    def _zeroed(self, job: Job) -> None:
        job.zeroed = True
        self.table.give_back(job.chunks)
        if not self._log_outcome(job):
            self._later(job)

    def _failed(self, job: Work, error: str) -> None:
        # No call id: the daemon's own log must not tell which calls are kept.
        log.error("the worker's job is not done yet: %s; retry in %.0f s", error, job.delay)
        self.store_failed(error)
        self._later(job)

    def store_failed(self, error: str) -> None:
        """For the metrics: a write, or a call to the object store, failed (retried)."""
        self.failures += 1
        self.last_error = (error, iso(utcnow()))

    def _later(self, job: Work) -> None:
        job.due = time.monotonic() + job.delay
        job.delay = min(job.delay * 2, RETRY_MAX)
        self._state.retries.append(job)

    def _retry(self, job: Work) -> None:
        if isinstance(job, DeleteJob) or not job.zeroed:
            self._state.ready.append(job)
        elif not self._log_outcome(job):
            self._later(job)

    def _log_outcome(self, job: Job) -> bool:
        """Append the call's outcome unless done; False when the log refused it for now."""
        if job.logged:
            return True
        if job.spooled:
            job.logged = True  # not yet: the lane logs it once the store has it
            return True
        try:
            if job.committed is not None:
                self.log.append("call_committed", **job.committed.to_log())
            elif job.zeroed:
                self._log_wipe(job, job.why)
            else:
                return False
        except HindsightError as exc:
            log.error("cannot log a call's outcome yet: %s; retry in %.0f s", exc, job.delay)
            return False
        job.logged = True
        log.debug("call %s settled", job.call.call_id)
        return True

    def _log_wipe(self, job: Job, why: str) -> None:
        call = job.call
        extra = {"reasons": reasons(call)} if call.kept else {}
        self.log.append(
            "call_wiped",
            call_id=call.call_id,
            line=call.line.name,
            seconds=round(call.seconds(), 3),
            why=why,
            **extra,
        )

    # -- shutdown deadline --------------------------------------------------

    def _give_up_all(self) -> None:
        """Stop the worker, zero what is left here, give each call the outcome it really had."""
        self._take_waiting(time.monotonic())
        link = self._link
        left = list(self._state.ready) + self._state.retries
        if link is not None and link.busy is not None:
            left.append(link.busy)
            link.busy = None
        if link is not None:
            link.handle.kill()
            self._close_link()
        self._state.ready.clear()
        self._state.retries = []
        for job in left:
            self._give_up(job)
        lane = self.lane
        if lane is not None and not lane.finished():
            lane.lost()
            lane.stalled = True
            uploads = sum(op.kind == "upload" for op in lane.ops)
            log.error(
                "stopping before the object store had everything: %d recording(s) stay in the "
                "spool (the next start uploads them), %d other store operation(s) not done",
                uploads,
                len(lane.ops) - uploads,
            )

    def _give_up(self, job: Work) -> None:
        if isinstance(job, DeleteJob):
            log.error("a recording's files are not deleted yet; the next start does it")
            return
        if not job.zeroed:
            self.table.zero_and_give_back(job.chunks)
            job.zeroed = True
        if job.committed is not None and not job.logged:
            if not self._log_outcome(job):
                log.critical("a recording is on disk but not in the log; the next start logs it")
            return
        if job.logged:
            return
        why = "store_failed" if job.keep is not None else job.why
        try:
            self._log_wipe(job, why)
        except HindsightError as exc:
            log.critical("call %s has no outcome in the log: %s", job.call.call_id, exc)
            return
        if job.keep is not None:
            log.critical("a kept call could not be written before shutdown; logged as wiped")
