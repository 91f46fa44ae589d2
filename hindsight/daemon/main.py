"""``hindsightd``: start-up, the control loop, signals and a clean shutdown.

Rules:

- Everything that can fail at start-up (config, commit log, pool, sources,
  socket) is done before ``daemon_started`` is logged: a broken daemon never
  starts half-way.
- Signal handlers only queue the signal (and wake the loop through the
  wakeup fd); the main loop acts on it. Every signal a sysadmin might send is
  handled and logged: SIGTERM, SIGINT and SIGQUIT stop cleanly, SIGHUP
  reloads the config (``reload``), SIGUSR1 logs a status line, the rest
  (SIGUSR2, SIGALRM, SIGTSTP, ...) are logged and ignored, so none of them
  kills the daemon with its live calls.
- Under systemd (``systemd``): READY=1 when up, STATUS= on change,
  WATCHDOG=1 while audio flows, STOPPING=1 when a stop begins.
- Two processes: this one keeps the call table, the audio sources, the
  control loop and the commit log; the worker process (``worker``, driven
  by the ``keeper`` thread) does everything slow to ended calls, reading
  them from the shared chunk pool (``memory``).
- Shutdown: stop taking calls, end every live call through the keeper
  (kept ones are committed, the rest wiped), wait for it, log
  ``daemon_stopped``, exit 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType

import zmq

from hindsight import __version__, checkpoint
from hindsight.clock import iso, parse_iso, utcnow
from hindsight.commitlog import LOG_NAME, CommitLog
from hindsight.config import Config, is_loopback, load_config, resolve_config_path
from hindsight.daemon import keyfile, logs, systemd
from hindsight.daemon.buffer import CHUNK_SAMPLES, Pool, chunk_count
from hindsight.daemon.calls import CallTable
from hindsight.daemon.epochs import Sampler
from hindsight.daemon.harden import harden_process
from hindsight.daemon.host import UMASK, check_host, make_state_dir
from hindsight.daemon.keeper import Keeper, process_spawner
from hindsight.daemon.lane import Lane
from hindsight.daemon.lifecycle import Lifecycle, finish_deletions, finish_store_deletions
from hindsight.daemon.memory import PoolMemory
from hindsight.daemon.metrics import Metrics
from hindsight.daemon.objects import ObjectIndex
from hindsight.daemon.pseudonym import Pseudonyms
from hindsight.daemon.recovery import settle_open_calls, settle_spooled_calls
from hindsight.daemon.reload import refusals
from hindsight.daemon.repaired import log_repairs
from hindsight.daemon.s3store import Settings
from hindsight.daemon.server import ClientKeys, ControlServer, Curve, load_server_keys
from hindsight.daemon.service import Service
from hindsight.daemon.shipper import Shipper, ShipperThread, ShipPolicy
from hindsight.daemon.sources import Source, loop_source
from hindsight.daemon.spool import Spool
from hindsight.errors import ConfigError, HindsightError, StoreError
from hindsight.objectstore import LockMode, ObjectStore, read_credentials
from hindsight.replies import MetricsSnapshot
from hindsight.retention import ledger_of

log = logging.getLogger("hindsight.daemon")

TICK_MS = 250
WORKER_START_SECONDS = 20.0

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# Sent by mistake, by a tool, or by a terminal: logged and ignored, never fatal. (SIGPIPE
# stays ignored, as Python sets it; SIGKILL and SIGSTOP cannot be caught.)
IGNORED_SIGNALS = (
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    signal.SIGTRAP,
)
HANDLED_SIGNALS = (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR1, *IGNORED_SIGNALS)


def build_sources(config: Config) -> list[Source]:
    if config.audio.source == "sounddevice":
        # Imported here: importing sounddevice initialises PortAudio, which the
        # file and synthetic sources (demos, tests, hosts without sound) do not need.
        from hindsight.daemon.capture import DeviceSource, check_devices

        check_devices(config.audio.devices, config.audio.samplerate)
        return [DeviceSource(config.audio, device) for device in config.audio.devices]
    return [loop_source(config.audio, device) for device in config.audio.devices]


def _forget(_: object) -> None:
    pass


def _deleted(commit_log: CommitLog, call_id: str) -> tuple[str, datetime] | None:
    """Why and when ``call_id``'s recording was deleted, from the log (through its index)."""
    entry = commit_log.deleted_entry(call_id)
    return None if entry is None else (str(entry["why"]), parse_iso(entry["time"]))


