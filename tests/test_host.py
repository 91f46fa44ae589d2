from __future__ import annotations

import logging
import os
import resource
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hindsight.daemon.host import make_state_dir, memory_problems, state_dir_problems
from hindsight.errors import ConfigError
from tests.harness import BIN, Daemon, config_text
from tests.pulse import unavailable

MIB = 1024 * 1024
MAX_POOL_MB = 1048576  # the schema's maximum: 1 TiB, more than any test machine has

# --- the state folder, in-process ---


def test_a_state_dir_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")

    assert state_dir_problems(tmp_path / "state") == [
        f"daemon.state_dir: {tmp_path}/state is a file, not a folder"
    ]


def test_a_state_dir_under_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")

    assert state_dir_problems(tmp_path / "file" / "a" / "state") == [
        f"daemon.state_dir: {tmp_path}/file/a/state is under {tmp_path}/file, "
        "which is a file, not a folder"
    ]


def test_an_existing_or_creatable_state_dir_is_no_problem(tmp_path: Path) -> None:
    assert state_dir_problems(tmp_path) == []
    assert state_dir_problems(tmp_path / "a" / "b" / "state") == []


@pytest.mark.parametrize("mask", [0o000, 0o077], ids=oct)
def test_make_state_dir_creates_it_and_its_parents_private(tmp_path: Path, mask: int) -> None:
    state = tmp_path / "a" / "state"

    old = os.umask(mask)
    try:
        make_state_dir(state)
        make_state_dir(state)  # an existing folder is fine
    finally:
        os.umask(old)

    # 0750 exactly: nothing for other users, and the group (auditors) keeps read under any umask.
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o750


def test_an_existing_state_dir_open_to_others_is_tightened_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o775)

    with caplog.at_level(logging.WARNING):
        make_state_dir(state)

    assert stat.S_IMODE(state.stat().st_mode) == 0o770  # only the other users' bits go
    assert f"{state} was open to other users (mode 0775); now 0770" in caplog.text
    caplog.clear()
    make_state_dir(state)
    assert not caplog.text  # once tight, nothing more to say


def test_make_state_dir_in_the_way_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")

    with pytest.raises(ConfigError) as caught:
        make_state_dir(tmp_path / "state")

    assert caught.value.problems == [f"daemon.state_dir: {tmp_path}/state is a file, not a folder"]


def test_make_state_dir_where_nothing_can_be_created_is_a_config_error() -> None:
    # /proc is a folder, so nothing looks wrong until mkdir fails: the errno becomes the message.
    with pytest.raises(ConfigError) as caught:
        make_state_dir(Path("/proc/hindsight-test/state"))

    assert caught.value.problems == [
        "daemon.state_dir: cannot create /proc/hindsight-test/state: No such file or directory"
    ]


# --- memory, in-process with fake /proc files ---


def fake_proc(tmp_path: Path, available_kib: int | None, vm_size_kib: int = 0) -> dict[str, Any]:
    meminfo = tmp_path / "meminfo"
    status = tmp_path / "status"
    lines = ["MemTotal:       99999999 kB", "MemFree:          100000 kB"]
    if available_kib is not None:
        lines.append(f"MemAvailable:   {available_kib:>8} kB")
    meminfo.write_text("\n".join(lines) + "\n")
    status.write_text(f"Name:\tpython\nVmPeak:\t99999999 kB\nVmSize:\t{vm_size_kib:>8} kB\n")
    return {"meminfo": meminfo, "status": status, "address_limit": resource.RLIM_INFINITY}


def test_a_pool_bigger_than_available_memory_is_a_problem(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, available_kib=1500 * 1024)

    assert memory_problems(2048, **proc) == [
        "buffer.memory_mb: 2048 MiB is more than this machine has available (1500 MiB)"
    ]
    assert memory_problems(1500, **proc) == []


def test_a_pool_beyond_the_address_space_limit_is_a_problem(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, available_kib=None, vm_size_kib=1000 * 1024)

    problems = memory_problems(2048, **(proc | {"address_limit": 3000 * MIB}))

    assert problems == [
        "buffer.memory_mb: 2048 MiB is more than the address-space limit (ulimit -v) "
        "leaves this process (2000 MiB)"
    ]
    assert memory_problems(2000, **(proc | {"address_limit": 3000 * MIB})) == []


