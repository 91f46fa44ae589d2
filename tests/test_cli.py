"""``hindsight`` and ``hindsightd --check-config`` end to end: real subprocesses, real sockets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hindsight.client.cli import main as cli_main
from tests.harness import BIN, Daemon, config_text

CLIENT = str(BIN / "hindsight")
DAEMON = str(BIN / "hindsightd")
CALL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PROBLEM = re.compile(r"^[a-z_]+(\[\d+\])?\.[a-z_]+: \S")
CALLER = "+31205557788"
Result = subprocess.CompletedProcess[str]


def run(
    program: str,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 20.0,
) -> Result:
    """Run ``program``; it must end within ``timeout`` and never print a traceback."""
    base = {k: v for k, v in os.environ.items() if k != "HINDSIGHT_CONFIG"}
    try:
        result = subprocess.run(
            [program, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**base, **(env or {})},
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{program} {' '.join(args)} still running after {timeout} s") from exc
    assert "Traceback" not in result.stderr, result.stderr
    return result


def hs(*args: str, **kwargs: Any) -> Result:
    return run(CLIENT, *args, **kwargs)


def ok(result: Result) -> str:
    assert result.returncode == 0, result
    return result.stdout


def nowhere(tmp: Path) -> str:
    """An ipc endpoint in ``tmp`` that no daemon listens on."""
    return f"ipc://{tmp}/nobody.sock"


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@contextmanager
def running(d: Daemon) -> Iterator[Daemon]:
    """Like ``with d:``, but the daemon is stopped even when it never becomes ready."""
    d.start(wait=False)
    try:
        d.wait_ready()
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.terminate()
            try:
                d.proc.wait(15)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait(5)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One idle daemon with two lines whose config names its socket relative to its folder."""
    tmp = tmp_path_factory.mktemp("shared")
    d = Daemon(tmp, lines=[("desk-01", [1]), ("desk-02", [2])])
    text = d.config.read_text()
    assert f'"ipc://{tmp}/ctl.sock"' in text
    d.config.write_text(text.replace(f'"ipc://{tmp}/ctl.sock"', '"ipc://ctl.sock"'))
    with running(d):
        yield d


# ---------------------------------------------------------------------------------------------
# finding the daemon


@pytest.mark.parametrize(
    "how",
    ["endpoint", "config", "env", "endpoint-after", "config-after", "config-beats-env"],
)
def test_ping_finds_the_daemon(shared: Daemon, tmp_path: Path, how: str) -> None:
    ep, cfg = shared.endpoint, str(shared.config)
    bogus = {"HINDSIGHT_CONFIG": str(tmp_path / "absent.toml")}
    argv, env = {
        "endpoint": (["--endpoint", ep, "ping"], None),
        "config": (["--config", cfg, "ping"], None),
        "env": (["ping"], {"HINDSIGHT_CONFIG": cfg}),
        "endpoint-after": (["ping", "--endpoint", ep, "--timeout", "3"], None),
        "config-after": (["ping", "--config", cfg], None),
        "config-beats-env": (["--config", cfg, "ping"], bogus),
    }[how]
    # From a folder other than the config's: its relative ipc path must resolve from the file.
    result = hs(*argv, env=env, cwd=tmp_path)
    assert result.returncode == 0, result
    assert result.stderr == ""


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    result = hs("--config", str(tmp_path / "absent.toml"), "ping")
    assert result.returncode == 2, result
    assert result.stderr.startswith("hindsight: ") and "absent.toml" in result.stderr


# ---------------------------------------------------------------------------------------------
# calls


