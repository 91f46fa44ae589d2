"""The systemd unit, systemd/hindsightd.service: rated, verified, and true to the daemon.

- ``systemd-analyze security --offline=true`` rates it 2.0 or lower ("OK"); offline mode reads
  the file alone, so no systemd needs to run as PID 1.
- ``systemd-analyze verify`` finds nothing wrong with it but the one thing a test machine
  cannot have: hindsightd installed where ExecStart= says. (verify does not look up User=;
  the user comes from systemd/sysusers.d/hindsight.conf, which ``systemd-sysusers`` applies
  to a scratch root below.)
- The real daemon, under strace, through a whole call cycle (start, a kept and encrypted
  call, a wiped call, status, SIGTERM) on the real PortAudio path and on a tcp:// control
  socket: every system call it and its worker make passes the unit's SystemCallFilter=, as
  ``systemd-analyze syscall-filter`` expands it; every socket is of a family the unit
  allows; nothing it does would trip RestrictRealtime=, RestrictNamespaces= or (when set)
  MemoryDenyWriteExecute=; only the main process talks to the notify socket (NotifyAccess=).
- LimitMEMLOCK= holds the production config's pool, and the unit's paths, user and groups
  match the production config and the sysusers file.

systemd-analyze, systemd-sysusers (Debian package systemd) and strace are installed by
``./run test``; without them these tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

from hindsight.config import load_config
from hindsight.daemon.buffer import CHUNK_SAMPLES, chunk_count
from tests.harness import BIN, Daemon
from tests.pulse import PulseServer, tool, unavailable

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "hindsightd.service"
SYSUSERS = ROOT / "systemd" / "sysusers.d" / "hindsight.conf"
PRODUCTION = ROOT / "config" / "hindsight.toml"
MAX_EXPOSURE = 2.0


def analyze() -> str:
    return tool("systemd-analyze", "systemd")


def run(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


# --- reading the unit ---


def unit_entries(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in file order; continuation lines joined."""
    entries: list[tuple[str, str, str]] = []
    section, pending = "", ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals, f"{path}: not an assignment: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_entries() if s == section and k == key]


def value(key: str, section: str = "Service") -> str:
    """The effective (last) assignment of ``key``."""
    found = values(key, section)
    assert found, f"{UNIT.name} sets no {key}="
    return found[-1]


def yes(key: str) -> bool:
    found = values(key)
    return bool(found) and found[-1].lower() in {"yes", "true", "on", "1"}


_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def limit_bytes(text: str) -> list[float]:
    """A size rlimit as systemd reads it (``1100M``, ``infinity``, ``soft:hard``), in bytes."""
    limits: list[float] = []
    for part in text.split(":"):
        if part == "infinity":
            limits.append(float("inf"))
            continue
        match = re.fullmatch(r"(\d+)([BKMGT]?)", part)
        assert match, f"LimitMEMLOCK={text}: not a size"
        limits.append(int(match[1]) * _SIZE_UNITS[match[2]])
    return limits


def seconds(text: str) -> float:
    """A systemd time span such as ``30s``, ``2min``, ``500ms`` or ``30``."""
    total = 0.0
    scale = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "min": 60.0, "m": 60.0, "h": 3600.0}
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * scale[unit]
    return total


# --- system call groups and the unit's filter ---


def syscall_groups() -> dict[str, list[str]]:
    """Every group ``systemd-analyze syscall-filter`` knows: its members, groups included."""
    listed = run(analyze(), "syscall-filter")
    assert listed.returncode == 0, listed.stderr
    groups: dict[str, list[str]] = {}
    members: list[str] | None = None
    for line in listed.stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif not line.startswith(" "):
            members = None  # a blank line, or the closing "# Unlisted ..." section
        elif members is not None and not line.strip().startswith("#"):
            members.append(line.strip())
    assert "@system-service" in groups and "@default" in groups, listed.stdout[:2000]
    return groups