def test_unreadable_proc_files_are_no_problem(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    assert memory_problems(2048, meminfo=missing, status=missing, address_limit=MIB) == [
        "buffer.memory_mb: 2048 MiB is more than the address-space limit (ulimit -v) "
        "leaves this process (1 MiB)"
    ]
    assert memory_problems(2048, meminfo=missing, address_limit=resource.RLIM_INFINITY) == []


def test_a_pool_bigger_than_this_machine_is_a_problem() -> None:
    [problem, *_] = memory_problems(MAX_POOL_MB)

    assert problem.startswith(f"buffer.memory_mb: {MAX_POOL_MB} MiB is more than this machine")


# --- end to end, through the real hindsightd ---


def write_config(tmp_path: Path, state_dir: str | Path, **over: Any) -> Path:
    text = config_text(tmp_path, **over).replace(
        'state_dir = "state"', f'state_dir = "{state_dir}"'
    )
    path = tmp_path / "hindsight.toml"
    path.write_text(text)
    return path


def hindsightd(
    config: Path,
    *args: str,
    wrap: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*wrap, str(BIN / "hindsightd"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        preexec_fn=preexec_fn,
    )


def refused(result: subprocess.CompletedProcess[str], output: str, expected: str) -> None:
    assert result.returncode == 2, result
    assert expected in output, result
    assert "Traceback" not in result.stderr, result.stderr


def unshare_works(*args: str) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", *args], capture_output=True, timeout=10)
    return probe.returncode == 0


def test_a_state_dir_that_is_a_file_stops_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    config = write_config(tmp_path, "state")
    problem = f"daemon.state_dir: {tmp_path}/state is a file, not a folder"

    checked = hindsightd(config, "--check-config")
    started = hindsightd(config)

    refused(checked, checked.stdout, problem)
    refused(started, started.stderr, problem)


def test_a_state_dir_that_cannot_be_created_stops_the_daemon_but_passes_check_config(
    tmp_path: Path,
) -> None:
    # Under /proc: a folder where mkdir always fails, root or not. check-config passes: it may
    # run as another user than the daemon, so it does not try to create anything.
    config = write_config(tmp_path, "/proc/hindsight-test/state")

    checked = hindsightd(config, "--check-config")
    started = hindsightd(config)

    assert checked.returncode == 0, checked
    refused(
        started,
        started.stderr,
        "daemon.state_dir: cannot create /proc/hindsight-test/state: No such file or directory",
    )


def test_a_state_dir_on_a_read_only_mount_stops_the_daemon(tmp_path: Path) -> None:
    # A real read-only tmpfs, mounted in a private mount namespace (user namespace as well, so
    # that this works without root); skipped where the kernel or sandbox forbids that.
    read_only = tmp_path / "ro"
    read_only.mkdir()
    mount = f"mount -t tmpfs -o ro hindsight-test {read_only}"
    unshare = ("unshare", "--user", "--map-root-user", "--mount")
    if not unshare_works(*unshare[1:], "sh", "-c", mount):
        unavailable(
            "cannot mount a read-only tmpfs in a private namespace here (util-linux unshare)"
        )
    config = write_config(tmp_path, "ro/state")

    started = hindsightd(config, wrap=(*unshare, "sh", "-c", f'{mount} && exec "$@"', "sh"))

    refused(
        started,
        started.stderr,
        f"daemon.state_dir: cannot create {read_only}/state: Read-only file system",
    )


def test_a_state_dir_in_a_folder_without_write_permission_stops_the_daemon(
    tmp_path: Path,
) -> None:
    # Root ignores mode bits; in a user namespace without a mapping it keeps only the owner's
    # bits, so this runs the same as root and as anyone else.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not unshare_works("--user", "true"):
        unavailable("cannot enter a user namespace here (util-linux unshare)")
    config = write_config(tmp_path, "locked/state")

    started = hindsightd(config, wrap=("unshare", "--user"))

    refused(
        started,
        started.stderr,
        f"daemon.state_dir: cannot create {locked}/state: Permission denied",
    )


def test_a_pool_bigger_than_the_machine_stops_the_daemon_before_it_allocates(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, "state", memory_mb=MAX_POOL_MB)
    problem = f"buffer.memory_mb: {MAX_POOL_MB} MiB is more than this machine has available"

    checked = hindsightd(config, "--check-config")
    started = hindsightd(config)

    refused(checked, checked.stdout, problem)
    refused(started, started.stderr, problem)
    assert not (tmp_path / "state").exists()  # refused before it did anything


def test_a_pool_beyond_ulimit_v_is_refused(tmp_path: Path) -> None:
    limit_mb = 6144

    def limit_address_space() -> None:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb * MIB, hard))

    config = write_config(tmp_path, "state", memory_mb=limit_mb)

    checked = hindsightd(config, "--check-config", preexec_fn=limit_address_space)
    started = hindsightd(config, preexec_fn=limit_address_space)

    expected = f"buffer.memory_mb: {limit_mb} MiB is more than the address-space limit (ulimit -v)"
    refused(checked, checked.stdout, expected)
    refused(started, started.stderr, expected)
    assert not (tmp_path / "state").exists()


