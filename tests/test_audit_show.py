"""``hindsight audit show CALL``, and the progress bar of the auditor's long reads.

The story is told from a state dir the real daemon made (a marked call with a note, a mark
refused, a pause, an extension, a hold and its release, an opening, a wiped call, a sampling
epoch revealed at the stop); the cases the daemon never writes (hostile names, an epoch
never revealed, a seed that does not match) from logs written with ``CommitLog``. The bar is
checked on a real pseudo-terminal, and its absence on a pipe.
"""

from __future__ import annotations

import io
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
import threading
import time
import tracemalloc
from dataclasses import dataclass
from fcntl import ioctl
from pathlib import Path
from typing import Any

import pytest

from hindsight import commitlog
from hindsight.audit import verify
from hindsight.audit.progress import ERASE, INTERVAL, Bar, bar
from hindsight.audit.show import render, show
from hindsight.commitlog import GENESIS, CommitLog, entry_hash, read_chain
from hindsight.sampling import commitment
from tests.harness import BIN, Daemon, cli
from tests.test_audit import DAY, build_state

CALLER = "+41 44 123 45 67"
NOTE = "shouting"


@dataclass(frozen=True)
class Made:
    """A state dir the daemon left after a clean stop, and what it was asked to do."""

    state: Path
    marked: str  # announced escalation only: marked with a note, paused, extended, held…
    sampled: str  # announced everything, with a caller: sampled (one_in = 1)
    wiped: str  # announced escalation only, never marked: wiped


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    tmp = tmp_path_factory.mktemp("made")
    with Daemon(tmp, one_in=1) as d:
        start = {"op": "start", "line": "desk-01", "agent": "ann", "announced": ["escalation"]}
        marked = d.ok(start)["call_id"]
        time.sleep(0.3)  # some audio, or the call is wiped as no_audio
        d.ok({"op": "mark", "line": "desk-01", "note": NOTE})
        d.request({"op": "mark", "line": "desk-01", "purpose": "training"})  # not announced
        d.ok({"op": "pause", "line": "desk-01"})
        time.sleep(0.2)
        d.ok({"op": "resume", "line": "desk-01"})
        time.sleep(0.2)
        d.ok({"op": "end", "line": "desk-01"})
        sampled = d.ok({"op": "start", "line": "desk-01", "caller": CALLER})["call_id"]
        time.sleep(0.3)
        d.ok({"op": "end", "line": "desk-01"})
        wiped = d.ok({**start, "agent": None})["call_id"]
        time.sleep(0.2)
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed", 2)
        d.wait_for_event("call_wiped")
        signed = {"call_id": marked, "actor": "qa", "reason": "QA-7"}
        d.ok({"op": "extend", **signed, "purpose": "escalation", "days": 1000})
        d.ok({"op": "hold", **signed, "actor": "legal", "reason": "case 12"})
        d.ok({"op": "release", **signed, "actor": "legal", "reason": "case closed"})
        d.ok({"op": "access", **signed, "actor": "dpo", "reason": "ticket 9"})
    assert d.proc is not None and d.proc.returncode == 0
    return Made(d.state, marked, sampled, wiped)


@pytest.fixture
def state(made: Made, tmp_path: Path) -> Path:
    """A copy of the made state dir, for one test to tamper with."""
    copy = tmp_path / "state"
    shutil.copytree(made.state, copy)
    return copy


def logged(state: Path) -> list[dict[str, Any]]:
    return list(read_chain(state / "commit.log"))