def test_a_call_through_the_cli(tmp_path: Path) -> None:
    with running(Daemon(tmp_path, one_in=1, lines=[("desk-01", [1]), ("desk-02", [2])])) as d:
        ep = ["--endpoint", d.endpoint]
        given = "call-7.a_B"
        began = time.monotonic()
        start = hs(
            *ep, "start", "desk-01", "--call-id", given, "--agent", "ann", "--caller", CALLER
        )
        assert ok(start).strip() == given
        time.sleep(0.4)
        mark = hs("mark", "desk-01", "--purpose", "training", "--note", "angry customer", *ep)
        assert ok(mark).strip() == given

        plain = ok(hs(*ep, "status"))
        rows = plain.splitlines()
        (live,) = [r for r in rows if r.split()[:1] == ["desk-01"]]
        (idle,) = [r for r in rows if r.split()[:1] == ["desk-02"]]
        assert rows[0].split()[0] == "LINE" and given in live and given not in idle
        assert "sampl" not in plain.lower()
        assert re.search(r"^worker: pid \d+, 0 restart\(s\)$", plain, re.M)

        raw = ok(hs(*ep, "status", "--json"))
        assert "sampl" not in raw.lower()
        live_j, idle_j = json.loads(raw)["lines"]
        assert live_j["line"] == "desk-01" and live_j["call_id"] == given
        # Live: at least the sleep, at most the time since the start was sent (each CLI
        # call costs a fraction of a second, more on a loaded machine), and a block of audio.
        assert live_j["marked"] is True
        assert 0.2 < live_j["seconds"] < time.monotonic() - began + 0.5
        assert idle_j["line"] == "desk-02" and idle_j["call_id"] is None
        assert idle_j["marked"] is False and idle_j["seconds"] == 0
        assert set(json.loads(raw)["worker"]) == {"pid", "restarts"}

        assert ok(hs(*ep, "end", "desk-01")).strip() == given
        generated = ok(hs(*ep, "start", "desk-02", "--caller", CALLER)).strip()
        assert CALL_ID.fullmatch(generated) and generated != given
        assert ok(hs(*ep, "end", "desk-02")).strip() == generated
        d.wait_for_event("call_committed", 2)
        assert d.stop() == 0

    (started, _) = d.events("call_started")
    assert (started["call_id"], started["line"], started["agent"]) == (given, "desk-01", "ann")
    (marked,) = d.events("call_marked")
    assert (marked["call_id"], marked["purpose"]) == (given, "training")
    committed = {c["call_id"]: c for c in d.events("call_committed")}
    assert set(committed) == {given, generated}
    sidecar = json.loads((d.state / committed[given]["path"]).with_suffix(".json").read_text())
    assert [m["note"] for m in sidecar["marks"]] == ["angry customer"]
    assert "angry customer" not in (d.state / "commit.log").read_text()
    for path in files_under(d.state):
        assert CALLER.encode() not in path.read_bytes(), path
    assert CALLER not in d.stderr()


def test_refusals_exit_1_with_the_daemons_message(shared: Daemon) -> None:
    ep = ["--endpoint", shared.endpoint]

    def refused(code: str, payload: dict[str, str], *argv: str) -> None:
        error = shared.request(payload)["error"]
        assert error["code"] == code
        result = hs(*ep, *argv)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.startswith("hindsight: ")
        assert error["message"] in result.stderr and code in result.stderr

    refused("no_call", {"op": "end", "line": "desk-01"}, "end", "desk-01")
    refused("no_call", {"op": "mark", "line": "desk-01"}, "mark", "desk-01")
    refused("unknown_line", {"op": "start", "line": "desk-99"}, "start", "desk-99")
    refused("unknown_line", {"op": "end", "line": "desk-99"}, "end", "desk-99")
    refused(
        "bad_request",
        {"op": "start", "line": "desk-01", "call_id": "a b"},
        "start",
        "desk-01",
        "--call-id",
        "a b",
    )
    call_id = ok(hs(*ep, "start", "desk-01")).strip()
    try:
        refused("call_active", {"op": "start", "line": "desk-01"}, "start", "desk-01")
        mark = {"op": "mark", "line": "desk-01", "purpose": "gossip"}
        refused("unknown_purpose", mark, "mark", "desk-01", "--purpose", "gossip")
    finally:
        assert ok(hs(*ep, "end", "desk-01")).strip() == call_id


# ---------------------------------------------------------------------------------------------
# no daemon


