"""Witnesses: signed checkpoints of a recorder's log, kept on another host.

``hindsight audit witness`` asks the daemon for ``checkpoint`` (once, or every N seconds)
and keeps each new one in ``STORE/checkpoints.jsonl``, one JSON object a line, appended
and fsynced. It refuses, and keeps nothing of, a checkpoint whose signature is not valid,
one signed by another key than the first it kept (the key is pinned), one that goes
backwards (a lower ``seq`` than the last kept), and one that gives a line it kept before
another hash (a rewritten log). ``hindsight audit verify --witness STORE`` then fails when
the log no longer holds a witnessed line with its witnessed hash: cut short or rewritten.

What it proves, and what it does not, against root on the recorder: root can rewrite or cut
the log at will, and re-sign checkpoints with the daemon's key; but it cannot change what a
witness on another host already holds. So anything before the last witnessed line is fixed:
a change there shows. What happened after the last checkpoint is not covered, and a
recorder whose root rewrites history before any witness saw it cannot be caught this way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from hindsight.checkpoint import SignedCheckpoint
from hindsight.durable import fsync_dir
from hindsight.errors import ClientError
from hindsight.protocol import EXIT_REFUSED, EXIT_UNREACHABLE

STORE_NAME = "checkpoints.jsonl"
STORE_MODE = 0o640


class Refused(ClientError):
    """A checkpoint the witness will not keep; nothing of it was kept."""

    def __init__(self, message: str) -> None:
        super().__init__(f"checkpoint refused: {message}", EXIT_REFUSED)


class Store:
    """The checkpoints a witness kept, in the order it kept them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STORE_NAME
        self.kept: list[SignedCheckpoint] = list(self._read())
        self._by_seq = {c.seq: c for c in self.kept}

    @property
    def last(self) -> SignedCheckpoint | None:
        return self.kept[-1] if self.kept else None

    def check(self, new: SignedCheckpoint) -> str | None:
        """Why ``new`` cannot be kept, or None."""
        problem = new.problem()
        if problem is not None:
            return f"line {new.seq!r} at {new.time}: {problem}"
        last = self.last
        if last is None:
            return None
        if new.public_key != last.public_key:
            return (
                f"line {new.seq} at {new.time} is signed by key {new.public_key[:16]}…, not by "
                f"the recorder's key {last.public_key[:16]}… that this witness kept so far"
            )
        seen = self._by_seq.get(new.seq)
        if seen is not None and seen.hash != new.hash:
            return (
                f"line {new.seq} had hash {seen.hash[:16]}… on {seen.time}, now "
                f"{new.hash[:16]}…: the log was rewritten"
            )
        if new.seq < last.seq:
            return (
                f"it goes backwards: line {new.seq} at {new.time}, but this witness saw line "
                f"{last.seq} on {last.time}: the log was cut short"
            )
        return None

    def keep(self, new: SignedCheckpoint) -> bool:
        """Keep ``new`` (durably); False when it adds nothing (the same line and hash as the
        last). ``Refused`` when it may not be kept."""
        problem = self.check(new)
        if problem is not None:
            raise Refused(problem)
        last = self.last
        if last is not None and (last.seq, last.hash) == (new.seq, new.hash):
            return False
        self._append(new)
        self.kept.append(new)
        self._by_seq[new.seq] = new
        return True

    def witnessed(self) -> dict[int, SignedCheckpoint]:
        """Line number -> the checkpoint that saw it; each checked again (signature, key).
        A store without any (a mistyped folder) is an error: it would prove nothing."""
        if not self.kept:
            raise ClientError(f"{self.path}: no checkpoint kept there", EXIT_REFUSED)
        seen: dict[int, SignedCheckpoint] = {}
        first = self.kept[0].public_key if self.kept else None
        for kept in self.kept:
            problem = kept.problem()
            if problem is None and kept.public_key != first:
                problem = "it is signed by another key than the first checkpoint"
            if problem is not None:
                raise ClientError(
                    f"{self.path}: the checkpoint of line {kept.seq} cannot be trusted: {problem}",
                    EXIT_REFUSED,
                )
            seen[kept.seq] = kept
        return seen

    def _read(self) -> Iterator[SignedCheckpoint]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"cannot read {self.path}: {exc}", EXIT_REFUSED) from exc
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                yield SignedCheckpoint(**json.loads(line))
            except (ValueError, TypeError):
                raise ClientError(
                    f"{self.path} line {number} is not a checkpoint", EXIT_REFUSED
                ) from None

    def _append(self, new: SignedCheckpoint) -> None:
        data = (json.dumps(asdict(new), separators=(",", ":")) + "\n").encode("utf-8")
        created = not self.path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, STORE_MODE)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.folder)


def run(fetch: Callable[[], SignedCheckpoint], store: Store, every: float | None) -> int:
    """Fetch and keep checkpoints: once (``every`` None), or every ``every`` seconds until
    stopped. A daemon that does not answer is reported and, in a loop, tried again; a
    checkpoint that may not be kept stops the witness (exit 1): that needs a human."""
    while True:
        try:
            new = fetch()
        except ClientError as exc:
            if every is None or exc.exit_code != EXIT_UNREACHABLE:
                raise
            print(f"hindsight: witness: {exc}; trying again in {every:g} s", file=sys.stderr)
        else:
            if store.keep(new):
                print(f"witnessed line {new.seq} (hash {new.hash[:16]}…) at {new.time}", flush=True)
            else:
                print(f"no new line since line {new.seq} at {new.time}", flush=True)
        if every is None:
            return 0
        time.sleep(every)
