"""Reading a long log on two cores: the chain's hashes checked in a second process while this
one reads the entries.

Checking the chain costs about as much per line as the auditor's rules do (each line is
parsed, written in canonical form and hashed), and no line's hash depends on another's
reading, only on the bytes. So ``entries`` sends every byte it reads to a child process
(``python -m hindsight.chaincheck NAME``), which checks them exactly as ``read_chain`` does,
while this process parses the same bytes and checks all that costs little (``seq``,
``prev``, a string ``hash``, ``time`` and ``event``), and yields each entry.

Rules:

- The same bytes: the child checks exactly the bytes this process read, sent down a pipe;
  the file is read once, so a log that grows or changes meanwhile cannot make the two differ.
- The same verdict as ``read_chain``, later: entries are yielded before the child has
  checked their hashes, and its verdict comes when the log has been read. A broken chain
  is raised as ``read_chain`` raises it, with the same message, after the last entry; a
  reader that needs the chain's verdict before a line's meaning (verify: "integrity before
  meaning") gets it before it reports anything. Where this process finds a break itself, it
  yields no more entries, sends the rest of the log, and raises the child's message.
- A child that cannot start (no second core, or no process may be made) is no error: the
  log is read with ``read_chain`` in this process. A child that dies is an error.
- The garbage collector is paused while the log is read (see ``paused_gc``).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, Any

from hindsight.commitlog import LineHook, _scan, read_chain
from hindsight.errors import CommitLogError, TornTailError

ASIDE_BYTES = 8 << 20  # from this size of log on, the hashes are checked aside
_PIPE_BYTES = 1 << 20  # the pipe to the child holds a block: both work while it fills


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a log is read: its entries, and what an audit
    keeps of them, make no reference cycles, yet the collector would walk every object they
    leave alive again and again (about a third of a verify's time). Reference counting still
    frees everything; the collector runs again, as it was, once the log is read."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def entries(
    path: Path, on_line: LineHook | None = None, *, aside: bool | None = None
) -> Generator[dict[str, Any], None, None]:
    """``read_chain(path, on_line)``, with the hashes checked in a second process when
    ``aside`` (None: when the log is of ``ASIDE_BYTES`` or more and the machine has a second
    core). The garbage collector is paused while the entries come."""
    with paused_gc():
        child = _spawn(path.name) if _worth_it(path, aside) else None
        if child is None:
            yield from read_chain(path, on_line)
        else:
            yield from _read_aside(path, on_line, child)


def _worth_it(path: Path, aside: bool | None) -> bool:
    if aside is not None:
        return aside
    try:
        size = path.stat().st_size
    except OSError:
        return False  # read_chain says why
    return size >= ASIDE_BYTES and _cores() > 1


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


class _Child:
    """The checking process, and the file its stderr goes to (read if it fails)."""

    def __init__(self, process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
        self.process, self.stderr = process, stderr

    def said(self) -> str:
        """The last line the child wrote to stderr, or its exit status."""
        self.process.wait()
        text = ""
        with contextlib.suppress(OSError, ValueError):
            self.stderr.seek(0)
            text = self.stderr.read().decode("utf-8", "replace").strip()
        last = text.splitlines()[-1] if text else ""
        return last or f"exit status {self.process.returncode}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout, self.stderr):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()


def _spawn(name: str) -> _Child | None:
    here = str(Path(__file__).resolve().parent.parent)  # this very package, in the child too
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": here if not path else f"{here}{os.pathsep}{path}"}
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _Child.close)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hindsight.chaincheck", name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    except OSError:
        stderr.close()
        return None
    assert process.stdin is not None
    with contextlib.suppress(OSError):  # Linux: a bigger pipe, so both sides keep working
        fcntl.fcntl(process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    return _Child(process, stderr)


def _read_aside(path: Path, on_line: LineHook | None, child: _Child) -> Iterator[dict[str, Any]]:
    feed = child.process.stdin
    assert feed is not None
    lines = 0
    try:
        try:
            with path.open("rb") as handle:

                def read(size: int) -> bytes:
                    block = handle.read(size)
                    if block:
                        feed.write(block)
                    return block

                try:
                    for entry in _scan(read, path.name, on_line, chained=True, hashed=False):
                        lines += 1
                        yield entry
                    mine = None
                except CommitLogError as exc:  # the child knows which line broke first
                    mine = exc
                    while read(1 << 20):
                        pass
            feed.close()  # the child's end of the log (a last write may break the pipe here)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise CommitLogError(
                    f"{path}: the chain check's process ended early ({child.said()})"
                ) from exc
            raise CommitLogError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
        verdict = _verdict(path, child)
    finally:
        child.close()
    problem, torn = verdict.get("problem"), verdict.get("torn")
    if isinstance(problem, str):
        raise CommitLogError(problem) if torn is None else TornTailError(problem, int(torn))
    if mine is not None:  # the child should have found it: say what this process found
        raise mine
    if verdict.get("lines") != lines:
        raise CommitLogError(
            f"{path}: the chain check's process read {verdict.get('lines')} lines, not {lines}"
        )


def _verdict(path: Path, child: _Child) -> dict[str, Any]:
    process = child.process
    assert process.stdout is not None
    out = process.stdout.read()
    process.wait()
    try:
        verdict = json.loads(out)
    except ValueError:
        verdict = None
    if process.returncode != 0 or not isinstance(verdict, dict):
        raise CommitLogError(f"{path}: the chain check's process failed ({child.said()})")
    return verdict


def main(argv: list[str]) -> int:
    """The child: check the chain of the log on stdin (named ``argv[0]`` in messages);
    print one JSON object: ``lines`` read, and ``problem`` (with ``torn``, the offset of a
    torn tail) or null."""
    name = argv[0] if argv else "commit.log"
    lines, problem, torn = 0, None, None
    with paused_gc():
        try:
            for _ in _scan(sys.stdin.buffer.read, name, None, chained=True):
                lines += 1
        except TornTailError as exc:
            problem, torn = str(exc), exc.offset
        except CommitLogError as exc:
            problem = str(exc)
    json.dump({"lines": lines, "problem": problem, "torn": torn}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