def test_no_daemon_exits_3_within_the_timeout(tmp_path: Path) -> None:
    result = hs("--endpoint", nowhere(tmp_path), "--timeout", "0.5", "ping")
    assert result.returncode == 3, result
    assert result.stderr.startswith("hindsight: ") and "unreachable" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("argv", "low", "high"), [(["--timeout", "0.5"], 0.45, 1.5), ([], 1.9, 3.5)]
)
def test_the_client_waits_as_long_as_its_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], low: float, high: float
) -> None:
    # In-process, so that the figure is the wait alone, not a Python start-up.
    began = time.monotonic()
    code = cli_main(["--endpoint", nowhere(tmp_path), *argv, "ping"])
    elapsed = time.monotonic() - began
    assert code == 3 and "unreachable" in capsys.readouterr().err
    assert low < elapsed < high


def test_every_daemon_command_exits_3_without_a_daemon(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(config_text(tmp_path))  # ctl.sock: nobody binds it
    to = ["--timeout", "0.3"]
    ep = ["--endpoint", nowhere(tmp_path), *to]
    runs = [
        [*ep, "start", "desk-01", "--caller", CALLER],
        [*ep, "end", "desk-01"],
        [*ep, "mark", "desk-01"],
        [*ep, "status"],
        [*ep, "status", "--json"],
        [*ep, "simulate", "--calls", "1"],
        ["--config", str(tmp_path / "h.toml"), *to, "ping"],
        ["ping", "--config", str(tmp_path / "h.toml"), *to],
    ]
    with ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(lambda argv: hs(*argv), runs))
    for argv, result in zip(runs, results, strict=True):
        assert result.returncode == 3, (argv, result)
        assert result.stderr.startswith("hindsight: ") and "unreachable" in result.stderr, argv
        assert CALLER not in result.stderr


def test_a_stopped_daemon_is_unreachable(tmp_path: Path) -> None:
    with running(Daemon(tmp_path)) as d:
        ok(hs("--endpoint", d.endpoint, "ping"))
        assert d.stop() == 0
        result = hs("--endpoint", d.endpoint, "--timeout", "0.3", "ping")
    assert result.returncode == 3, result
    assert "unreachable" in result.stderr


