"""The worker process, attacked through the real daemon: killed mid-commit and mid-wipe,
hung, and its view of the shared pool. strace holds the worker inside a chosen system call,
so that a kill lands exactly in the middle of a step; reading the pool needs ptrace rights
over both (non-dumpable) processes, which root has."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from hindsight import audit
from hindsight.clock import utcnow
from tests.harness import Daemon, find_offset, looped_span, noise_wav
from tests.pulse import unavailable

RATE = 16000


def need_ptrace() -> None:
    if os.geteuid() != 0:
        unavailable(
            "needs root: the daemon and its worker are non-dumpable, so only root may trace them"
        )
    if shutil.which("strace") is None:
        unavailable("strace not found on PATH (apt-get install strace)")


def wait_until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def worker_pid(d: Daemon, not_this: int | None = None) -> int:
    found: list[int] = []

    def known() -> bool:
        pid = d.ok({"op": "status"})["worker"]["pid"]
        if pid is not None and pid != not_this:
            found.append(pid)
        return bool(found)

    wait_until(known, what="a worker pid")
    return found[0]


@contextmanager
def held_in(pid: int, syscall: str, out: Path) -> Iterator[Path]:
    """strace attached to ``pid``, delaying every ``syscall`` by 3 s; yields its output file."""
    tracer = subprocess.Popen(
        [
            "strace",
            "-p",
            str(pid),
            "-e",
            f"trace={syscall}",
            "-s",
            "200",
            "-o",
            str(out),
            "-e",
            f"inject={syscall}:delay_enter=3000000",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert tracer.stderr is not None
    assert "attached" in tracer.stderr.readline()
    try:
        yield out
    finally:
        tracer.kill()
        tracer.wait()


def pool_bytes(pid: int) -> bytes:
    """The chunk pool as process ``pid`` sees it, read through /proc/PID/mem."""
    wait_until(lambda: "memfd:hindsight-pool" in Path(f"/proc/{pid}/maps").read_text())
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "memfd:hindsight-pool" in line:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            with open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(start)
                return mem.read(end - start)
    raise AssertionError(f"no pool mapping in process {pid}")


def pool_flags(pid: int) -> tuple[set[str], int, int]:
    """VmFlags, Size and Rss (kB) of the pool's mapping in process ``pid``, once it is mapped
    (a worker just started may not have mapped it yet)."""
    wait_until(lambda: "memfd:hindsight-pool" in Path(f"/proc/{pid}/maps").read_text())
    smaps = Path(f"/proc/{pid}/smaps").read_text().split("\n")
    at = next(i for i, line in enumerate(smaps) if "memfd:hindsight-pool" in line)
    fields: dict[str, str] = {}
    for line in smaps[at + 1 :]:
        key, _, value = line.partition(":")
        fields[key] = value.strip()
        if key == "VmFlags":
            break
    return (
        set(fields["VmFlags"].split()),
        int(fields["Size"].split()[0]),
        int(fields["Rss"].split()[0]),
    )


def outcomes(d: Daemon) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in d.entries():
        if entry["event"] in ("call_committed", "call_wiped"):
            found.setdefault(entry["call_id"], []).append(entry["event"])
    return found


def assert_whole(d: Daemon, committed: dict[str, object], source: np.ndarray) -> None:
    audio, rate = sf.read(str(d.state / str(committed["path"])), dtype="int16", always_2d=True)
    assert rate == RATE
    assert len(audio) == round(float(str(committed["seconds"])) * RATE)
    start = find_offset(source, audio)
    assert np.array_equal(audio, looped_span(source, start, len(audio)))


def test_the_worker_killed_mid_commit_is_replaced_and_the_call_kept_whole(tmp_path: Path) -> None:
    need_ptrace()
    source = noise_wav(tmp_path / "in.wav")
    with Daemon(tmp_path, source="file", file=str(tmp_path / "in.wav")) as d:
        pid = worker_pid(d)
        # The day's folder made beforehand: the first fsync the worker waits in is the file's.
        (d.state / f"recordings/{utcnow():%Y/%m/%d}").mkdir(parents=True)
        with held_in(pid, "fsync", tmp_path / "strace.out"):
            d.ok({"op": "start", "line": "desk-01"})
            time.sleep(1.0)
            d.ok({"op": "mark", "line": "desk-01"})
            d.ok({"op": "end", "line": "desk-01"})
            # Every fsync takes 3 s now: the temp file stays half-way to disk that long.
            wait_until(lambda: bool(list(d.state.rglob(".*.flac.*.tmp"))), what="a temp file")
            os.kill(pid, signal.SIGKILL)
        committed = d.wait_for_event("call_committed")[0]
        assert worker_pid(d, not_this=pid) != pid
        assert d.ok({"op": "ping"})
        assert d.ok({"op": "status"})["worker"]["restarts"] == 1
    assert list(outcomes(d).values()) == [["call_committed"]]
    assert not list(d.state.rglob("*.tmp"))
    assert_whole(d, committed, source)
    assert audit.verify(d.state).ok
    assert "Traceback" not in d.stderr()


def test_the_worker_killed_mid_wipe_is_replaced_and_the_call_wiped_once(tmp_path: Path) -> None:
    need_ptrace()
    with Daemon(tmp_path) as d:
        pid = worker_pid(d)
        with held_in(pid, "sendto", tmp_path / "strace.out") as out:
            d.ok({"op": "start", "line": "desk-01"})
            time.sleep(0.5)
            d.ok({"op": "end", "line": "desk-01"})
            # The worker has zeroed the chunks and is about to say so: it holds the job.
            wait_until(lambda: "zeroed" in out.read_text(), what="the worker reporting a wipe")
            os.kill(pid, signal.SIGKILL)
        d.wait_for_event("call_wiped")
        worker_pid(d, not_this=pid)
        assert d.ok({"op": "status"})["worker"]["restarts"] == 1
    assert list(outcomes(d).values()) == [["call_wiped"]]
    assert [e["why"] for e in d.events("call_wiped")] == ["not_kept"]
    assert audit.verify(d.state).ok


def test_a_hung_worker_is_noticed_and_replaced(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra="[worker]\nhang_seconds = 5\n") as d:
        pid = worker_pid(d)
        os.kill(pid, signal.SIGSTOP)
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped", timeout=30)
        assert worker_pid(d, not_this=pid) != pid
        assert not Path(f"/proc/{pid}").exists(), "the hung worker was killed and reaped"
    assert "taken for hung" in d.stderr()
    assert list(outcomes(d).values()) == [["call_wiped"]]


def test_a_wiped_calls_chunks_hold_only_zeros_in_both_processes(tmp_path: Path) -> None:
    need_ptrace()
    with Daemon(tmp_path) as d:
        assert d.proc is not None
        pid = worker_pid(d)
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(1.0)
        assert any(pool_bytes(d.proc.pid)), "a live call's audio is in the pool"
        assert any(pool_bytes(pid)), "and the worker sees the same memory"
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_wiped")
        assert not any(pool_bytes(d.proc.pid))
        assert not any(pool_bytes(pid))


def test_the_pool_is_locked_and_kept_out_of_core_dumps_in_both_processes(tmp_path: Path) -> None:
    need_ptrace()
    with Daemon(tmp_path) as d:
        assert d.proc is not None
        for pid in (d.proc.pid, worker_pid(d)):
            flags, size, resident = pool_flags(pid)
            assert "dd" in flags, "MADV_DONTDUMP"
            assert "lo" in flags, "mlock'ed"
            assert resident == size == 16 * 1024, "every page in memory"
            status = Path(f"/proc/{pid}/status").read_text()
            assert "\nCoreDumping:\t0" in status
            with open(f"/proc/{pid}/limits") as limits:
                core = next(line for line in limits if line.startswith("Max core file size"))
            assert core.split()[4:6] == ["0", "0"]


def test_the_worker_runs_at_idle_priority_and_never_holds_the_commit_log(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        assert d.proc is not None
        for marked in (True, False):  # the worker has written a call and wiped one
            d.ok({"op": "start", "line": "desk-01"})
            time.sleep(0.3)
            if marked:
                d.ok({"op": "mark", "line": "desk-01"})
            d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed")
        d.wait_for_event("call_wiped")
        worker = worker_pid(d)
        # SCHED_IDLE, or nice 19 where the idle class is refused (the issue allows either).
        idle = os.sched_getscheduler(worker) == os.SCHED_IDLE
        assert idle or os.getpriority(os.PRIO_PROCESS, worker) == 19
        assert os.sched_getscheduler(d.proc.pid) == os.SCHED_OTHER
        log = (d.state / "commit.log").resolve()

        def opened(pid: int) -> set[Path]:
            found: set[Path] = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                # An fd may close meanwhile (ZeroMQ's thread closes a client's socket).
                with contextlib.suppress(FileNotFoundError):
                    found.add(Path(os.readlink(fd)))
            return found

        # The daemon is the single writer of the log; the worker never even opens it.
        assert log in opened(d.proc.pid)
        assert log not in opened(worker)


def test_killing_the_worker_again_and_again_gives_every_call_one_outcome(tmp_path: Path) -> None:
    lines = [(f"desk-{i}", [1, 2]) for i in range(3)]
    source = noise_wav(tmp_path / "in.wav")
    with Daemon(tmp_path, source="file", file=str(tmp_path / "in.wav"), lines=lines) as d:
        stop = threading.Event()
        kills: list[int] = []

        def killer() -> None:
            rng = random.Random(6)
            while not stop.wait(rng.uniform(0.6, 1.2)):
                pid = d.ok({"op": "status"})["worker"]["pid"]
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)

        thread = threading.Thread(target=killer)
        thread.start()
        rng = random.Random(7)
        try:
            for round_ in range(5):
                for name, _ in lines:
                    d.ok({"op": "start", "line": name})
                time.sleep(rng.uniform(0.3, 0.8))
                for i, (name, _) in enumerate(lines):
                    if (i + round_) % 2:
                        d.ok({"op": "mark", "line": name})
                    d.ok({"op": "end", "line": name})
        finally:
            stop.set()
            thread.join()
        assert kills
        d.wait_for_event("call_committed", count=7, timeout=60)
        d.wait_for_event("call_wiped", count=8, timeout=60)
    assert all(events in (["call_committed"], ["call_wiped"]) for events in outcomes(d).values())
    assert len(outcomes(d)) == 15
    for committed in d.events("call_committed"):
        assert_whole(d, committed, source)
    assert not list(d.state.rglob("*.tmp"))
    assert audit.verify(d.state).ok


def test_the_worker_dies_with_the_daemon(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    d.start()
    pid = worker_pid(d)
    d.stop(signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="the worker gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_worker_that_cannot_start_stops_the_daemon_with_a_clear_message(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    # Python runs sitecustomize in every interpreter: this one breaks only the worker's.
    (site / "sitecustomize.py").write_text(
        "import os, sys\nif 'hindsight.daemon.worker' in sys.orig_argv:\n    os._exit(3)\n"
    )
    env = {"PYTHONPATH": str(site)}
    d = Daemon(tmp_path, env=env, extra="[worker]\nhang_seconds = 2\n")
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 1
    assert "the worker process did not start within 2 s" in d.stderr()
    assert "exit code 3" in d.stderr()
    assert "Traceback" not in d.stderr()
    assert not [e for e in d.entries() if e["event"] == "daemon_started"]


def test_a_full_disk_holds_a_kept_call_in_memory_until_there_is_room(tmp_path: Path) -> None:
    """The state dir on a 200 KiB tmpfs in a mount namespace of the daemon's own: the second
    recording does not fit, is retried while an unkept call is wiped, and lands once the
    file system grows."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        unavailable("unshare/nsenter not found (util-linux)")
    state = tmp_path / "state"
    state.mkdir()
    mount = f"mount -t tmpfs -o size=200k hindsight-full {state}"
    wrap = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", f'{mount} && exec "$@"')
    source = noise_wav(tmp_path / "in.wav", seconds=3.0)  # noise: FLAC cannot shrink it
    lines = [("desk-01", [1, 2]), ("desk-02", [1, 2])]
    with Daemon(
        tmp_path, wrap=(*wrap, "sh"), source="file", file=str(tmp_path / "in.wav"), lines=lines
    ) as d:
        assert d.proc is not None
        d.state = Path(f"/proc/{d.proc.pid}/root{state}")  # the tmpfs, seen from outside
        for name in ("desk-01", "desk-02"):
            d.ok({"op": "start", "line": name})
        time.sleep(2.0)
        d.ok({"op": "mark", "line": "desk-01"})
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed")  # 2 s of stereo noise, ~130 KiB: it fits
        d.ok({"op": "start", "line": "desk-01"})
        time.sleep(2.0)
        d.ok({"op": "mark", "line": "desk-01"})
        d.ok({"op": "end", "line": "desk-01"})  # this one does not
        wait_until(lambda: "No space left on device" in d.stderr(), what="a full disk")
        d.ok({"op": "end", "line": "desk-02"})
        d.wait_for_event("call_wiped")  # the wipe does not wait behind the stuck recording
        assert len(d.events("call_committed")) == 1
        grow = [
            "nsenter",
            "-t",
            str(d.proc.pid),
            "-U",
            "-m",
            "--preserve-credentials",
            "mount",
            "-o",
            "remount,size=4m",
            str(state),
        ]
        subprocess.run(grow, check=True, timeout=10)
        d.wait_for_event("call_committed", count=2, timeout=20)
        for committed in d.events("call_committed"):
            assert_whole(d, committed, source)
        assert not list(d.state.rglob("*.tmp"))
        assert list(outcomes(d).values()) == [
            ["call_committed"],
            ["call_wiped"],
            ["call_committed"],
        ]
