"""The daemon's own log (stderr, the journal) does not tell which calls were kept.

Rule: every ended call gets the same journal lines whatever its outcome, and no journal line
names a call together with what only kept calls have (marks, recordings, holds, reviews,
deletions). What was done, by whom and how many is logged; to which call only the commit log
says, for the auditor.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.harness import Daemon
from tests.test_lifecycle import PURPOSES, by, deleted

ID = re.compile(r"c-[a-z]+-\d")


def call(d: Daemon, call_id: str, announced: list[str] | None, *marks: str) -> None:
    start: dict[str, Any] = {"op": "start", "line": "desk-01", "call_id": call_id}
    if announced is not None:
        start["announced"] = announced
    d.ok(start)
    time.sleep(0.3)
    for purpose in marks:
        d.ok({"op": "mark", "line": "desk-01", "purpose": purpose})
    d.ok({"op": "end", "line": "desk-01"})


def test_kept_and_wiped_calls_leave_the_same_lines_in_the_journal(tmp_path: Path) -> None:
    # Every call that hears of training is sampled: kept calls without a mark, and wiped ones
    # (training not announced, no mark), side by side in one run.
    with Daemon(tmp_path, one_in=1, extra=PURPOSES) as d:
        call(d, "c-sampled-1", None)
        call(d, "c-sampled-2", None, "escalation")
        call(d, "c-marked-1", ["escalation"], "escalation")
        call(d, "c-wiped-1", ["escalation"])
        call(d, "c-wiped-2", [])  # told nothing: never even buffered
        call(d, "c-wiped-3", ["escalation"])
        d.wait_for_event("call_committed", count=3, timeout=20)
        d.wait_for_event("call_wiped", count=3, timeout=20)
        # What happens to recordings afterwards: a legal hold, an access, a review, an
        # extension, an erasure, a release, and the purge of what expired.
        d.ok({"op": "hold", "call_id": "c-sampled-2", **by()})
        d.ok({"op": "access", "call_id": "c-sampled-2", **by()})
        d.ok(
            {"op": "extend", "call_id": "c-sampled-2", "purpose": "training", "days": 2e-5, **by()}
        )
        d.ok({"op": "resolve", "call_id": "c-sampled-2", "purpose": "escalation", **by()})
        d.ok({"op": "erase", "call_id": "c-marked-1", **by()})
        d.ok({"op": "release", "call_id": "c-sampled-2", **by()})
        deadline = time.monotonic() + 20
        while len(deleted(d)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    outcomes = {
        e["call_id"]: e["event"] for e in d.events("call_committed") + d.events("call_wiped")
    }
    assert outcomes == {
        "c-sampled-1": "call_committed",
        "c-sampled-2": "call_committed",
        "c-marked-1": "call_committed",
        "c-wiped-1": "call_wiped",
        "c-wiped-2": "call_wiped",
        "c-wiped-3": "call_wiped",
    }
    assert deleted(d) == {
        "c-sampled-1": "expired",
        "c-marked-1": "erased",
        "c-sampled-2": "expired",
    }
    for event in ("held", "accessed", "extended", "resolved", "released"):
        assert d.events(f"recording_{event}"), event

    journal = d.stderr().splitlines()
    seen: dict[str, Counter[str]] = {call_id: Counter() for call_id in outcomes}
    for line in journal:
        named = set(ID.findall(line))
        assert len(named) <= 1, line
        for call_id in named:
            # Without the time stamp and the id itself.
            seen[call_id][ID.sub("<id>", line.split(" ", 2)[2])] += 1
    expected = Counter(
        [
            "INFO hindsight.daemon.service: call <id> started on desk-01",
            "INFO hindsight.daemon.service: call <id> ended on desk-01",
        ]
    )
    assert seen == dict.fromkeys(outcomes, expected)
    # The steps themselves are in the journal, without the call.
    text = d.stderr()
    for said in (
        "a recording held by auditor",
        "a recording accessed by auditor",
        "recording_extended: a recording for training until",
        "recording_resolved: a recording for escalation until",
        "a recording released by auditor",
        "a recording deleted (erased)",
        "a recording deleted (expired)",
    ):
        assert said in text, said
