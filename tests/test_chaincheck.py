"""Reading the log in blocks, and checking its hashes in a second process.

``read_chain`` reads the log in blocks; ``hindsight.chaincheck.entries`` sends the same bytes
to a child that checks the hashes while this process reads the entries. Both must give
exactly what the line-by-line reading of before gave: the same entries, or the same error,
with the same message (and, for a torn tail, the same offset), for every log a crash or a
forger could leave. The reference here is that reading, kept in ``commitlog`` for the
daemon's start (``_raw_lines``, ``_parse``, ``Chain``).
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hindsight import chaincheck, commitlog
from hindsight.audit import verify
from hindsight.commitlog import Chain, CommitLog, _parse, _raw_lines, read_chain, read_entries
from hindsight.errors import CommitLogError, TornTailError

Outcome = tuple[str, Any, Any]


def reference(path: Path) -> Iterator[dict[str, Any]]:
    """The line-by-line reading ``read_chain`` did before it read blocks."""
    chain = Chain(path.name)
    with path.open("rb") as handle:
        for raw in _raw_lines(handle):
            entry, digest = _parse(path.name, raw)
            chain.check(raw.number, entry, digest)
            yield entry


def reference_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The line-by-line reading ``read_entries`` did: parsed, the chain not checked."""
    with path.open("rb") as handle:
        for raw in _raw_lines(handle):
            yield _parse(path.name, raw)[0]


def outcome(read: Callable[[Path], Iterator[dict[str, Any]]], path: Path) -> Outcome:
    entries: list[dict[str, Any]] = []
    try:
        for entry in read(path):
            entries.append(entry)
    except TornTailError as exc:
        return ("torn", str(exc), exc.offset)
    except CommitLogError as exc:
        return ("broken", str(exc), None)
    return ("ok", entries, None)


def a_log(path: Path) -> bytes:
    """A real log of a few calls, with what a line may hold: text beyond ASCII, floats,
    lists, nested objects, nulls."""
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="0.1.0", config_sha256=None)
        for n in range(6):
            call_id = f"call-{n}"
            log.append(
                "call_started", call_id=call_id, line="desk-ü", agent="Zoë",
                announced=["training"], epoch=None,
            )  # fmt: skip
            if n % 3 == 0:
                log.append("call_marked", call_id=call_id, purpose="escalation", note="„x“")
            log.append(
                "call_wiped", call_id=call_id, line="desk-ü", seconds=52.25 + n,
                why="not_kept", extra={"b": [1, 2.5, None], "a": True},
            )  # fmt: skip
        log.append("daemon_stopped", version="0.1.0")
    return path.read_bytes()


def mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    """What a crash or a forger can do to a log, at its first, a middle and its last line."""
    lines = data.splitlines(keepends=True)
    yield "as written", data
    for at in (0, len(lines) // 2, len(lines) - 1):
        line = lines[at]
        before, after = b"".join(lines[:at]), b"".join(lines[at + 1 :])
        yield f"{at}: a byte altered", before + line.replace(b"call", b"cell", 1) + after
        yield f"{at}: removed", before + after
        yield f"{at}: doubled", before + line + line + after
        yield f"{at}: not JSON", before + b"{not json\n" + after
        yield f"{at}: not an object", before + b"[1, 2]\n" + after
        yield f"{at}: blank", before + b"\n" + after
        yield f"{at}: cut in half", before + line[: len(line) // 2] + b"\n" + after
        yield f"{at}: CRLF", before + line[:-1] + b"\r\n" + after
        yield f"{at}: seq a string", before + line.replace(b'"seq":', b'"seq":"', 1) + after
        yield f"{at}: cut short there", before + line[: len(line) // 2]
        if at + 1 < len(lines):
            yield f"{at}: swapped", before + lines[at + 1] + line + b"".join(lines[at + 2 :])
    yield "no last line end", data[:-1]
    yield "empty", b""
    yield "only a line end", b"\n"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("logs")
    data = a_log(tmp / "made" / "commit.log")
    found = []
    for n, (what, mutated) in enumerate(mutations(data)):
        path = tmp / str(n) / "commit.log"
        path.parent.mkdir()
        path.write_bytes(mutated)
        found.append((what, path))
    return found


@pytest.mark.parametrize("block", [commitlog.BLOCK, 64, 1])
def test_reading_in_blocks_gives_what_the_line_by_line_reading_gave(
    logs: list[tuple[str, Path]], block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commitlog, "BLOCK", block)  # lines across blocks, and whole blocks
    kinds = set()
    for what, path in logs:
        expected = outcome(reference, path)
        assert outcome(read_chain, path) == expected, what
        assert outcome(read_entries, path) == outcome(reference_entries, path), what
        kinds.add(expected[0])
    assert kinds == {"ok", "torn", "broken"}


def test_the_hashes_checked_aside_give_what_read_chain_gives(
    logs: list[tuple[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child reads 32 KiB blocks, this process 100-byte ones: the bytes are the same."""
    monkeypatch.setattr(commitlog, "BLOCK", 100)
    for what, path in logs:
        aside = outcome(lambda p: chaincheck.entries(p, aside=True), path)
        assert aside == outcome(read_chain, path), what


def test_an_altered_line_whose_chain_still_holds_is_caught_by_the_child_after_the_entries(
    tmp_path: Path,
) -> None:
    """Only the child hashes: this process yields every entry, and the break comes last,
    with the message ``read_chain`` gives."""
    path = tmp_path / "commit.log"
    data = a_log(path)
    path.write_bytes(data.replace(b'"agent":"Zo\xc3\xab"', b'"agent":"Eve"', 1))
    yielded: list[dict[str, Any]] = []
    with pytest.raises(CommitLogError) as raised:
        for entry in chaincheck.entries(path, aside=True):
            yielded.append(entry)
    assert len(yielded) == len(data.splitlines())
    assert (
        str(raised.value) == "commit.log line 2: hash does not match the line's content (altered)"
    )


def test_a_small_log_is_read_here_and_a_long_one_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[str] = []
    real = chaincheck._spawn

    def spawn(name: str) -> chaincheck._Child | None:
        spawned.append(name)
        return real(name)

    monkeypatch.setattr(chaincheck, "_spawn", spawn)
    path = tmp_path / "commit.log"
    a_log(path)
    assert list(chaincheck.entries(path)) == list(read_chain(path))
    assert spawned == []
    monkeypatch.setattr(chaincheck, "ASIDE_BYTES", 1)
    monkeypatch.setattr(chaincheck, "_cores", lambda: 2)
    assert list(chaincheck.entries(path)) == list(read_chain(path))
    assert spawned == ["commit.log"]
    monkeypatch.setattr(chaincheck, "_cores", lambda: 1)
    list(chaincheck.entries(path))
    assert spawned == ["commit.log"]  # one core: nothing to gain


def test_no_child_can_be_made_and_the_log_is_read_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    path = tmp_path / "commit.log"
    data = a_log(path)
    assert list(chaincheck.entries(path, aside=True)) == list(read_chain(path))
    path.write_bytes(data.replace(b"call-1", b"call-X", 1))
    with pytest.raises(CommitLogError, match="altered"):
        list(chaincheck.entries(path, aside=True))


@pytest.mark.parametrize(
    "child",
    [
        "import sys; sys.stderr.write('Traceback\\nMemoryError\\n'); sys.exit(1)",
        "import sys; sys.stdin.buffer.read(); print('not json')",
        'import sys; sys.stdin.buffer.read(); print(\'{"lines": 1, "problem": null}\')',
    ],
    ids=["dies", "babbles", "miscounts"],
)
def test_a_child_that_fails_is_an_error_never_a_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str
) -> None:
    real = subprocess.Popen

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        return real([sys.executable, "-c", child], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(commitlog, "BLOCK", 64)  # a dead child breaks the pipe mid-way
    path = tmp_path / "commit.log"
    a_log(path)
    with pytest.raises(CommitLogError, match="chain check's process") as raised:
        list(chaincheck.entries(path, aside=True))
    if "dies" in child:
        assert "MemoryError" in str(raised.value) or "exit status 1" in str(raised.value)


def test_a_reader_that_stops_early_ends_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    children: list[chaincheck._Child] = []
    real = chaincheck._spawn

    def spawn(name: str) -> chaincheck._Child | None:
        child = real(name)
        assert child is not None
        children.append(child)
        return child

    monkeypatch.setattr(chaincheck, "_spawn", spawn)
    path = tmp_path / "commit.log"
    a_log(path)
    reading = chaincheck.entries(path, aside=True)
    assert next(reading)["event"] == "daemon_started"
    assert not gc.isenabled()  # paused while the log is read
    reading.close()
    assert gc.isenabled()
    (child,) = children
    assert child.process.returncode is not None  # ended and reaped, not left behind


def test_the_collector_runs_again_after_a_broken_log(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    path.write_bytes(b"{not json\n")
    with pytest.raises(CommitLogError):
        list(chaincheck.entries(path))
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(CommitLogError):
            list(chaincheck.entries(path))
        assert not gc.isenabled()  # left as it was: off
    finally:
        gc.enable()


def test_the_child_is_a_command_of_its_own(tmp_path: Path) -> None:
    data = a_log(tmp_path / "commit.log")
    run = subprocess.run(
        [sys.executable, "-m", "hindsight.chaincheck", "commit.log"],
        input=data[:-10],
        capture_output=True,
        check=True,
    )
    assert run.stdout.startswith(b'{"lines": ')
    assert b"the tail is torn" in run.stdout


@pytest.mark.parametrize("edit", [b"", b"call-2", b"Zo\xc3\xab"])
def test_verify_says_the_same_with_the_hashes_checked_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: bytes
) -> None:
    path = tmp_path / "commit.log"
    data = a_log(path)
    if edit:
        path.write_bytes(data.replace(edit, b"X" * len(edit), 1))
    here = verify(tmp_path)
    monkeypatch.setattr(chaincheck, "ASIDE_BYTES", 0)
    monkeypatch.setattr(chaincheck, "_cores", lambda: 2)
    aside = verify(tmp_path)
    assert (aside.ok, aside.problem, aside.recordings) == (here.ok, here.problem, here.recordings)
    assert here.ok == (edit == b"")
    if here.ok:
        assert aside == here