def expand(item: str, groups: dict[str, list[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item.split(":")[0]}  # "name:errno" names the call, then its errno
    assert item in groups, f"{item} is not a group systemd-analyze knows"
    names: set[str] = set()
    for member in groups[item]:
        names |= expand(member, groups)
    return names


@dataclass(frozen=True)
class SyscallFilter:
    """SystemCallFilter= as systemd builds it: an allow list (``allow``) or a deny list."""

    allow: bool
    names: frozenset[str]

    def permits(self, name: str) -> bool:
        return (name in self.names) == self.allow


def syscall_filter(assignments: list[str], groups: dict[str, list[str]]) -> SyscallFilter:
    """Assignments in order, as systemd reads them: the first decides allow or deny list (an
    allow list starts from @default); after it, "~" entries take from an allow list and add to
    a deny list, plain ones the other way round; an empty assignment starts over."""
    allow: bool | None = None
    names: set[str] = set()
    for assignment in assignments:
        if not assignment:
            allow, names = None, set()
            continue
        deny = assignment.startswith("~")
        if allow is None:
            allow = not deny
            if allow:
                names |= expand("@default", groups)
        for item in assignment.removeprefix("~").split():
            if deny == allow:
                names -= expand(item, groups)
            else:
                names |= expand(item, groups)
    assert allow is not None, "the unit has no SystemCallFilter="
    return SyscallFilter(allow, frozenset(names))


def address_families() -> set[str]:
    (families,) = values("RestrictAddressFamilies")
    assert not families.startswith("~"), "an allow list of families is expected"
    return set(families.split())


# --- strace ---

# "PID name(args..." begins a call; one that blocks goes on in a later "<... name resumed>"
# line, which names no call the first line did not.
_CALL = re.compile(r"^(\d+)\s+([a-z_][a-z0-9_]*)\((.*)$")


@dataclass(frozen=True)
class Call:
    pid: int
    name: str
    args: str  # as strace printed them when the call began

    def __str__(self) -> str:
        return f"{self.pid} {self.name}({self.args[:150]}"


def read_trace(path: Path) -> list[Call]:
    calls: list[Call] = []
    for line in path.read_text(errors="replace").splitlines():
        match = _CALL.match(line)
        if match:
            calls.append(Call(int(match[1]), match[2], match[3]))
    return calls


def strace() -> str:
    path = tool("strace", "strace")
    probe = run(path, "-D", "-f", "-q", "-o", os.devnull, "--", "true")
    if probe.returncode != 0:
        unavailable(f"strace cannot trace here: {probe.stderr.strip()}")
    return path


def wait_for_tracer(output: Path, timeout: float = 30.0) -> None:
    """Wait until the detached strace (-D) writing ``output`` has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_is_live_tracer(pid, output) for pid in os.listdir("/proc") if pid.isdigit()):
            return
        time.sleep(0.05)
    raise AssertionError(f"strace writing {output} did not finish within {timeout} s")


def _is_live_tracer(pid: str, output: Path) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return Path(argv[0].decode()).name == "strace" and str(output).encode() in argv and state != "Z"


def _root_only_no_op(call: Call) -> bool:
    """SQLite (the commit log's index) gives its journal the database file's owner, and only
    when it runs as root, as this test does: ``fchown(fd, 0, 0)`` by root is a no-op. The
    unit runs as ``User=hindsight``, where SQLite makes no such call (and under the filter
    it would get EPERM, which SQLite ignores)."""
    no_op = re.match(r"\d+, 0, 0\)", call.args) is not None
    return os.geteuid() == 0 and call.name == "fchown" and no_op


def problems(calls: list[Call], groups: dict[str, list[str]]) -> list[str]:
    """What the unit would refuse of ``calls``, one line per kind of refusal."""
    found: list[str] = []
    allowed = syscall_filter(values("SystemCallFilter"), groups)
    refused: dict[str, Call] = {}
    for call in calls:
        if not allowed.permits(call.name) and not _root_only_no_op(call):
            refused.setdefault(call.name, call)
    found += [f"SystemCallFilter= refuses {name}: {call}" for name, call in refused.items()]
    families = address_families()
    for call in calls:
        if call.name in {"socket", "socketpair"}:
            family = call.args.split(",")[0].strip()
            if family not in families:
                found.append(f"RestrictAddressFamilies= refuses {family}: {call}")
    if yes("MemoryDenyWriteExecute"):
        for call in calls:
            wx = call.name in {"mmap", "mmap2"} and {"PROT_WRITE", "PROT_EXEC"} <= set(
                re.findall(r"PROT_[A-Z]+", call.args)
            )
            if wx or (call.name in {"mprotect", "pkey_mprotect"} and "PROT_EXEC" in call.args):
                found.append(f"MemoryDenyWriteExecute= refuses {call}")
    if yes("RestrictRealtime"):
        for call in calls:
            realtime = re.search(r"SCHED_(FIFO|RR|DEADLINE)", call.args)
            if call.name in {"sched_setscheduler", "sched_setattr"} and realtime:
                found.append(f"RestrictRealtime= refuses {call}")
    if yes("RestrictNamespaces"):
        for call in calls:
            new = call.name in {"clone", "clone3"} and "CLONE_NEW" in call.args
            if new or call.name in {"unshare", "setns"}:
                found.append(f"RestrictNamespaces= refuses {call}")
    return found


# --- sd_notify ---


@dataclass(frozen=True)
class Notice:
    pid: int
    text: str


class NotifySocket:
    """A stand-in for systemd's notify socket: what was sent, and by which process. A thread
    reads it all along, as systemd would: a full queue (10 datagrams) would block the sender."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="hs-notify-"))  # short: sun_path is 108
        self.path = self.folder / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.1)
        self.notices: list[Notice] = []
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        size = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self.closing.is_set():
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, size)
            except TimeoutError:
                continue
            pid = next(
                struct.unpack("3i", cmsg[:12])[0]
                for level, kind, cmsg in ancillary
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            )
            self.notices.append(Notice(pid, data.decode()))

    def received(self) -> list[Notice]:
        """Everything sent so far (give the reader one timeout to catch up)."""
        time.sleep(0.2)
        return list(self.notices)

    def close(self) -> None:
        self.closing.set()
        self.reader.join()
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


# --- the call cycle ---


@dataclass
class Cycle:
    calls: list[Call]
    notices: list[Notice]
    daemon_pid: int


def traced_cycle(
    tmp: Path, notify: NotifySocket, env: dict[str, str] | None = None, **over: Any
) -> Cycle:
    """The real daemon under strace: start, a kept (encrypted) call, a wiped one, status,
    SIGTERM; the system calls of the daemon, its worker and every program they ran."""
    output = tmp / "strace.out"
    recipient = pyrage.x25519.Identity.generate().to_public()
    watchdog = int(seconds(value("WatchdogSec")) * 1_000_000)
    d = Daemon(
        tmp,
        env={**(env or {}), "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog)},
        # -D: strace runs as a detached grandchild, so the harness's process is the daemon
        # itself and SIGTERM reaches it, as systemd's would.
        wrap=(strace(), "-D", "-f", "-q", "-o", str(output), "--"),
        extra=f'[storage]\nrecipients = ["{recipient}"]\n',
        **over,
    )
    try:
        d.start(wait=False)
        d.wait_ready(timeout=60.0)  # strace slows the start
        wait_running(d)
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(1.0)
        d.ok({"op": "mark", "line": "desk-01"})
        d.ok({"op": "end", "line": "desk-01"})
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(0.5)
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed", timeout=30.0)
        d.wait_for_event("call_wiped", timeout=30.0)
        d.ok({"op": "status"})
        assert d.stop(timeout=60.0) == 0, d.stderr()
    finally:
        d.__exit__()
    assert d.proc is not None
    wait_for_tracer(output)
    (committed,) = d.events("call_committed")
    assert (d.state / committed["path"]).read_bytes().startswith(b"age-encryption.org/v1")
    return Cycle(read_trace(output), notify.received(), d.proc.pid)


def wait_running(d: Daemon, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {device["state"] for device in d.ok({"op": "status"})["devices"]} == {"running"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"the audio devices never ran: {d.stderr()}")


def check_cycle(cycle: Cycle) -> None:
    names = {call.name for call in cycle.calls}
    # The trace covers what matters: both processes, locking, the worker's priority.
    assert {"execve", "memfd_create", "mlock", "sched_setscheduler", "prctl"} <= names, names
    assert len({call.pid for call in cycle.calls if call.name == "execve"}) >= 2, "no worker"
    found = problems(cycle.calls, syscall_groups())
    assert not found, "\n".join(found)
    # Type=notify with NotifyAccess=main: READY=1 comes, and only the main process notifies.
    assert "READY=1" in [line for n in cycle.notices for line in n.text.splitlines()]
    assert {n.pid for n in cycle.notices} == {cycle.daemon_pid}, cycle.notices


def test_every_system_call_on_the_portaudio_path_passes_the_units_filter(
    pulse: PulseServer, tmp_path: Path, notify_socket: NotifySocket
) -> None:
    cycle = traced_cycle(
        tmp_path,
        notify_socket,
        env=pulse.client_env(),
        source="sounddevice",
        device="pulse",
        channels=2,
    )
    check_cycle(cycle)


def test_every_system_call_with_a_tcp_control_socket_passes_the_units_filter(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cycle = traced_cycle(tmp_path, notify_socket, control=f"tcp://127.0.0.1:{port}")
    check_cycle(cycle)
    assert any(c.name == "socket" and c.args.startswith("AF_INET") for c in cycle.calls)


def test_the_config_check_before_start_passes_the_units_filter(tmp_path: Path) -> None:
    """ExecStartPre= runs ``hindsightd --check-config`` in the same sandbox."""
    output = tmp_path / "strace.out"
    config = Daemon(tmp_path).config
    checked = run(
        strace(),
        "-f",
        "-q",
        "-o",
        str(output),
        "--",
        str(BIN / "hindsightd"),
        "--config",
        str(config),
        "--check-config",
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    calls = read_trace(output)
    assert calls and calls[0].name == "execve"
    found = problems(calls, syscall_groups())
    assert not found, "\n".join(found)


def test_the_filter_is_read_as_systemd_reads_it() -> None:
    """The expansion the strace tests rely on: groups nest, "~" takes away, order matters."""
    groups = {
        "@default": ["exit"],
        "@a": ["read", "@b"],
        "@b": ["write", "mbind"],
    }
    allow = syscall_filter(["@a", "~@b", "mbind"], groups)
    assert allow.names == {"exit", "read", "mbind"} and allow.permits("mbind")
    assert not allow.permits("write")
    deny = syscall_filter(["~@a", "write"], groups)
    assert not deny.permits("read") and deny.permits("write") and deny.permits("exit")
    assert syscall_filter(["~@a", "", "@b"], groups).names == {"exit", "write", "mbind"}
    real = syscall_filter(values("SystemCallFilter"), syscall_groups())
    assert real.allow and real.permits("sched_setscheduler") and not real.permits("setrlimit")
    assert not real.permits("mount") and not real.permits("setuid")


# --- systemd-analyze ---


def test_the_unit_is_rated_ok_by_systemd_analyze_security() -> None:
    rated = run(analyze(), "security", "--offline=true", str(UNIT))
    report = rated.stdout + rated.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)", report)
    assert match, report
    assert float(match[1]) <= MAX_EXPOSURE, report
    assert match[2] == "OK", report


def test_systemd_analyze_verify_finds_nothing_but_the_missing_binary() -> None:
    """The only complaint allowed is the one about ExecStart='s binary, and only when it is
    not installed here; every other line (an unknown key, a value systemd cannot parse, a
    missing dependency) fails the test."""
    verified = run(analyze(), "verify", str(UNIT))
    binaries = {
        v.split()[0].lstrip("-@:+!")
        for s, k, v in unit_entries()
        if s == "Service" and k.startswith("Exec")
    }
    allowed = {
        f"{UNIT.name}: Command {binary} is not executable: No such file or directory"
        for binary in binaries
        if not os.access(binary, os.X_OK)
    }
    lines = [line for line in (verified.stdout + verified.stderr).splitlines() if line.strip()]
    unexpected = [line for line in lines if line not in allowed]
    assert not unexpected, "\n".join(lines)
    assert verified.returncode == (1 if lines else 0), lines


WITNESS = UNIT.parent / "hindsight-witness.service"


def test_the_witness_units_verify_and_are_rated_ok() -> None:
    """The auditor's witness (service and timer): nothing wrong but the binary, when it is not
    installed here, and hardened as well as the daemon."""
    timer = WITNESS.with_suffix(".timer")
    verified = run(analyze(), "verify", str(WITNESS), str(timer))
    lines = [line for line in (verified.stdout + verified.stderr).splitlines() if line.strip()]
    missing = f"{WITNESS.name}: Command /usr/local/bin/hindsight is not executable"
    assert all(line.startswith(missing) for line in lines), "\n".join(lines)
    assert "OnUnitActiveSec=5min" in timer.read_text()
    rated = run(analyze(), "security", "--offline=true", str(WITNESS))
    report = rated.stdout + rated.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\S+)", report)
    assert match and float(match[1]) <= MAX_EXPOSURE, report


# --- the unit, the config and the user ---


def test_the_memory_lock_limit_holds_the_production_pool() -> None:
    config = load_config(PRODUCTION)
    pool = chunk_count(config.buffer.memory_mb) * CHUNK_SAMPLES * 2
    limits = limit_bytes(value("LimitMEMLOCK"))
    assert all(limit >= pool for limit in limits), (value("LimitMEMLOCK"), pool)
    assert config.buffer.require_lock, "production refuses a pool it cannot lock"
    assert value("LimitCORE") == "0"


def test_the_units_paths_are_the_production_configs() -> None:
    config = load_config(PRODUCTION)
    for command in (value("ExecStart"), value("ExecStartPre")):
        argv = command.split()
        assert argv[argv.index("--config") + 1] == "/etc/hindsight/hindsight.toml"
    assert "--check-config" in value("ExecStartPre").split()
    assert config.daemon.state_dir == Path("/var/lib") / value("StateDirectory")
    assert config.daemon.control.startswith(f"ipc:///run/{value('RuntimeDirectory')}/")
    assert value("StateDirectoryMode") == value("RuntimeDirectoryMode") == "0750"
    assert value("UMask") == "0027"


def sysusers_entries() -> list[list[str]]:
    rows = []
    for line in SYSUSERS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            rows.append(re.findall(r'"[^"]*"|\S+', line))
    return rows


def test_the_units_user_and_groups_come_from_the_sysusers_file(tmp_path: Path) -> None:
    user, group = value("User"), value("Group")
    rows = sysusers_entries()
    users = [row for row in rows if row[0] == "u"]
    assert [row[1] for row in users] == [user]
    # "u NAME -" makes a group of the same name too, unless the id names another group.
    (row,) = users
    declared = row[2].partition(":")[2] if ":" in row[2] else row[1]
    groups = [r[1] for r in rows if r[0] == "g"]
    assert group == declared or group in groups, (group, rows)
    members = {r[2] for r in rows if r[0] == "m" and r[1] == user}
    assert set(" ".join(values("SupplementaryGroups")).split()) <= members == {"audio"}
    # And systemd-sysusers makes them so, in a scratch root that starts from this host's.
    sysusers = tool("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        shutil.copy(Path("/etc") / name, tmp_path / "etc" / name)
    made = run(sysusers, f"--root={tmp_path}", str(SYSUSERS))
    assert made.returncode == 0, made.stdout + made.stderr
    passwd = {
        r.split(":")[0]: r.split(":") for r in (tmp_path / "etc/passwd").read_text().splitlines()
    }
    table = {
        r.split(":")[0]: r.split(":") for r in (tmp_path / "etc/group").read_text().splitlines()
    }
    assert passwd[user][3] == table[group][2], "the user's primary group is Group="
    assert int(passwd[user][2]) < 1000, "a system user"
    assert passwd[user][6].endswith("nologin")
    assert user in table["audio"][3].split(",")
