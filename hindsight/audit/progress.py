"""A progress bar on stderr while an auditor's command reads a long commit log.

Rules:

- Only on a terminal: when the stream is not a TTY (a pipe, a file, a test) nothing at all
  is written, and the readers get no hook, so they run exactly as without a bar.
- Cheap: the hook runs for every line read, so between redraws it only reads the clock; it
  redraws at most every ``INTERVAL`` seconds (the first line is drawn at once).
- One line, never wider than the terminal, redrawn in place with a carriage return and
  erased (``ESC [ K``) when the reading ends, however it ends: what the command prints next
  starts on a clean line.
- The bar is a courtesy: a terminal that can no longer be written to turns it off, and
  never fails the command.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from hindsight.commitlog import LineHook

INTERVAL = 0.1  # seconds between redraws: ten a second at most
ERASE = "\r\x1b[K"  # back to the start of the line, then clear it
_MIB = 1024 * 1024


class Bar:
    """Bytes and lines read of a file of ``total`` bytes, drawn on ``stream``."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.clock = clock
        self.next = 0.0  # when the next redraw is due
        self.drawn = False
        self.on = True

    def update(self, lines: int, done: int) -> None:
        now = self.clock()
        if now < self.next or not self.on:
            return
        self.next = now + INTERVAL
        self._write(f"\r{self.text(lines, done)}\x1b[K")
        self.drawn = self.on

    def text(self, lines: int, done: int) -> str:
        """``LABEL [#####.....]  45%  12.3/27.1 MiB  123,456 lines``, cut to the terminal.
        The figures keep their width, so that the bar does not jump as they grow."""
        width = _columns(self.stream) - 1
        share = min(done / self.total, 1.0) if self.total else 1.0
        size = f"{self.total / _MIB:.1f}"
        figures = f"{share:4.0%}  {done / _MIB:>{len(size)}.1f}/{size} MiB  {lines:>9,} lines"
        room = width - len(self.label) - len(figures) - 5
        if room < 10:
            return f"{self.label} {figures}"[:width]
        filled = round(share * room)
        return f"{self.label} [{'#' * filled}{'.' * (room - filled)}]  {figures}"

    def erase(self) -> None:
        if self.drawn:
            self._write(ERASE)
            self.drawn = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a terminal gone (hung up, closed): no more bar
            self.on = False


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (stdout may be a pipe meanwhile)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 80
    return columns or 80  # a terminal that never said its size (a bare pty) says 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


@contextmanager
def bar(path: Path, label: str, stream: TextIO | None = None) -> Iterator[LineHook | None]:
    """The hook to hand ``read_chain`` while reading ``path``: a ``Bar`` on ``stream``
    (stderr by default) when it is a terminal, else None. Erased when the block ends."""
    out = sys.stderr if stream is None else stream
    if not _is_terminal(out):
        yield None
        return
    try:
        total = os.stat(path).st_size
    except OSError:  # missing: the reader says so itself
        total = 0
    drawing = Bar(f"{label} {path.name}", total, out)
    try:
        yield drawing.update
    finally:
        drawing.erase()