# --- locking the pool in memory (buffer.require_lock) ---

LOCK_PROBE = """
import ctypes, ctypes.util, mmap, sys
size = int(sys.argv[1]) << 20
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
area = mmap.mmap(-1, size)
view = (ctypes.c_char * size).from_buffer(area)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
sys.exit(0 if libc.mlock(ctypes.addressof(view), size) == 0 else 1)
"""


def can_lock(megabytes: int, wrap: tuple[str, ...] = ()) -> bool:
    """Whether a process started through ``wrap`` (this one's user and limits) may lock
    ``megabytes`` MiB in memory, as the daemon locks its pool."""
    probe = subprocess.run(
        [*wrap, sys.executable, "-c", LOCK_PROBE, str(megabytes)], capture_output=True, timeout=30
    )
    assert probe.returncode in (0, 1), probe.stderr
    return probe.returncode == 0


def without_lock() -> tuple[str, ...]:
    """A wrapper under which locking a 16 MiB pool fails, root or not: a 1 MiB locked-memory
    limit (prlimit), and for root no CAP_IPC_LOCK (setpriv drops it from the bounding and
    inheritable sets), without which the limit binds root too. Both exec the daemon."""
    for tool in ("prlimit", "setpriv"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} not found (util-linux)")
    wrap: tuple[str, ...] = ("prlimit", f"--memlock={MIB}:{MIB}")
    if os.geteuid() == 0:
        wrap += ("setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock")
    if can_lock(16, wrap):
        unavailable(f"locking 16 MiB still works under {' '.join(wrap)}")
    return wrap


def require_lock(config: Path, memory_mb: int) -> Path:
    text = config.read_text()
    setting = f"memory_mb = {memory_mb}\n"
    assert setting in text
    config.write_text(text.replace(setting, f"{setting}require_lock = true\n"))
    return config


def locked_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(row for row in status.splitlines() if row.startswith("VmLck:")).split()[1])


def test_require_lock_refuses_to_start_when_the_pool_cannot_be_locked(tmp_path: Path) -> None:
    wrap = without_lock()
    config = require_lock(write_config(tmp_path, "state", memory_mb=16), 16)

    started = hindsightd(config, wrap=wrap)

    refused(started, started.stderr, "buffer.require_lock: cannot lock the 16 MiB chunk pool")
    # What to raise, where, and to how much: the unit's setting, the shell's, the figure.
    for hint in ("now 1024 KiB", "at least 16 MiB", "LimitMEMLOCK=16M", "ulimit -l 16384"):
        assert hint in started.stderr, started.stderr
    log = tmp_path / "state" / "commit.log"
    assert not log.exists() or "daemon_started" not in log.read_text()


def test_require_lock_starts_when_the_pool_can_be_locked(tmp_path: Path) -> None:
    if not can_lock(4):
        unavailable("this user may not lock 4 MiB (ulimit -l)")
    d = Daemon(tmp_path, memory_mb=4)
    require_lock(d.config, 4)
    with d:
        assert d.proc is not None
        assert locked_kib(d.proc.pid) >= 4 * 1024
    assert "cannot lock" not in d.stderr()


def test_without_require_lock_a_pool_that_cannot_be_locked_is_a_warning(tmp_path: Path) -> None:
    with Daemon(tmp_path, wrap=without_lock(), memory_mb=16) as d:
        assert d.proc is not None
        assert locked_kib(d.proc.pid) == 0
        d.ok({"op": "start", "line": "desk-01"})
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped", timeout=15)
    assert "WARNING hindsight.daemon.memory: cannot lock the 16 MiB chunk pool" in d.stderr()
    assert "LimitMEMLOCK=16M" in d.stderr() and "ulimit -l 16384" in d.stderr()
