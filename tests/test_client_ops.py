"""The client's retention and pause commands against a fake daemon: what they send, what they print.

The fake is a real ZeroMQ ROUTER in a thread that answers a canned reply and
keeps every request, so the whole client path (argparse, payload, transport,
exit codes) runs as it does against ``hindsightd``.
"""

from __future__ import annotations

import getpass
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import zmq

from hindsight.client.cli import main as cli_main

REFUSAL = {"ok": False, "error": {"code": "unknown_call", "message": "no recording c1"}}
SIGNED = {"actor": "ann", "reason": "ticket 4711"}


class FakeDaemon:
    """A ROUTER that answers every request with ``reply`` and keeps the requests it got."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.reply: dict[str, Any] = {"ok": True}
        self.requests: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self._thread.start()
        assert self._ready.wait(5), f"the fake daemon could not bind {self.endpoint}"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sock = context.socket(zmq.ROUTER)
        try:
            sock.bind(self.endpoint)
            self._ready.set()
            while not self._stop.is_set():
                if sock.poll(20, zmq.POLLIN):
                    *envelope, frame = sock.recv_multipart()
                    self.requests.append(json.loads(frame))
                    sock.send_multipart([*envelope, json.dumps(self.reply).encode()])
        finally:
            sock.close(linger=0)
            context.term()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDaemon]:
    with FakeDaemon(f"ipc://{tmp_path}/fake.sock") as daemon:
        yield daemon


@pytest.fixture(autouse=True)
def login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(getpass, "getuser", lambda: "ann")


def hs(fake: FakeDaemon, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(["--endpoint", fake.endpoint, *argv])
    out, err = capsys.readouterr()
    return code, out, err


RECORDING = {
    "call_id": "c1",
    "line": "desk-01",
    "agent": "bob",
    "path": "recordings/c1.flac",
    "purposes": {"training": {"retain_until": "2026-03-01T10:00:00Z", "resolved": False}},
    "retain_until": "2026-03-01T10:00:00Z",
    "held": False,
}

# argv after --endpoint; the one request it must send; the reply; what it must print.
CASES: list[tuple[list[str], dict[str, Any], dict[str, Any], str]] = [
    (["pause", "desk-01"], {"op": "pause", "line": "desk-01"}, {"call_id": "c1"}, "c1\n"),
    (["resume", "desk-01"], {"op": "resume", "line": "desk-01"}, {"call_id": "c1"}, "c1\n"),
    (["start", "desk-01"], {"op": "start", "line": "desk-01"}, {"call_id": "c1"}, "c1\n"),
    (
        ["start", "desk-01", "--announce", "training", "--announce", "escalation"],
        {"op": "start", "line": "desk-01", "announced": ["training", "escalation"]},
        {"call_id": "c1"},
        "c1\n",
    ),
    (
        ["start", "desk-01", "--announce-none", "--agent", "bob"],
        {"op": "start", "line": "desk-01", "agent": "bob", "announced": []},
        {"call_id": "c1"},
        "c1\n",
    ),
    (["recordings"], {"op": "recordings"}, {"recordings": []}, "no recordings\n"),
    (
        ["recordings", "--purpose", "training", "--caller", "+31 20 555", "--json"],
        {"op": "recordings", "purpose": "training", "caller": "+31 20 555"},
        {"recordings": [RECORDING]},
        json.dumps([RECORDING], indent=2) + "\n",
    ),
    (
        ["resolve", "c1", "--purpose", "escalation", "--reason", "ticket 4711"],
        {"op": "resolve", "call_id": "c1", "purpose": "escalation", **SIGNED},
        {"call_id": "c1", "retain_until": "2026-03-01T10:00:00Z"},
        "2026-03-01T10:00:00Z\n",
    ),
    (
        ["resolve", "c1", "--purpose", "escalation", "--reason", "r", "--actor", "carol smith"],
        {"op": "resolve", "call_id": "c1", "purpose": "escalation"}
        | {"actor": "carol smith", "reason": "r"},
        {"call_id": "c1", "retain_until": "2026-03-01T10:00:00Z"},
        "2026-03-01T10:00:00Z\n",
    ),
    (
        ["extend", "c1", "--purpose", "training", "--days", "30", "--reason", "ticket 4711"],
        {"op": "extend", "call_id": "c1", "purpose": "training", "days": 30.0, **SIGNED},
        {"call_id": "c1", "retain_until": "2026-04-01T10:00:00Z"},
        "2026-04-01T10:00:00Z\n",
    ),
    (
        ["extend", "c1", "--days", "0.5", "--purpose", "training", "--reason", "ticket 4711"],
        {"op": "extend", "call_id": "c1", "purpose": "training", "days": 0.5, **SIGNED},
        {"call_id": "c1", "retain_until": "2026-04-01T10:00:00Z"},
        "2026-04-01T10:00:00Z\n",
    ),
    (
        ["hold", "c1", "--reason", "ticket 4711"],
        {"op": "hold", "call_id": "c1", **SIGNED},
        {"call_id": "c1"},
        "c1\n",
    ),
    (
        ["release", "c1", "--reason", "ticket 4711"],
        {"op": "release", "call_id": "c1", **SIGNED},
        {"call_id": "c1"},
        "c1\n",
    ),
    (
        ["erase", "c1", "--reason", "ticket 4711"],
        {"op": "erase", "call_id": "c1", **SIGNED},
        {"call_id": "c1"},
        "c1\n",
    ),
    (["purge"], {"op": "purge", "dry_run": False}, {"deleted": ["c1", "c2"]}, "c1\nc2\n"),
    (["purge"], {"op": "purge", "dry_run": False}, {"deleted": []}, "no recording is due\n"),
    (
        ["purge", "--dry-run"],
        {"op": "purge", "dry_run": True},
        {"deleted": ["c1"]},
        "c1\n",
    ),
]
REFUSABLE = [argv for argv, _, _, _ in CASES]


@pytest.mark.parametrize(
    ("argv", "sent", "reply", "printed"), CASES, ids=[" ".join(c[0]) for c in CASES]
)
def test_each_command_sends_its_request_and_prints_the_answer(
    fake: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    sent: dict[str, Any],
    reply: dict[str, Any],
    printed: str,
) -> None:
    fake.reply = {"ok": True, **reply}
    assert hs(fake, capsys, *argv) == (0, printed, "")
    assert fake.requests == [sent]
    assert type(fake.requests[0].get("days", 0.0)) is float


@pytest.mark.parametrize("argv", REFUSABLE, ids=[" ".join(argv) for argv in REFUSABLE])
def test_a_refusal_exits_1_with_the_daemons_message(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    fake.reply = REFUSAL
    assert hs(fake, capsys, *argv) == (1, "", "hindsight: no recording c1 (unknown_call)\n")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("failure", [OSError("no login name"), KeyError("uid 4242")])
def test_the_actor_is_the_uid_when_the_login_name_is_unknown(
    fake: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    def getuser() -> str:
        raise failure

    monkeypatch.setattr(getpass, "getuser", getuser)
    fake.reply = {"ok": True, "call_id": "c1"}
    assert hs(fake, capsys, "hold", "c1", "--reason", "court order")[0] == 0
    assert fake.requests[0]["actor"] == str(os.getuid())


def test_recordings_prints_one_row_per_purpose(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    escalated = RECORDING | {
        "call_id": "c2",
        "line": "desk-02",
        "agent": None,
        "purposes": {
            "training": {"retain_until": "2026-03-01T10:00:00Z", "resolved": True},
            "escalation": {"retain_until": None, "resolved": False},
        },
        "retain_until": None,
        "held": True,
    }
    fake.reply = {"ok": True, "recordings": [RECORDING, escalated]}
    code, out, err = hs(fake, capsys, "recordings")
    assert (code, err) == (0, "")
    assert [row.split() for row in out.splitlines()] == [
        ["CALL", "LINE", "AGENT", "PURPOSE", "RETAIN", "UNTIL", "RESOLVED", "HELD"],
        ["c1", "desk-01", "bob", "training", "2026-03-01T10:00:00Z", "no", "no"],
        ["c2", "desk-02", "-", "escalation", "-", "no", "yes"],
        ["c2", "desk-02", "-", "training", "2026-03-01T10:00:00Z", "yes", "yes"],
    ]


@pytest.mark.parametrize(
    ("argv", "key"),
    [(["resolve", "c1", "--purpose", "p", "--reason", "r"], "call_id"), (["purge"], "deleted")]
    + [([op, "c1", "--reason", "r"], "call_id") for op in ("hold", "release", "erase")]
    + [(["pause", "desk-01"], "call_id"), (["recordings"], "recordings"), (["status"], "lines")],
)
def test_an_ok_reply_without_its_field_exits_1(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str], key: str
) -> None:
    fake.reply = {"ok": True}
    code, out, err = hs(fake, capsys, *argv)
    assert (code, out) == (1, "")
    assert err.startswith(f"hindsight: the daemon at {fake.endpoint} sent a malformed reply")
    assert f"missing required field `{key}`" in err


@pytest.mark.parametrize(
    ("argv", "reply", "where"),
    [
        (["resolve", "c1", "--purpose", "p", "--reason", "r"], {"call_id": "c1"}, "retain_until"),
        (["start", "desk-01"], {"call_id": 7}, "got `int` - at `$.call_id`"),
        (["purge"], {"deleted": [1]}, "at `$.deleted[0]`"),
        (["status"], {"lines": [{"line": "a"}]}, "at `$.lines[0]`"),
        (["status"], {"lines": [], "worker": {"pid": "x", "restarts": 0}}, "`$.worker.pid`"),
    ],
)
def test_a_malformed_ok_reply_names_its_field_and_exits_1(
    fake: FakeDaemon,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    reply: dict[str, Any],
    where: str,
) -> None:
    fake.reply = {"ok": True, **reply}
    code, out, err = hs(fake, capsys, *argv)
    assert (code, out) == (1, "")
    assert "malformed reply" in err and where in err and "Traceback" not in err


EXTEND = ["extend", "c1", "--purpose", "training", "--reason", "r"]


@pytest.mark.parametrize(
    "argv",
    [[*EXTEND, "--days", days] for days in ("0", "-1", "nan", "inf", "abc", "36501", "")]
    + [
        EXTEND,
        ["extend", "c1", "--days", "3", "--reason", "r"],
        ["resolve", "c1", "--reason", "r"],
        ["resolve", "--purpose", "p", "--reason", "r"],
        ["hold", "c1"],
        ["release", "c1", "--actor", "ann"],
        ["erase", "--reason", "r"],
        ["pause"],
        ["resume"],
        ["purge", "c1"],
        ["recordings", "c1"],
        ["start", "desk-01", "--announce", "training", "--announce-none"],
        ["start", "desk-01", "--announce"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_usage_errors_exit_2_before_asking(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["--endpoint", fake.endpoint, *argv])
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip()
    assert fake.requests == []


def test_every_new_command_exits_3_without_a_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = ["--endpoint", f"ipc://{tmp_path}/nobody.sock", "--timeout", "0.1"]
    for argv in REFUSABLE:
        assert cli_main([*nowhere, *argv]) == 3, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("hindsight: daemon unreachable"), argv
