"""The worker process: everything slow that happens to an ended call.

The daemon starts it (``python -m hindsight.daemon.worker``), hands it the
chunk pool's memfd and one end of a socketpair, and sends it jobs (see
``jobs``). For an ended call it

- encodes the kept audio to FLAC straight out of the shared pool and writes
  it durably with its sidecar (``store``), then says ``stored``;
- zeroes every chunk the call held, in the shared pool, then says ``zeroed``;

and for a recording whose deletion the daemon has logged, it unlinks the
recording and its sidecar durably, then says ``deleted``.

With the S3 backend (``--storage``), a kept call is written into the upload
spool instead (``spooled``, with the entry's name), and the calls to the
object store (``upload``, ``s3delete``, ``hold``, ``retain``) run one at a
time, in the order sent, on a thread of their own: a store that is down or
slow never holds up the zeroing of an ended call. Each says ``uploaded``
(with the ``call_committed`` fields) or ``done``, or ``failed`` with
``unavailable`` true when the store could not be reached (try again later).

Rules:

- It runs at idle priority, non-dumpable, with the pool locked and kept out
  of core dumps in its own mapping too; it dies with the daemon.
- It never writes the commit log: the daemon is its single writer and logs
  each outcome when the worker reports it.
- It never decides a call's fate; the job says whether to keep it. A step
  that fails is reported (``failed``) and the call's memory is left as it
  was, so the daemon can send the job again.
- It says ``alive`` at least every ``HEARTBEAT`` seconds, idle or busy, so
  the daemon can tell a hung worker from a busy one.
- Its log lines name no call that is kept: the daemon's own log must not tell
  which calls were sampled.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hindsight.daemon import jobs, logs
from hindsight.daemon.buffer import Int16Array, chunk_frames
from hindsight.daemon.harden import die_with_parent, harden_process, lower_priority
from hindsight.daemon.kept import Keep
from hindsight.daemon.memory import PoolMemory
from hindsight.daemon.s3store import QuietError, S3Store, Settings
from hindsight.daemon.store import Store
from hindsight.errors import HindsightError
from hindsight.objectstore import StoreRefused, StoreUnavailable

log = logging.getLogger("hindsight.worker")

HEARTBEAT = 0.5
STORE_KINDS = ("upload", "s3delete", "hold", "retain")


class Worker:
    """Serves jobs from ``sock`` until the daemon closes it; ``pool`` is the shared pool."""

    def __init__(
        self, sock: socket.socket, pool: Int16Array, store: Store, s3: S3Store | None = None
    ) -> None:
        self.sock = sock
        self.pool = pool
        self.store = store
        self.s3 = s3
        store.tick = self._tick  # hashing and writing a long recording say alive too
        if s3 is not None:
            s3.tick = self._tick
        self._said = 0.0
        self._send_lock = threading.Lock()  # the store thread replies on the same channel
        self._store_jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._kinds: dict[str, Callable[[dict[str, Any]], None]] = {
            "settle": self._settle,
            "delete": self._delete,
        }

    def run(self) -> None:
        thread = None
        if self.s3 is not None:
            thread = threading.Thread(target=self._store_loop, name="store", daemon=True)
            thread.start()
        try:
            self._alive()  # at once: the daemon waits for this before it says it is ready
            while True:
                if not select.select([self.sock], [], [], HEARTBEAT)[0]:
                    self._alive()
                    continue
                job = jobs.receive(self.sock)
                if self.s3 is not None and job.get("kind") in STORE_KINDS:
                    self._store_jobs.put(job)
                else:
                    self._do(job)
        except jobs.ChannelClosed:
            log.debug("the daemon closed the channel; worker done")
        finally:
            self._store_jobs.put(None)

    def _store_loop(self) -> None:
        """The calls to the object store, one at a time, in the order the daemon sent them."""
        assert self.s3 is not None
        while (job := self._store_jobs.get()) is not None:
            try:
                self._store_job(self.s3, job)
            except jobs.ChannelClosed:
                return
            except StoreUnavailable as exc:
                self._reply(job, "failed", error=_quiet_error(exc), unavailable=True)
            except HindsightError as exc:
                self._reply(job, "failed", error=_quiet_error(exc), unavailable=False)
            except Exception as exc:  # a bug must not cost the call: the daemon sends it again
                log.error("a store job failed unexpectedly: %s", type(exc).__name__)
                self._reply(job, "failed", error=_quiet_error(exc), unavailable=False)

    def _store_job(self, s3: S3Store, job: dict[str, Any]) -> None:
        kind = job["kind"]
        objects = [(str(key), str(version)) for key, version in job.get("objects", [])]
        if kind == "upload":
            self._reply(job, "uploaded", fields=s3.upload(job["entry"]))
            return
        if kind == "s3delete":
            s3.delete(objects, bool(job.get("bypass")))
        elif kind == "hold":
            s3.hold(objects, bool(job["on"]))
        else:
            s3.retain(objects, str(job["until"]))
        self._reply(job, "done")

    def _do(self, job: dict[str, Any]) -> None:
        handler = self._kinds.get(str(job.get("kind")))
        if handler is None:
            self._reply(job, "failed", error=f"unknown job kind {job.get('kind')!r}")
            return
        try:
            handler(job)
        except jobs.ChannelClosed:
            raise
        except Exception as exc:  # a bug must not cost the call: the daemon sends it again
            log.exception("job failed unexpectedly")
            self._reply(job, "failed", error=f"internal error in the worker: {exc}")

    def _settle(self, job: dict[str, Any]) -> None:
        if job["keep"] is not None and self.s3 is not None:
            try:
                frames = sum(end - begin for _, begin, end in job["extents"])
                keep = Keep.from_wire(job["keep"])
                entry = self.s3.spool(keep, self._views(job), frames)
            except (HindsightError, OSError, RuntimeError) as exc:
                # No call id: the daemon's own log must not tell which calls are kept.
                self._reply(job, "failed", error=f"cannot spool a recording: {_quiet_error(exc)}")
                return
            self._reply(job, "spooled", entry=entry.name)
        elif job["keep"] is not None:
            try:
                frames = sum(end - begin for _, begin, end in job["extents"])
                keep = Keep.from_wire(job["keep"])
                committed = self.store.keep(keep, self._views(job), frames)
            except HindsightError as exc:
                self._reply(job, "failed", error=str(exc))
                return
            self._reply(job, "stored", fields=committed.to_log())
        for index in job["chunks"]:
            self.pool[index].fill(0)
            self._tick()
        self._reply(job, "zeroed")

    def _delete(self, job: dict[str, Any]) -> None:
        try:
            self.store.delete(job["call_id"], job["path"])
        except HindsightError as exc:
            self._reply(job, "failed", error=str(exc))
            return
        self._reply(job, "deleted")

    def _views(self, job: dict[str, Any]) -> Iterator[Int16Array]:
        for index, begin, end in job["extents"]:
            self._tick()
            yield chunk_frames(index, begin, end, self.pool, job["channels"])

    def _tick(self) -> None:
        if time.monotonic() - self._said >= HEARTBEAT:
            self._alive()

    def _alive(self) -> None:
        with self._send_lock:
            jobs.send(self.sock, {"step": "alive"})
            self._said = time.monotonic()

    def _reply(self, job: dict[str, Any], step: str, **fields: Any) -> None:
        with self._send_lock:
            jobs.send(self.sock, {"job": job.get("job"), "step": step, **fields})
            self._said = time.monotonic()


def _quiet_error(exc: BaseException) -> str:
    """What went wrong, without a key, URL or file name: they name the call (a kept one)."""
    if isinstance(exc, StoreRefused):
        return f"the object store refused: {exc.code} ({exc.status})"
    if isinstance(exc, StoreUnavailable):
        cause = exc.__cause__
        return "the object store is unreachable" + (
            f" ({type(cause).__name__})" if cause is not None else ""
        )
    if isinstance(exc, QuietError):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, HindsightError):
        return type(exc).__name__
    return f"internal error ({type(exc).__name__})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hindsight-worker", description="Hindsight's worker process; started by hindsightd."
    )
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--pool-fd", type=int, required=True)
    parser.add_argument("--pool-size", type=int, required=True)
    parser.add_argument("--chunk-samples", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--storage", help="the S3 backend's settings, as JSON")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.verbose)
    die_with_parent(args.parent)
    harden_process()
    priority = lower_priority()
    try:
        memory = PoolMemory.attach(args.pool_fd, args.pool_size)
    except HindsightError as exc:
        log.error("%s", exc)
        return 1
    sock = socket.socket(fileno=args.channel_fd)
    log.debug("worker up at %s", priority)
    s3 = None
    if args.storage:
        s3 = S3Store(args.state_dir, Settings.from_wire(json.loads(args.storage)))
    Worker(sock, memory.array(args.chunk_samples), Store(args.state_dir), s3).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
