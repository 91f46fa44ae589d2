"""The commit log's shipped segments: their names in the bucket, and the chain over their lines.

A closed segment of ``commit.log`` is the lines ``first``..``last``, byte for byte, each ending
in ``\\n``, stored under a host's prefix as ``log/{first:012d}-{last:012d}.jsonl``
(``docs/formats.md``, "Shipped log segments"). The shipper (``hindsight.daemon.shipper``)
writes them, the auditor (``hindsight.audit.s3``) reads them back; both check every line
with ``LineChain``, which is the very check ``read_chain`` applies to the local log (the same
parser, the same ``seq``/``prev``/``hash`` rule, the same messages), carried across segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from hindsight.commitlog import GENESIS, LOG_NAME, Chain, parse_whole_line
from hindsight.errors import CommitLogError

LOG_FOLDER = "log/"
SEGMENT_SUFFIX = ".jsonl"
SEQ_DIGITS = 12
_NAME = re.compile(rf"(\d{{{SEQ_DIGITS}}})-(\d{{{SEQ_DIGITS}}}){re.escape(SEGMENT_SUFFIX)}")
# The metadata key (x-amz-meta-sha256) holding the hex SHA-256 of a segment's bytes.
SHA256_META = "sha256"


class SeqRange(NamedTuple):
    """The lines a segment holds, ``first``..``last`` (1-based seq, both included)."""

    first: int
    last: int

    @property
    def lines(self) -> int:
        return self.last - self.first + 1


def segment_key(first: int, last: int) -> str:
    """The key of segment ``first``..``last``, relative to the host's prefix."""
    if not 1 <= first <= last:
        raise ValueError(
            f"a segment holds lines first..last with 1 <= first <= last, not {first}..{last}"
        )
    return f"{LOG_FOLDER}{first:0{SEQ_DIGITS}d}-{last:0{SEQ_DIGITS}d}{SEGMENT_SUFFIX}"


def parse_segment_key(key: str) -> SeqRange | None:
    """``key`` (relative to the host's prefix) as a segment's span, or None when it names
    no segment (another name under ``log/``, a span backwards or from 0)."""
    if not key.startswith(LOG_FOLDER):
        return None
    match = _NAME.fullmatch(key[len(LOG_FOLDER) :])
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return SeqRange(first, last) if 1 <= first <= last else None


class LineChain:
    """Checks whole lines one by one as ``read_chain`` checks the log's: each a JSON object
    whose ``hash`` is its content's, ``seq`` one more than the line before, ``prev`` the
    line before's hash. Start it after line ``seq`` with hash ``last_hash`` to go on from
    there (GENESIS: from the first line)."""

    def __init__(self, seq: int = 0, last_hash: str = GENESIS, name: str = LOG_NAME) -> None:
        self.name = name
        self._chain = Chain(name)
        self._chain.seq, self._chain.hash = seq, last_hash

    @property
    def seq(self) -> int:
        return self._chain.seq

    @property
    def hash(self) -> str:
        return self._chain.hash

    def check(self, data: bytes) -> dict[str, Any]:
        """The entry of ``data``, one whole line ending in ``\\n``; CommitLogError naming the
        line (by its number in the log, which is its seq once the chain holds)."""
        number = self._chain.seq + 1
        if not data.endswith(b"\n"):
            raise CommitLogError(
                f"{self.name} line {number}: the segment ends inside this line (no line end)"
            )
        entry, digest = parse_whole_line(self.name, number, data)
        self._chain.check(number, entry, digest)
        return entry

    def lines(self, data: Iterable[bytes]) -> Iterator[dict[str, Any]]:
        """Every line of ``data`` (an iterable of whole lines), checked."""
        for line in data:
            yield self.check(line)