class Daemon:
    _parts: _Parts  # set by _run, before any signal is acted on

    def __init__(self, config: Config) -> None:
        self.config = config
        self._signals: list[int] = []

    def run(self) -> int:
        # Queue signals from the start, so that a stop during start-up still
        # ends with every call settled and daemon_stopped logged.
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._on_signal)
        # Before anything is created: nothing the daemon or its worker makes is for other users.
        os.umask(UMASK)
        # Before anything heavy: a pool this host cannot hold is refused, never tried.
        check_host(self.config)
        harden_process()
        state_dir = self.config.daemon.state_dir
        make_state_dir(state_dir)
        path = state_dir / LOG_NAME
        size = path.stat().st_size if path.exists() else 0
        # Usually only the lines since the last run; the whole log when it has no index yet.
        commit_log = CommitLog.open(path, systemd.StartProgress("checking the commit log", size))
        try:
            return self._run(commit_log)
        finally:
            commit_log.close()

    def _run(self, commit_log: CommitLog) -> int:
        count = chunk_count(self.config.buffer.memory_mb)
        memory = PoolMemory.create(count * CHUNK_SAMPLES * 2, self.config.buffer.require_lock)
        pool = Pool(self.config.buffer.memory_mb, data=memory.array(CHUNK_SAMPLES))
        sampler = Sampler(commit_log)
        table = CallTable(self.config, pool, known=commit_log.knows, draw=sampler.draw)
        state_dir, storage = self.config.daemon.state_dir, self.config.storage
        settings = _s3_settings(self.config) if storage.s3 else None
        spawn = process_spawner(memory, CHUNK_SAMPLES, state_dir, settings)
        keeper = Keeper(
            table, commit_log, self.config, spawn, hang_seconds=self.config.worker.hang_seconds
        )
        if storage.s3:
            limit = storage.s3_spool_limit_mb << 20
            keeper.lane = Lane(commit_log, Spool(state_dir), limit, keeper.store_failed)
        # Deletions are not kept: the log's index finds one when it is asked about.
        deleted = functools.partial(_deleted, commit_log)
        kept = commit_log.kept_entries()
        ledger = ledger_of(kept, _forget, deleted)
        objects = None
        if storage.s3 and storage.s3_bucket is not None:
            objects = ObjectIndex.of(storage.s3_bucket, kept)
            finish_store_deletions(commit_log, objects, keeper, storage.s3_erase_bypass)
        else:
            finish_deletions(ledger, commit_log, state_dir)
        del kept
        pseudonyms = Pseudonyms.open(self.config.daemon.state_dir)
        signing = keyfile.secret(
            self.config.daemon.state_dir,
            checkpoint.KEY_NAME,
            checkpoint.KEY_BYTES,
            "checkpoint key",
        )
        lifecycle = Lifecycle(
            self.config,
            ledger,
            commit_log,
            keeper,
            pseudonyms,
            objects=objects,
            store_ops=keeper if objects is not None else None,
        )
        sources = build_sources(self.config)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        server = ControlServer(context, self.config.daemon.control)
        keys = ClientKeys(self.config.clients)  # whom daemon.listen lets in; a reload updates it
        service = Service(
            self.config, table, keeper, commit_log, lambda: _states(sources), lifecycle
        )
        service.checkpoint_key = signing
        flow = systemd.Flow([source.name for source in sources])
        self._parts = _Parts(
            table, keeper, lifecycle, service, commit_log, sources, flow, keys, sampler
        )
        shipping = _log_shipper(self.config, commit_log)
        try:
            self._parts.listener = _listener(context, self.config, keys)
            if shipping is not None:
                commit_log.listen(shipping.noted)
                shipping.start(commit_log.last_seq)  # what an earlier run left goes at once
            self._start(commit_log, keeper, table, sources, pool)
            self._loop(server, service, table)
            self._shutdown(server, service, keeper, sources, commit_log)
            if shipping is not None:
                shipping.stop(commit_log.last_seq)  # the rest, daemon_stopped included
                shipping = None
        finally:
            if shipping is not None:
                shipping.stop()  # a failed start: the next start ships what is left
            for source in sources:
                source.stop()
            if self._parts.listener is not None:
                self._parts.listener.close()
            server.close()
            context.term()
        return 0

    def _start(
        self,
        commit_log: CommitLog,
        keeper: Keeper,
        table: CallTable,
        sources: list[Source],
        pool: Pool,
    ) -> None:
        flow = self._parts.flow
        for source in sources:
            source.start(
                flow.wrap(source.name, functools.partial(table.feed, source.name)),
                functools.partial(table.fill_silence, source.name),
            )
        keeper.start()
        limit = min(WORKER_START_SECONDS, self.config.worker.hang_seconds)
        if not keeper.wait_ready(limit):
            raise HindsightError(
                f"the worker process did not start within {limit:g} s "
                "(its messages, if any, are above)"
            )
        sha = self.config.sha256
        signing = self._parts.service.checkpoint_key
        assert signing is not None  # made by _run before the parts
        commit_log.append(
            "daemon_started",
            version=__version__,
            config_sha256=sha,
            checkpoint_key=checkpoint.public_key(signing),
        )
        log_repairs(commit_log, self.config.daemon.state_dir)  # what `audit repair` did
        if keeper.lane is not None:
            # Uploaded again in spool order, ahead of every call kept from now on.
            lane_upload = functools.partial(keeper.store, "upload", recovered=True)
            settle_spooled_calls(
                commit_log,
                self.config.daemon.state_dir,
                lambda name: lane_upload({"entry": name}),
            )
        else:
            settle_open_calls(commit_log, self.config.daemon.state_dir)
        # Before any call can start: its seed is committed in the log first.
        self._parts.sampler.open(self.config)
        log.info(
            "hindsightd %s up: %d lines, %d devices, pool of %d chunks, control at %s",
            __version__,
            len(self.config.lines),
            len(sources),
            pool.size,
            self.config.daemon.control,
        )
        _warn_if_pool_is_small(self.config, pool)
        _warn_if_unencrypted(self.config)
        _warn_if_no_s3_credentials(self.config)
        systemd.notify("READY=1")

    def _loop(self, server: ControlServer, service: Service, table: CallTable) -> None:
        waker_r, waker_w = socket.socketpair()
        waker_w.setblocking(False)
        # The wakeup fd makes a signal end the poll at once, not at the next tick.
        previous = signal.set_wakeup_fd(waker_w.fileno())
        poller = zmq.Poller()
        poller.register(server.socket, zmq.POLLIN)
        listener = self._parts.listener
        if listener is not None:
            poller.register(listener.socket, zmq.POLLIN)
        poller.register(waker_r, zmq.POLLIN)
        watch = PoolWatch(table)
        purger = Purger(service.lifecycle, self.config.retention.purge_interval_seconds)
        self._parts.purger = purger
        notifier = systemd.Notifier(
            self._parts.flow, systemd.watchdog_interval(), "NOTIFY_SOCKET" in os.environ
        )
        metrics = Metrics(
            self._snapshot, self.config.metrics.interval_seconds, self.config.metrics.textfile
        )
        self._parts.metrics = service.metrics = metrics
        try:
            while not self._stop_requested():
                events = dict(poller.poll(TICK_MS))
                if server.socket in events:
                    server.serve_pending(service.handle)
                if listener is not None and listener.socket in events:
                    listener.serve_pending(service.handle)
                if waker_r.fileno() in events:
                    waker_r.recv(4096)
                watch.check()
                now = time.monotonic()
                purger.check(now)
                metrics.check(now)
                self._parts.sampler.tick(self.config)
                states = _states(self._parts.sources)
                for name in notifier.tick(now, self._status_line, states):
                    log.error(
                        "no audio from device %s for %.0f s: its capture is stuck (under "
                        "systemd the watchdog restarts the service)",
                        name,
                        systemd.STALL_SECONDS,
                    )
        finally:
            signal.set_wakeup_fd(previous)
            waker_r.close()
            waker_w.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _stop_requested(self) -> bool:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if signum in STOP_SIGNALS:
                log.info("%s: stopping", name)
                return True
            if signum == signal.SIGHUP:
                self._reload()
            elif signum == signal.SIGUSR1:
                log.info("SIGUSR1: %s", self._status_line())
            else:
                log.warning("%s received: ignored (SIGTERM stops the daemon, SIGHUP reloads)", name)
        return False

    def _snapshot(self) -> MetricsSnapshot:
        parts = self._parts
        table, keeper = parts.table, parts.keeper
        error = keeper.last_error
        return MetricsSnapshot(
            taken=iso(utcnow()),
            pool_chunks=table.pool.size,
            pool_free=table.pool.free,
            pool_steals=table.pool_steals,
            dropped_frames=table.dropped_frames,
            live_calls=table.live_count(),
            worker_restarts=keeper.restarts,
            backlog=keeper.backlog(),
            store_failures=keeper.failures,
            last_store_error=None if error is None else error[0],
            last_store_error_at=None if error is None else error[1],
            devices=_states(parts.sources),
        )

    def _status_line(self) -> str:
        parts = self._parts
        live = parts.table.live_count()
        pid = parts.keeper.state().pid
        worker = f"worker pid {pid}" if pid is not None else "worker restarting"
        return f"{live} live call(s) on {len(self.config.lines)} line(s); {worker}"

    def _reload(self) -> None:
        """SIGHUP: read the config file again; apply it whole, or keep the old one."""
        parts, path = self._parts, self.config.path
        if path is None:
            log.error("SIGHUP: this daemon was not started from a file; nothing to reload")
            return
        try:
            new = load_config(path)  # a file it cannot read is a ConfigError too
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("SIGHUP: config not reloaded, the old one stays: %s", problem)
            return
        unsettled = parts.table.live_calls() + parts.keeper.waiting_calls()
        refused = refusals(self.config, new, unsettled, parts.lifecycle.kept_for)
        for reason in refused:
            log.error("SIGHUP: config not reloaded, the old one stays: %s", reason)
        if refused:
            return
        parts.table.reconfigure(new)
        parts.keeper.config = new
        parts.keeper.hang_seconds = new.worker.hang_seconds
        parts.lifecycle.reconfigure(new)
        parts.service.config = new
        parts.keys.update(new.clients)  # daemon.listen: a removed key is refused from now on
        if parts.purger is not None:
            parts.purger.interval = new.retention.purge_interval_seconds
        if parts.metrics is not None:
            parts.metrics.interval = new.metrics.interval_seconds
            parts.metrics.textfile = new.metrics.textfile
        self.config = new
        try:
            parts.commit_log.append("config_reloaded", config_sha256=new.sha256)
        except HindsightError as exc:
            log.error("config reloaded, but the commit log could not say so: %s", exc)
        parts.sampler.reconfigure(new)  # a new one_in, purpose or auditors: a new epoch
        log.info("SIGHUP: config reloaded (sha256 %s): %d line(s)", new.sha256, len(new.lines))
        _warn_if_unencrypted(new)

    def _shutdown(
        self,
        server: ControlServer,
        service: Service,
        keeper: Keeper,
        sources: list[Source],
        commit_log: CommitLog,
    ) -> None:
        systemd.notify("STOPPING=1")
        service.end_all()
        for source in sources:
            source.stop()
        keeper.finish()
        # Keep answering while the last calls are written: clients get
        # not_allowed rather than a time-out.
        while not keeper.wait(TICK_MS / 1000):
            server.serve_pending(service.handle)
            if self._parts.listener is not None:
                self._parts.listener.serve_pending(service.handle)
        self._parts.sampler.end()  # every call is settled: the last epochs are revealed
        if keeper.lane is not None and not keeper.deletions_pending():
            commit_log.deletions_done()  # the store did every deletion logged so far
        commit_log.append("daemon_stopped", version=__version__)
        log.info("hindsightd stopped")


