from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hindsight.clock import iso
from hindsight.commitlog import CommitLog
from hindsight.errors import CommitLogError, ProtocolError
from hindsight.replies import PurposeRetention, RecordingRow
from hindsight.retention import Ledger, PurposeState, Terms, rebuild

DAY = timedelta(days=1)
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TRAINING = Terms("training", retention_days=7, until_resolved=False, grace_days=0,
                 max_retention_days=92)  # fmt: skip
ESCALATION = Terms("escalation", retention_days=None, until_resolved=True, grace_days=30,
                   max_retention_days=2555)  # fmt: skip
OPEN_ENDED = Terms("dispute", retention_days=None, until_resolved=True, grace_days=10,
                   max_retention_days=None)  # fmt: skip
TERMS = {t.name: t for t in (TRAINING, ESCALATION, OPEN_ENDED)}
WHO = {"actor": "hr-01", "reason": "weekly review"}


class Log:
    """Numbered entries as the log holds them, applied to a ledger as they are made."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.seq = 0

    def add(self, event: str, at: datetime, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        entry = {"seq": self.seq, "time": iso(at), "event": event, **fields}
        self.ledger.apply(entry)
        return entry

    def commit(self, call_id: str, *purposes: str, **more: Any) -> None:
        self.add("call_started", END - DAY / 24, call_id=call_id, line="desk-01", agent="ann")
        self.add("call_committed", END, **committed_fields(call_id, purposes, END), **more)


def committed_fields(call_id: str, purposes: tuple[str, ...], ended: datetime) -> dict[str, Any]:
    retention = {name: TERMS[name].first_retain_until(ended) for name in purposes}
    ends = list(retention.values())
    return {
        "call_id": call_id,
        "line": "desk-01",
        "agent": "ann",
        "reasons": ["marked"],
        "purposes": list(purposes),
        "retention": {name: until and iso(until) for name, until in retention.items()},
        "retain_until": None if None in ends else iso(max(e for e in ends if e)),
        "path": f"recordings/2026/03/01/{call_id}.flac",
        "sha256": "0" * 64,
        "seconds": 60.0,
        "ended": iso(ended),
    }


def refused(code: str, decision: Any, *args: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        decision(*args)
    assert caught.value.code == code, caught.value.message


def due_ids(ledger: Ledger, at: datetime) -> list[str]:
    return [recording.call_id for recording in ledger.due(at)]


def test_a_two_purpose_recording_is_due_only_after_its_last_purpose() -> None:
    log = Log()
    log.commit("c1", "training", "escalation")
    until = log.ledger.resolve("c1", "escalation", END + 2 * DAY, TERMS)
    log.add("recording_resolved", END + 2 * DAY, call_id="c1", purpose="escalation",
            retain_until=iso(until), **WHO)  # fmt: skip
    assert until == END + 32 * DAY
    assert due_ids(log.ledger, END + 8 * DAY) == []  # training has ended, escalation has not
    assert due_ids(log.ledger, END + 32 * DAY - timedelta(milliseconds=1)) == []
    assert due_ids(log.ledger, END + 32 * DAY) == ["c1"]


def test_an_unresolved_until_resolved_purpose_is_never_due_before_its_max() -> None:
    log = Log()
    log.commit("esc", "escalation")
    log.commit("open", "dispute")
    recording = log.ledger.get("esc")
    assert recording is not None and recording.retain_until == END + 2555 * DAY
    assert due_ids(log.ledger, END + 2554 * DAY) == []
    assert due_ids(log.ledger, END + 2555 * DAY) == ["esc"]
    assert due_ids(log.ledger, datetime(9000, 1, 1, tzinfo=UTC)) == ["esc"]  # never "open"


def test_resolve_gives_grace_and_never_goes_past_the_max() -> None:
    log = Log()
    log.commit("c1", "escalation")
    assert log.ledger.resolve("c1", "escalation", END + 5 * DAY, TERMS) == END + 35 * DAY
    late = END + 2550 * DAY
    assert log.ledger.resolve("c1", "escalation", late, TERMS) == END + 2555 * DAY
    log.commit("c2", "dispute")
    assert log.ledger.resolve("c2", "dispute", END + 5 * DAY, TERMS) == END + 15 * DAY


def test_resolve_never_lengthens_a_purpose() -> None:
    # A served training purpose ends now (no grace), or at its term if that comes first.
    log = Log()
    log.commit("c1", "training")
    assert log.ledger.resolve("c1", "training", END + 2 * DAY, TERMS) == END + 2 * DAY
    generous = {"training": Terms("training", 7, False, 30, 92)}
    assert log.ledger.resolve("c1", "training", END + 2 * DAY, generous) == END + 7 * DAY


def test_resolve_of_a_purpose_no_longer_configured_ends_it_now() -> None:
    log = Log()
    log.commit("c1", "training")
    assert log.ledger.resolve("c1", "training", END + DAY, {}) == END + DAY


def test_extend_past_max_is_not_allowed() -> None:
    log = Log()
    log.commit("c1", "training")
    ledger = log.ledger
    assert ledger.extend("c1", "training", 30, END + 5 * DAY, TERMS) == END + 35 * DAY
    assert ledger.extend("c1", "training", 92, END, TERMS) == END + 92 * DAY
    refused("not_allowed", ledger.extend, "c1", "training", 30, END + 70 * DAY, TERMS)


def test_extend_never_shortens() -> None:
    log = Log()
    log.commit("c1", "training")
    assert log.ledger.extend("c1", "training", 1, END + DAY, TERMS) == END + 7 * DAY


def test_extend_needs_days_above_zero_and_in_range() -> None:
    log = Log()
    log.commit("c1", "training")
    for days in (0, -1, float("nan"), float("inf"), 1e300):
        refused("bad_request", log.ledger.extend, "c1", "training", days, END, TERMS)


def test_extend_of_an_open_ended_or_unconfigured_purpose_is_refused() -> None:
    log = Log()
    log.commit("c1", "dispute")
    refused("not_allowed", log.ledger.extend, "c1", "dispute", 5, END, TERMS)
    refused("unknown_purpose", log.ledger.extend, "c1", "dispute", 5, END, {})


def test_a_hold_beats_everything_until_released() -> None:
    log = Log()
    log.commit("c1", "training")
    ledger, later = log.ledger, END + 400 * DAY
    ledger.check_hold("c1")
    log.add("recording_held", END + DAY, call_id="c1", actor="legal", reason="court case")
    assert ledger.due(later) == [] and ledger.overdue(later) == []
    refused("not_allowed", ledger.check_erasable, "c1")
    refused("not_allowed", ledger.check_hold, "c1")  # holds do not stack
    ledger.check_release("c1")
    log.add("recording_released", END + 2 * DAY, call_id="c1", actor="legal", reason="settled")
    assert due_ids(ledger, later) == ["c1"]
    assert ledger.check_erasable("c1").call_id == "c1"
    refused("not_allowed", ledger.check_release, "c1")


def test_a_deleted_recording_is_gone_from_recordings_and_due() -> None:
    log = Log()
    log.commit("c1", "training")
    log.commit("c2", "training")
    erased = END + DAY
    log.add("recording_deleted", erased, call_id="c1", path="recordings/2026/03/01/c1.flac",
            why="erased", actor="dpo", reason="art. 17 request")  # fmt: skip
    ledger = log.ledger
    assert [r.call_id for r in ledger.recordings()] == ["c2"]
    assert due_ids(ledger, END + 30 * DAY) == ["c2"]
    assert ledger.get("c1") is None
    [deletion] = ledger.deletions()
    assert (deletion.call_id, deletion.why, deletion.actor, deletion.time) == (
        "c1",
        "erased",
        "dpo",
        erased,
    )
    assert deletion.recording is not None and deletion.recording.purposes.keys() == {"training"}
    refused("unknown_call", ledger.resolve, "c1", "training", END, TERMS)
    refused("unknown_call", ledger.check_erasable, "c1")


def test_unknown_call_is_unknown_call() -> None:
    ledger = Log().ledger
    refused("unknown_call", ledger.resolve, "nope", "training", END, TERMS)
    refused("unknown_call", ledger.extend, "nope", "training", 3, END, TERMS)
    refused("unknown_call", ledger.check_hold, "nope")
    refused("unknown_call", ledger.check_release, "nope")
    refused("unknown_call", ledger.check_erasable, "nope")


def test_a_purpose_the_recording_is_not_kept_for_is_unknown_purpose() -> None:
    log = Log()
    log.commit("c1", "training")
    refused("unknown_purpose", log.ledger.resolve, "c1", "escalation", END, TERMS)
    refused("unknown_purpose", log.ledger.extend, "c1", "escalation", 3, END, TERMS)


def test_overdue_is_more_than_the_slack_past_due() -> None:
    log = Log()
    log.commit("c1", "training")
    assert log.ledger.overdue(END + 8 * DAY) == []
    assert [r.call_id for r in log.ledger.overdue(END + 8 * DAY + timedelta(seconds=1))] == ["c1"]


def test_recordings_filter_by_purpose_and_caller_ref() -> None:
    log = Log()
    log.commit("c1", "training", caller_ref="ref-a")
    log.commit("c2", "escalation", caller_ref="ref-b")
    log.commit("c3", "training", "escalation")

    def ids(**query: str) -> list[str]:
        return [r.call_id for r in log.ledger.recordings(**query)]

    assert ids() == ["c1", "c2", "c3"]
    assert ids(purpose="escalation") == ["c2", "c3"]
    assert ids(caller_ref="ref-a") == ["c1"]
    assert ids(purpose="escalation", caller_ref="ref-a") == []


def test_a_recording_reads_as_the_recordings_reply_row() -> None:
    log = Log()
    log.commit("c1", "training", "dispute")
    recording = log.ledger.get("c1")
    assert recording is not None
    assert recording.row() == RecordingRow(
        call_id="c1",
        line="desk-01",
        agent="ann",
        path="recordings/2026/03/01/c1.flac",
        purposes={
            "training": PurposeRetention("2026-03-08T12:00:00.000Z", False),
            "dispute": PurposeRetention(None, False),
        },
        retain_until=None,
        held=False,
    )


def test_an_expired_deletion_before_due_is_premature() -> None:
    log = Log()
    log.commit("c1", "training")
    log.commit("c2", "training")
    path = "recordings/2026/03/01/c.flac"
    log.add("recording_deleted", END + DAY, call_id="c1", path=path, why="expired")
    log.add("recording_deleted", END + 7 * DAY, call_id="c2", path=path, why="expired")
    assert [d.premature for d in log.ledger.deletions()] == [True, False]


def test_a_commit_from_before_per_purpose_retention_keeps_its_one_retain_until() -> None:
    ledger = Ledger()
    ledger.apply({"seq": 1, "time": iso(END), "event": "call_committed", "call_id": "c1",
                  "line": "desk-01", "agent": None, "purposes": ["training", "escalation"],
                  "path": "recordings/c1.flac", "retain_until": iso(END + 92 * DAY)})  # fmt: skip
    recording = ledger.get("c1")
    assert recording is not None and recording.ended == END  # the commit's time stands in
    assert due_ids(ledger, END + 91 * DAY) == [] and due_ids(ledger, END + 92 * DAY) == ["c1"]


def test_a_retention_event_that_cannot_be_read_names_its_line() -> None:
    ledger = Ledger()
    ledger.apply({"seq": 1, "time": iso(END), "event": "daemon_started"})  # ignored
    entry = {"seq": 2, "time": iso(END), "event": "call_committed", "call_id": "c1"}
    with pytest.raises(CommitLogError, match=r"commit\.log line 2: call_committed"):
        ledger.apply(entry)


def real_log(path: Path) -> list[dict[str, Any]]:
    """Every kind of retention event through the real CommitLog; returns what it appended."""
    entries = []
    with CommitLog.open(path) as log:

        def add(event: str, **fields: Any) -> None:
            entries.append(log.append(event, **fields))

        add("daemon_started", version="0.2.0")
        for call_id, purposes in (("c1", ("training",)), ("c2", ("training", "escalation")),
                                  ("c3", ("dispute",)), ("c4", ("training",))):  # fmt: skip
            add("call_started", call_id=call_id, line="desk-01", agent="ann")
            add("call_committed", **committed_fields(call_id, purposes, END))
        add("call_started", call_id="c5", line="desk-02", agent=None)
        add("call_wiped", call_id="c5", line="desk-02", seconds=3.0)
        add("recording_extended", call_id="c1", purpose="training",
            retain_until=iso(END + 40 * DAY), **WHO)  # fmt: skip
        add("recording_resolved", call_id="c2", purpose="escalation",
            retain_until=iso(END + 30 * DAY), **WHO)  # fmt: skip
        add("recording_held", call_id="c3", actor="legal", reason="court case")
        add("recording_held", call_id="c4", actor="legal", reason="court case")
        add("recording_released", call_id="c4", actor="legal", reason="settled")
        add("recording_deleted", call_id="c4", path="recordings/2026/03/01/c4.flac",
            why="erased", actor="dpo", reason="art. 17 request")  # fmt: skip
        add("daemon_stopped", version="0.2.0")
    return entries


def test_rebuild_from_a_real_commit_log_equals_apply_of_the_same_entries(tmp_path: Path) -> None:
    path = tmp_path / "commit.log"
    entries = real_log(path)
    applied = Ledger()
    for entry in entries:
        applied.apply(entry)
    rebuilt = rebuild(path)
    assert rebuilt.recordings() == applied.recordings()
    assert rebuilt.deletions() == applied.deletions()
    c1, c2, c3 = rebuilt.recordings()
    assert c1.retain_until == END + 40 * DAY
    assert c2.purposes["escalation"].resolved and c2.retain_until == END + 30 * DAY
    assert c3.held and c3.retain_until is None
    assert [d.call_id for d in rebuilt.deletions()] == ["c4"]


def test_a_recording_is_a_snapshot_and_the_next_one_shows_the_change() -> None:
    log = Log()
    log.commit("c1", "escalation")
    before = log.ledger.get("c1")
    log.add("recording_resolved", END + DAY, call_id="c1", purpose="escalation",
            retain_until=iso(END + 31 * DAY), **WHO)  # fmt: skip
    log.add("recording_held", END + DAY, call_id="c1", actor="legal", reason="court case")
    after = log.ledger.get("c1")
    assert before is not None and after is not None
    assert not before.purposes["escalation"].resolved and not before.held
    assert after.purposes["escalation"] == PurposeState(END + 31 * DAY, resolved=True)
    assert after.held


def test_the_named_sets_of_retention_events_are_the_ledgers_own() -> None:
    # verify skips the ledger for other events, and the log's index keeps these lines' places.
    from hindsight.logindex import DELETED_EVENT, KEPT_EVENTS
    from hindsight.retention import RETENTION_EVENTS

    assert set(Ledger()._handlers) == RETENTION_EVENTS == KEPT_EVENTS | {DELETED_EVENT}