def show_json(state: Path, call_id: str) -> dict[str, Any]:
    done = cli("audit", "show", call_id, "--state-dir", str(state), "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def show_text(state: Path, call_id: str) -> str:
    done = cli("audit", "show", call_id, "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the story of a committed call -------------------------------------------------------------


def test_the_json_holds_every_line_that_names_the_call_with_its_line_and_time(
    made: Made,
) -> None:
    entries = logged(made.state)
    naming = [e for e in entries if e.get("call_id") == made.marked]
    story = show_json(made.state, made.marked)
    assert story["call_id"] == made.marked
    assert story["entries"] == len(entries)
    timeline = story["timeline"]
    assert [(i["log_line"], i["time"], i["event"]) for i in timeline] == [
        (e["seq"], e["time"], e["event"]) for e in naming
    ]
    assert [i["event"] for i in timeline] == [
        "call_started", "call_marked", "mark_refused", "call_paused", "call_resumed",
        "call_committed", "recording_extended", "recording_held", "recording_released",
        "recording_accessed",
    ]  # fmt: skip
    by_event = {e["event"]: e for e in naming}
    assert story["started"]["log_line"] == by_event["call_started"]["seq"]
    assert story["started"]["agent"] == "ann"
    assert story["started"]["announced"] == ["escalation"]
    assert story["started"]["epoch"] == by_event["call_started"]["epoch"] >= 1
    assert [m["purpose"] for m in story["marks"]] == ["escalation"]
    assert [(m["purpose"], m["log_line"]) for m in story["refused_marks"]] == [
        ("training", by_event["mark_refused"]["seq"])
    ]
    assert [p["event"] for p in story["pauses"]] == ["call_paused", "call_resumed"]
    committed = by_event["call_committed"]
    outcome = story["outcome"]
    for key in ("path", "sha256", "reasons", "purposes", "retention", "seconds"):
        assert outcome[key] == committed[key], key
    assert (outcome["event"], outcome["log_line"]) == ("call_committed", committed["seq"])
    assert outcome["reasons"] == ["marked"]
    assert story["deletion"] is None


def test_later_retention_events_and_accesses_carry_actor_and_reason(made: Made) -> None:
    story = show_json(made.state, made.marked)
    events = [(e["event"], e["actor"], e["reason"]) for e in story["retention_events"]]
    assert events == [
        ("recording_extended", "qa", "QA-7"),
        ("recording_held", "legal", "case 12"),
        ("recording_released", "legal", "case closed"),
    ]
    extended = story["retention_events"][0]
    assert extended["purpose"] == "escalation"
    assert extended["retain_until"] > story["outcome"]["retention"]["escalation"]
    assert [(a["actor"], a["reason"]) for a in story["accesses"]] == [("dpo", "ticket 9")]
    now = story["retention"]
    assert now["purposes"]["escalation"] == {
        "retain_until": extended["retain_until"],
        "resolved": False,
    }
    assert now["hold"] is None  # released


def test_the_sidecar_adds_the_mark_times_and_the_pause_but_never_the_note(made: Made) -> None:
    story = show_json(made.state, made.marked)
    sidecar = story["sidecar"]
    assert sidecar["present"] and sidecar["problem"] is None
    assert [(m["purpose"], m["note"]) for m in sidecar["marks"]] == [("escalation", "present")]
    (pause,) = sidecar["pauses"]
    assert 0.1 < pause["seconds"] < 1.0
    assert NOTE not in json.dumps(story)
    assert NOTE not in show_text(made.state, made.marked)


def test_the_text_is_a_timeline_with_each_line_number(made: Made) -> None:
    text = show_text(made.state, made.marked)
    entries = [e for e in logged(made.state) if e.get("call_id") == made.marked]
    for entry in entries:
        assert f"line {entry['seq']:>2}  {entry['time']}" in text, entry["event"]
    for needle in (
        f"call {made.marked}: committed",
        "started on desk-01, agent ann",
        "marked for escalation",
        "mark for training refused",
        "paused",
        "resumed",
        "committed, kept as marked",
        "escalation extended, now until",
        "by qa: QA-7",
        "legal hold, by legal: case 12",
        "legal hold released, by legal: case closed",
        "recording opened, by dpo: ticket 9",
        "legal hold: no",
        "escalation, note: present",
    ):
        assert needle in text, needle
    assert text.index("marked for escalation") < text.index("committed, kept as marked")


def test_the_caller_is_only_said_to_be_there(made: Made) -> None:
    started = next(e for e in logged(made.state) if e.get("call_id") == made.sampled)
    assert started["event"] == "call_started"
    pseudonym = started["caller_ref"]
    assert isinstance(pseudonym, str) and len(pseudonym) == 64
    story = show_json(made.state, made.sampled)
    assert story["started"]["caller_ref"] is True
    assert story["outcome"]["caller_ref"] is True
    text = show_text(made.state, made.sampled)
    assert "caller pseudonym (caller_ref): logged" in text
    for secret in (pseudonym, CALLER, CALLER.replace(" ", "")):
        assert secret not in text
        assert secret not in json.dumps(story)
    assert show_json(made.state, made.marked)["started"]["caller_ref"] is False


def test_the_draw_is_recomputed_from_the_seed_revealed_later(made: Made) -> None:
    entries = logged(made.state)
    (reveal,) = [e for e in entries if e["event"] == "sampling_reveal"]
    sampled = show_json(made.state, made.sampled)
    draw = sampled["draw"]
    assert draw["checkable"] and draw["seed_matches"]
    assert draw["revealed_line"] == reveal["seq"]
    assert (draw["one_in"], draw["purpose"]) == (1, "training")
    assert (draw["picked"], draw["sampled"], draw["agrees"]) == (True, True, True)
    assert sampled["outcome"]["reasons"] == ["sampled"]
    # one_in 1 picks every call, but only a call told of training may be sampled for it
    marked = show_json(made.state, made.marked)["draw"]
    assert (marked["picked"], marked["announced"], marked["sampled"]) == (True, False, False)
    assert marked["agrees"] is True
    text = show_text(made.state, made.sampled)
    assert f"seed revealed on line {reveal['seq']}" in text
    assert "the draw picked this call: sampled; the outcome agrees" in text


# --- the recording's hash -----------------------------------------------------------------------


def test_the_recording_is_reported_intact_then_altered_after_one_flipped_byte(
    state: Path, made: Made
) -> None:
    story = show_json(state, made.marked)
    path = story["outcome"]["path"]
    assert story["recording"] == {
        "path": path,
        "present": True,
        "sha256_matches": True,
        "problem": None,
    }
    assert "SHA-256 matches the one logged on line" in show_text(state, made.marked)
    file = state / path
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    assert show_json(state, made.marked)["recording"]["sha256_matches"] is False
    assert "SHA-256 does NOT match" in show_text(state, made.marked)


def test_a_missing_recording_and_sidecar_are_said_to_be_missing(state: Path, made: Made) -> None:
    story = show_json(state, made.marked)
    (state / story["outcome"]["path"]).unlink()
    (state / story["sidecar"]["path"]).unlink()
    again = show_json(state, made.marked)
    assert again["recording"]["present"] is False
    assert again["recording"]["sha256_matches"] is None
    assert again["sidecar"]["present"] is False
    assert ": not present" in show_text(state, made.marked)


# --- a wiped call, an unknown call, a broken chain ----------------------------------------------


def test_a_wiped_call_says_why_and_has_no_files(made: Made) -> None:
    story = show_json(made.state, made.wiped)
    wiped = next(e for e in logged(made.state) if e["event"] == "call_wiped")
    assert story["outcome"]["event"] == "call_wiped"
    assert story["outcome"]["log_line"] == wiped["seq"]
    assert story["outcome"]["why"] == "not_kept"
    assert (story["recording"], story["sidecar"], story["retention"]) == (None, None, None)
    assert story["started"]["agent"] is None
    text = show_text(made.state, made.wiped)
    assert f"call {made.wiped}: wiped (not_kept)" in text
    assert f"line {wiped['seq']:>2}  {wiped['time']}  wiped (not_kept)" in text
    assert "none: the call was never committed" in text


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_an_unknown_call_is_exit_1(made: Made, json_flag: list[str]) -> None:
    done = cli("audit", "show", "c-nobody", "--state-dir", str(made.state), *json_flag)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "hindsight: no call c-nobody in commit.log\n"


def test_a_missing_log_is_exit_1(tmp_path: Path) -> None:
    done = cli("audit", "show", "c1", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == f"hindsight: commit.log is missing in {tmp_path}\n"


def test_a_tampered_chain_is_refused_as_report_refuses_it(state: Path, made: Made) -> None:
    log = state / "commit.log"
    data = log.read_bytes()
    log.write_bytes(data.replace(b'"reason":"ticket 9"', b'"reason":"ticket 8"'))
    done = cli("audit", "show", made.marked, "--state-dir", str(state))
    report = cli("audit", "report", "--state-dir", str(state))
    assert (done.returncode, done.stdout) == (1, "")
    assert "hash does not match the line's content (altered)" in done.stderr
    assert done.stderr == report.stderr
    # even for a call the altered line does not name: the whole chain is checked
    other = cli("audit", "show", made.wiped, "--state-dir", str(state))
    assert (other.returncode, other.stderr) == (1, report.stderr)


def test_an_erased_recording_tells_who_deleted_it_and_why(tmp_path: Path) -> None:
    build_state(tmp_path)
    story = show(tmp_path, "c3")
    assert story is not None
    deletion = story.to_json()["deletion"]
    assert (deletion["log_line"], deletion["why"]) == (12, "erased")
    assert (deletion["actor"], deletion["reason"]) == ("dpo", "the caller asked")
    assert story.retention is None
    assert story.recording is not None and not story.recording.present
    text = render(story)
    assert "call c3: committed, recording deleted" in text
    assert "recording deleted (erased), by dpo: the caller asked" in text
    assert "none: the recording was deleted on line 12" in text
    assert f"{DAY}/c3.flac: not present, as deleted on line 12" in text


def test_a_call_lost_in_a_crash_is_wiped_in_the_next_run(tmp_path: Path) -> None:
    build_state(tmp_path)
    story = show(tmp_path, "c4")
    assert story is not None
    assert [(i.log_line, i.event) for i in story.items] == [(9, "call_started"), (11, "call_wiped")]
    assert "wiped (lost_in_crash), 0 s of audio" in render(story)


# --- logs the daemon never writes ---------------------------------------------------------------

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred"


def test_hostile_names_are_shown_quoted_and_kept_exact_in_json(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path / "commit.log") as log:
        log.append("daemon_started", version="0.1.0")
        log.append("call_started", call_id="c1", line="desk\n01", agent=HOSTILE, announced=[])
        log.append("call_wiped", call_id="c1", line="desk\n01", seconds=1.0, why=HOSTILE)
        log.append("recording_accessed", call_id="c1", actor="x", reason=HOSTILE)
    text = show_text(tmp_path, "c1")
    assert "\x1b" not in text and "\x07" not in text
    assert repr(HOSTILE) in text
    assert "'desk\\n01'" in text
    done = cli("audit", "show", "c1", "--state-dir", str(tmp_path), "--json")
    assert "\x1b" not in done.stdout
    story = json.loads(done.stdout)
    assert story["started"]["agent"] == story["accesses"][0]["reason"] == HOSTILE


def test_a_hostile_call_id_in_the_refusal_is_quoted(tmp_path: Path) -> None:
    CommitLog.open(tmp_path / "commit.log").close()
    done = cli("audit", "show", "\x1b[2J", "--state-dir", str(tmp_path))
    assert done.returncode == 1
    assert "\x1b" not in done.stderr
    assert done.stderr == "hindsight: no call '\\x1b[2J' in commit.log\n"


SEED = bytes(range(32))


def epoch_log(path: Path, revealed: bytes | None, why: str = "lost_in_crash") -> None:
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0")
        log.append(
            "sampling_epoch", epoch=1, one_in=1, purpose="training", commitment=commitment(SEED)
        )
        log.append(
            "call_started", call_id="c1", line="desk-01", agent=None, announced=["training"],
            epoch=1,
        )  # fmt: skip
        log.append("call_wiped", call_id="c1", line="desk-01", seconds=0.0, why=why)
        if revealed is not None:
            log.append("sampling_reveal", epoch=1, seed=revealed.hex())


def test_an_epoch_never_revealed_cannot_be_checked(tmp_path: Path) -> None:
    epoch_log(tmp_path / "commit.log", None)
    story = show(tmp_path, "c1")
    assert story is not None and story.draw is not None
    assert (story.draw.epoch, story.draw.declared_line, story.draw.checkable) == (1, 2, False)
    assert story.draw.picked is None
    assert "seed not revealed in this log" in render(story)
    assert story.to_json()["draw"]["revealed_line"] is None


def test_a_revealed_seed_that_breaks_its_commitment_is_said_so(tmp_path: Path) -> None:
    epoch_log(tmp_path / "commit.log", bytes(32))
    story = show(tmp_path, "c1")
    assert story is not None and story.draw is not None
    assert (story.draw.revealed_line, story.draw.seed_matches) == (5, False)
    assert not story.draw.checkable
    assert "does NOT match the epoch's commitment" in render(story)


def test_a_call_the_draw_picked_but_wiped_unkept_does_not_agree(tmp_path: Path) -> None:
    """The rule ``audit verify`` applies, told for the one call."""
    epoch_log(tmp_path / "commit.log", SEED, why="not_kept")
    story = show(tmp_path, "c1")
    assert story is not None and story.draw is not None
    draw = story.draw
    assert (draw.checkable, draw.picked, draw.sampled, draw.agrees) == (True, True, True, False)
    assert "the draw picked this call: sampled; the outcome does NOT agree" in render(story)
    problem = verify(tmp_path).problem
    assert problem is not None and "line 4: call 'c1' was picked by the draw" in problem


def test_only_the_lines_naming_the_call_are_kept(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path / "commit.log") as log:
        for n in range(50):
            log.append("call_started", call_id=f"c{n}", line="desk-01", agent=None)
            log.append("call_wiped", call_id=f"c{n}", line="desk-01", seconds=1.0, why="not_kept")
    story = show(tmp_path, "c7")
    assert story is not None
    assert story.entries == 100
    assert [item.log_line for item in story.items] == [15, 16]
    assert show(tmp_path, "c") is None  # a prefix of ids is no id


def test_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    """Keeping every line of 4,000 would take megabytes; the call's two lines take little."""
    write_chained(tmp_path / "commit.log", 4000)
    tracemalloc.start()
    try:
        story = show(tmp_path, "c7")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert story is not None and story.entries == 4000
    assert peak < 256 * 1024, peak


# --- progress -----------------------------------------------------------------------------------


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_redraws_at_most_every_interval_and_erases_itself() -> None:
    now = [0.0]
    out = FakeTty()
    drawing = Bar("verifying commit.log", 1_000_000, out, clock=lambda: now[0])
    for line in range(1, 1001):
        drawing.update(line, line * 1000)
        now[0] += 0.001  # a second in all
    draws = out.getvalue().count("\r")
    assert round(1.0 / INTERVAL) - 1 <= draws <= round(1.0 / INTERVAL) + 1
    drawing.erase()
    assert out.getvalue().endswith(ERASE)
    drawing.erase()
    assert out.getvalue().count(ERASE) == 1


def test_no_bar_and_no_hook_off_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    with bar(tmp_path / "commit.log", "verifying", out) as hook:
        assert hook is None
    assert out.getvalue() == ""


def test_a_terminal_that_fails_turns_the_bar_off_without_failing() -> None:
    class Gone(FakeTty):
        def write(self, text: str) -> int:
            raise OSError(5, "Input/output error")

    drawing = Bar("x", 10, Gone())
    drawing.update(1, 5)
    assert not drawing.on and not drawing.drawn
    drawing.erase()


def test_read_chain_tells_the_hook_how_far_it_has_come_block_by_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook hears of each block's whole lines as they are read: lines and bytes, each
    the end of a line, up to the whole log."""
    monkeypatch.setattr(commitlog, "BLOCK", 1000)
    path = tmp_path / "commit.log"
    write_chained(path, 20)
    seen: list[tuple[int, int]] = []
    entries = list(read_chain(path, lambda lines, done: seen.append((lines, done))))
    ends = [len(line) for line in path.read_bytes().splitlines(keepends=True)]
    line_ends = {n: sum(ends[:n]) for n in range(1, 21)}
    assert len(seen) > 3 and seen[-1] == (20, path.stat().st_size)
    assert all(line_ends[lines] == done for lines, done in seen if lines)
    assert [lines for lines, _ in seen] == sorted({lines for lines, _ in seen})
    assert entries == list(read_chain(path))


def write_chained(path: Path, lines: int) -> None:
    """A valid log of ``lines`` lines (calls started and wiped), written at once."""
    prev, out = GENESIS, []
    for seq in range(1, lines + 1):
        call_id, event = f"c{(seq + 1) // 2}", "call_started" if seq % 2 else "call_wiped"
        entry: dict[str, Any] = {"seq": seq, "time": "2026-11-29T10:00:00.000Z", "event": event}
        entry.update(call_id=call_id, line="desk-01", agent=None, prev=prev)
        if event == "call_wiped":
            entry.update(seconds=1.0, why="not_kept")
        entry["hash"] = prev = entry_hash(entry)
        out.append(json.dumps(entry, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def big_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("big")
    write_chained(state / "commit.log", 4000)
    return state


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float


def run_on_pty(args: list[str], columns: int = 80) -> Run:
    """The command with stderr on a pseudo-terminal ``columns`` wide, stdout on a pipe."""
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    began = time.monotonic()
    proc = subprocess.Popen(
        [str(BIN / "hindsight"), *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    got = bytearray()
    reader = threading.Thread(target=drain, args=(master, got))
    reader.start()
    stdout, _ = proc.communicate(timeout=60)
    seconds = time.monotonic() - began
    reader.join(timeout=10)
    os.close(master)
    return Run(proc.returncode, stdout, bytes(got), seconds)


def drain(fd: int, into: bytearray) -> None:
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: every writer closed the terminal
            return
        if not data:
            return
        into.extend(data)


def run_on_pipe(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(BIN / "hindsight"), *args], capture_output=True, timeout=60, check=False
    )


def without_time(stdout: bytes) -> bytes:
    """The output but the time a report was made, which differs from one run to the next."""
    if not stdout.startswith(b"{"):
        return stdout
    figures = json.loads(stdout)
    del figures["retention"]["as_of"]
    return json.dumps(figures).encode()


VERBS = {
    "verify": ["audit", "verify"],
    "report": ["audit", "report", "--json"],
    "show": ["audit", "show", "c7"],
}


@pytest.mark.parametrize("verb", VERBS.values(), ids=VERBS.keys())
def test_on_a_terminal_the_bar_is_drawn_then_erased_and_stdout_is_unchanged(
    big_state: Path, verb: list[str]
) -> None:
    args = [*verb, "--state-dir", str(big_state)]
    piped = run_on_pipe(args)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == b""  # no terminal, no bar, not a byte
    on_tty = run_on_pty(args)
    assert on_tty.returncode == 0
    assert without_time(on_tty.stdout) == without_time(piped.stdout)
    err = on_tty.stderr.decode()
    frames = [frame for frame in err.split("\r") if frame]
    assert frames[0].startswith(("verifying commit.log [", "reading commit.log ["))
    assert "MiB" in frames[0] and "lines" in frames[0]
    assert err.endswith(ERASE)  # nothing after the erase: the line is clean
    assert err.count(ERASE) == 1
    drawn = [frame.removesuffix("\x1b[K") for frame in frames if frame != "\x1b[K"]
    assert all(len(frame) <= 79 for frame in drawn), drawn
    assert len(drawn) <= 2 + on_tty.seconds / INTERVAL


def test_a_narrow_terminal_gets_no_wider_bar(big_state: Path) -> None:
    run = run_on_pty(["audit", "verify", "--state-dir", str(big_state)], columns=40)
    assert run.returncode == 0
    frames = [f.removesuffix("\x1b[K") for f in run.stderr.decode().split("\r") if f]
    assert frames and all(len(frame) <= 39 for frame in frames)