@dataclass
class _Parts:
    """What a reload reaches into; built once by ``Daemon._run``."""

    table: CallTable
    keeper: Keeper
    lifecycle: Lifecycle
    service: Service
    commit_log: CommitLog
    sources: list[Source]
    flow: systemd.Flow
    keys: ClientKeys
    sampler: Sampler
    purger: Purger | None = None
    metrics: Metrics | None = None
    listener: ControlServer | None = None


def _listener(
    context: zmq.Context[zmq.Socket[bytes]], config: Config, keys: ClientKeys
) -> ControlServer | None:
    """The CURVE server on ``daemon.listen`` for ``[[clients]]``; None without ``listen``."""
    if config.daemon.control.startswith("tcp://") and not is_loopback(config.daemon.control):
        # Allowed once a client key is configured, but still without authentication.
        log.warning(
            "daemon.control %s is not loopback and has no authentication: anyone who can "
            "reach it can keep or end every call; give remote clients daemon.listen instead",
            config.daemon.control,
        )
    if config.daemon.listen is None or config.daemon.curve_secret_key_file is None:
        return None
    public, secret = load_server_keys(config.daemon.curve_secret_key_file)
    server = ControlServer(context, config.daemon.listen, Curve(public, secret, keys))
    log.info(
        "remote clients: CURVE at %s, %d client key(s), server key %s",
        config.daemon.listen,
        len(config.clients),
        public.decode("ascii"),
    )
    return server


