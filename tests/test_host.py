from __future__ import annotations

import resource
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hindsight.daemon.host import make_state_dir, memory_problems, state_dir_problems
from hindsight.errors import ConfigError
from tests.harness import BIN, config_text
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


def test_make_state_dir_creates_it_and_its_parents_private(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"

    make_state_dir(state)
    make_state_dir(state)  # an existing folder is fine

    assert state.is_dir()
    assert state.stat().st_mode & 0o007 == 0  # nothing for "other" (the umask may take more)


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