def test_a_closed_stdout_is_no_traceback(shared: Daemon) -> None:
    """``hindsight status | head -1``: the reader may go away before the client writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [CLIENT, "--endpoint", shared.endpoint, "status"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=20,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fly"],
        ["start"],
        ["end"],
        ["mark"],
        ["mark", "--purpose", "training"],
        ["start", "desk-01", "--call-id"],
        ["--timeout", "abc", "ping"],
        ["ping", "--timeout", "abc"],
        ["--config", "x.toml", "ping"],  # with --endpoint: mutually exclusive
        ["status", "--yaml"],
        ["simulate", "--calls", "0"],
        ["audit"],
        ["audit", "verify"],
        ["audit", "fly", "--state-dir", "."],
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str]) -> None:
    # A usage error must be caught before the daemon is asked: asking would give 3, not 2.
    result = hs("--endpoint", nowhere(tmp_path), "--timeout", "0.3", *argv)
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert result.stderr.strip()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e30"])
def test_a_nonsense_timeout_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = hs("--endpoint", nowhere(tmp_path), f"--timeout={value}", "ping")
    assert result.returncode == 2, result
    assert "--timeout" in result.stderr


# ---------------------------------------------------------------------------------------------
# simulate and audit


def test_simulate_then_audit(tmp_path: Path) -> None:
    with running(Daemon(tmp_path)) as d:
        args = ["--calls", "4", "--lines", "1", "--min-seconds", "0.2", "--max-seconds", "0.4"]
        result = hs("--endpoint", d.endpoint, "simulate", *args, "--seed", "1", timeout=20)
        assert result.returncode == 0, result
        assert len(d.events("call_started")) == 4
        d.wait_for_event("call_wiped", 4)
        assert d.stop() == 0
    outcomes = d.events("call_committed") + d.events("call_wiped")
    assert len(outcomes) == 4
    assert {e["call_id"] for e in d.events("call_started")} == {e["call_id"] for e in outcomes}

    state = str(d.state)
    verified = hs("audit", "verify", "--state-dir", state)
    assert verified.returncode == 0, verified
    assert verified.stderr == ""

    figures = json.loads(ok(hs("audit", "report", "--state-dir", state, "--json")))
    totals = figures["totals"]
    assert (totals["started"], totals["committed"], totals["wiped"]) == (4, 0, 4)
    assert totals["open"] == 0 and figures["entries"] == len(d.entries())
    assert figures["per_line"]["desk-01"]["started"] == 4
    assert figures["per_agent"]["agent-01"]["started"] == 4

    plain = ok(hs("audit", "report", "--state-dir", state))
    with pytest.raises(ValueError):
        json.loads(plain)
    assert re.search(r"^desk-01\s+4\s", plain, re.M), plain
    assert re.search(r"^agent-01\s+4\s", plain, re.M), plain

    log = d.state / "commit.log"
    data = log.read_bytes()
    at = data.index(b'"agent-01"') + len(b'"agent-0')
    log.write_bytes(data[:at] + b"2" + data[at + 1 :])  # one byte: agent-01 -> agent-02
    tampered_line = data[:at].count(b"\n") + 1
    for verb in (["verify"], ["report"], ["report", "--json"]):
        result = hs("audit", *verb, "--state-dir", state)
        assert result.returncode == 1, (verb, result)
        assert result.stdout == ""
        assert result.stderr.startswith("hindsight: ")
        assert f"line {tampered_line}" in result.stderr, result.stderr


def test_audit_of_a_folder_without_a_log_exits_1(tmp_path: Path) -> None:
    for verb in ("verify", "report"):
        result = hs("audit", verb, "--state-dir", str(tmp_path))
        assert result.returncode == 1, result
        assert result.stderr.startswith("hindsight: ") and "commit.log" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# hindsightd --check-config


def broken_config(tmp: Path) -> Path:
    text = config_text(tmp, lines=[("desk-01", [1]), ("desk-02", [3]), ("desk-03", [2])])
    text = text.replace('state_dir = "state"', 'state_dir = "state"\nstat_dir = "x"')
    text = text.replace("blocksize = ", "blocksiz = 160\nblocksize = ")
    path = tmp / "broken.toml"
    path.write_text(text)
    return path


def test_check_config_accepts_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "hindsight.toml"
    path.write_text(config_text(tmp_path, lines=[("desk-01", [1]), ("desk-02", [2])]))
    for argv, env in [
        (["--config", str(path), "--check-config"], None),
        (["--check-config"], {"HINDSIGHT_CONFIG": str(path)}),
    ]:
        result = run(DAEMON, *argv, env=env)
        assert result.returncode == 0, result
        assert not PROBLEM.search(result.stdout + result.stderr)
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "ctl.sock").exists()


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    result = run(DAEMON, "--config", str(broken_config(tmp_path)), "--check-config")
    assert result.returncode == 2, result
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert all(PROBLEM.match(line) for line in problems), problems
    by_key = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in problems}
    assert set(by_key) == {"daemon.stat_dir", "audio.blocksiz", "lines[1].channels"}
    assert "did you mean 'state_dir'" in by_key["daemon.stat_dir"]
    assert "did you mean 'blocksize'" in by_key["audio.blocksiz"]
    assert "3" in by_key["lines[1].channels"] and "beyond" in by_key["lines[1].channels"]
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("text", ["[daemon\nstate_dir =", None], ids=["not-toml", "missing"])
def test_check_config_on_an_unreadable_file_exits_2(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "h.toml"
    if text is not None:
        path.write_text(text)
    result = run(DAEMON, "--config", str(path), "--check-config")
    assert result.returncode == 2, result
    assert "h.toml" in result.stdout + result.stderr


def test_the_daemon_refuses_a_broken_config_before_touching_anything(tmp_path: Path) -> None:
    path = broken_config(tmp_path)
    result = run(DAEMON, "--config", str(path), timeout=15)
    assert result.returncode == 2, result
    assert "daemon.stat_dir: " in result.stderr and "lines[1].channels: " in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.toml"]


def test_the_cli_starts_without_the_auditors_modules() -> None:
    """An agent's ``mark`` or a sysadmin's ``status`` should not wait for the audit rules,
    numpy and SciPy to load: only the audit verbs import them."""
    probe = (
        "import sys, hindsight.client.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('hindsight.audit') "
        "or m in ('numpy', 'scipy', 'matplotlib')))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