class Purger:
    """Purges due recordings from the control loop: at start-up, then every ``interval`` s."""

    def __init__(self, lifecycle: Lifecycle, interval: float) -> None:
        self.lifecycle = lifecycle
        self.interval = interval
        self.next = 0.0

    def check(self, now: float) -> None:
        if now < self.next:
            return
        self.next = now + self.interval
        try:
            deleted = self.lifecycle.purge()
        except HindsightError as exc:
            log.error("purge failed, next try in %.0f s: %s", self.interval, exc)
            return
        if deleted:
            log.info("purge: %d expired recording(s) deleted", len(deleted))


class PoolWatch:
    """Logs, from the control loop, what the audio thread may not: the pool running dry."""

    def __init__(self, table: CallTable) -> None:
        self.table = table
        self.seen_steals = 0
        self.seen_drops = 0

    def check(self) -> None:
        steals, drops = self.table.pool_steals, self.table.dropped_frames
        if steals > self.seen_steals:
            log.warning(
                "chunk pool exhausted: rolled %d chunk(s) off the longest live calls "
                "(raise buffer.memory_mb)",
                steals - self.seen_steals,
            )
        if drops > self.seen_drops:
            log.warning(
                "chunk pool exhausted: %d frames could not be held", drops - self.seen_drops
            )
        self.seen_steals, self.seen_drops = steals, drops


def _warn_if_pool_is_small(config: Config, pool: Pool) -> None:
    """A pool that cannot hold every line at max_call_seconds rolls early under load."""
    samples_per_second = config.audio.samplerate * sum(len(line.channels) for line in config.lines)
    seconds = pool.size * pool.chunk_samples / samples_per_second
    if seconds < config.buffer.max_call_seconds:
        log.warning(
            "buffer.memory_mb holds %.0f s of audio with every line live, less than "
            "buffer.max_call_seconds (%.0f s): long calls will roll early under load",
            seconds,
            config.buffer.max_call_seconds,
        )


def _lock_mode(config: Config) -> LockMode:
    return "COMPLIANCE" if config.storage.s3_lock_mode == "COMPLIANCE" else "GOVERNANCE"


def _log_shipper(config: Config, commit_log: CommitLog) -> ShipperThread | None:
    """With the S3 backend, a thread that ships the log's closed segments to the host's
    prefix (``storage.s3_ship_lines`` lines or ``s3_ship_seconds`` after the first line that
    waits, and the rest at a clean stop); it only does I/O, never holding the log's lock."""
    storage = config.storage
    if not storage.s3:
        return None
    assert storage.s3_bucket is not None
    path = storage.s3_credentials_file
    try:
        credentials = None if path is None else read_credentials(path)
    except StoreError as exc:
        raise HindsightError(f"storage.s3_credentials_file: {exc}") from exc
    mode = _lock_mode(config)
    store = ObjectStore(
        storage.s3_endpoint, storage.s3_bucket, storage.s3_prefix, mode, credentials
    )
    shipper = Shipper(
        store,
        commit_log.path,
        retention_days=storage.s3_log_retention_days,
        max_lines=storage.s3_ship_lines,
    )
    return ShipperThread(shipper, ShipPolicy(storage.s3_ship_lines, storage.s3_ship_seconds))


def _s3_settings(config: Config) -> str:
    """The S3 backend's settings for the worker's command line (no secret: a file's path)."""
    storage = config.storage
    assert storage.s3_endpoint is not None and storage.s3_bucket is not None
    mode = _lock_mode(config)
    credentials = storage.s3_credentials_file
    settings = Settings(
        storage.s3_endpoint,
        storage.s3_bucket,
        storage.s3_prefix,
        mode,
        None if credentials is None else str(credentials),
    )
    return json.dumps(settings.to_wire())


def _warn_if_no_s3_credentials(config: Config) -> None:
    storage = config.storage
    if (
        storage.s3
        and storage.s3_credentials_file is None
        and not (os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"))
    ):
        log.warning(
            "storage.backend is s3 without s3_credentials_file, and AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY are not set: uploads will fail unless boto3 finds "
            "credentials elsewhere; kept calls wait in the spool"
        )


def _warn_if_unencrypted(config: Config) -> None:
    bare = config.unencrypted()
    if bare:
        log.warning(
            "recordings kept for %s are NOT encrypted: anyone who reads the disk can play them; "
            "list age recipients in storage.recipients (and set storage.require_encryption)",
            ", ".join(bare),
        )


def _states(sources: list[Source]) -> dict[str, str]:
    return {source.name: source.state() for source in sources}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hindsightd", description="Hindsight call-recording daemon (runs in the foreground)."
    )
    parser.add_argument("--config", help="config file (default $HINDSIGHT_CONFIG, then /etc)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--list-devices", action="store_true", help="list the input devices PortAudio sees"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"hindsightd {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.verbose)
    if args.list_devices:
        return _list_devices()
    path = resolve_config_path(args.config)
    try:
        config = load_config(path)
        if args.check_config:
            check_host(config)
            print(f"{path}: ok ({len(config.lines)} lines)")
            return 0
        return Daemon(config).run()
    except ConfigError as exc:
        out = sys.stdout if args.check_config else sys.stderr
        for problem in exc.problems:
            print(problem, file=out)
        return 2
    except (HindsightError, OSError) as exc:
        print(f"hindsightd: {exc}", file=sys.stderr)
        return 1


def _list_devices() -> int:
    from hindsight.daemon.capture import describe_input_devices

    try:
        print(describe_input_devices())
    except HindsightError as exc:
        print(f"hindsightd: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
