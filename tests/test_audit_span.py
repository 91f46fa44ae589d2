"""``--since``/``--until``: the report counts the calls of a span, verify hashes the recordings
committed in it, and neither gives up the chain: every line is still checked."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hindsight import clock
from hindsight.audit import report, verify
from hindsight.audit.common import Span
from hindsight.commitlog import CommitLog
from tests.test_audit import DAY, commit, erase, start, wipe

NOV = [datetime(2026, 11, day, 12, tzinfo=UTC) for day in range(1, 5)]  # NOV[1]: the 2nd
LATER = datetime(2026, 12, 1, tzinfo=UTC)
TRAIN = {"training": "2027-02-28T10:00:00.000Z"}


def three_days(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Day 1: a kept (later erased), b wiped, f started.  Day 2: f wiped, c started, d wiped,
    a erased, c2 accessed.  Day 3: c committed, e wiped."""
    when = [NOV[0]]
    monkeypatch.setattr(clock, "utcnow", lambda: when[0])
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="test")
        start(log, "a", "desk-01", "ann")
        commit(log, state, "a", "desk-01", TRAIN, reasons=["sampled"], seconds=10)
        start(log, "b", "desk-02", "bob")
        wipe(log, "b", "desk-02", 20)
        start(log, "f", "desk-02", "bob")
        when[0] = NOV[1]
        wipe(log, "f", "desk-02", 5)
        start(log, "c", "desk-01", "ann")
        start(log, "d", "desk-02", "bob")
        wipe(log, "d", "desk-02", 30)
        erase(log, "a")
        when[0] = NOV[2]
        commit(log, state, "c", "desk-01", TRAIN, reasons=["sampled"], seconds=40)
        start(log, "e", "desk-02", "bob")
        wipe(log, "e", "desk-02", 50)
        log.append("daemon_stopped", version="test")
    (state / f"{DAY}/a.flac").unlink()
    (state / f"{DAY}/a.json").unlink()


def day(n: int) -> datetime:
    return datetime(2026, 11, n, tzinfo=UTC)


def test_a_report_of_one_day_counts_the_calls_started_that_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_days(tmp_path, monkeypatch)
    found = report(tmp_path, now=LATER, span=Span(day(2), day(3)))
    totals = found.totals
    # c and d started on the 2nd; f's outcome that day belongs to a call of the 1st.
    assert (totals.started, totals.wiped, totals.committed, totals.open) == (2, 1, 0, 1)
    assert totals.seconds_wiped == 30  # d alone, not f
    assert [d.call_id for d in found.retention.deletions] == ["a"]
    assert totals.deleted == 1
    assert found.retention.as_of == day(3)  # as of the span's end, not "now"
    assert found.retention.recordings == 0  # a erased; c not committed yet on the 3rd
    assert list(found.per_day) == [day(2).date()]
    assert found.first_time is not None and found.first_time.startswith("2026-11-02")
    as_json = found.to_json()
    assert as_json["since"] == "2026-11-02T00:00:00.000Z"
    assert as_json["until"] == "2026-11-03T00:00:00.000Z"


def test_a_report_from_a_day_on_counts_outcomes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_days(tmp_path, monkeypatch)
    found = report(tmp_path, now=LATER, span=Span(since=day(2)))
    totals = found.totals
    assert (totals.started, totals.wiped, totals.committed, totals.open) == (3, 2, 1, 0)
    assert found.retention.recordings == 1 and found.retention.as_of == LATER
    whole = report(tmp_path, now=LATER)
    assert (whole.totals.started, whole.totals.committed, whole.totals.wiped) == (6, 2, 4)
    assert whole.to_json()["since"] is None and whole.to_json()["until"] is None
    until = report(tmp_path, now=LATER, span=Span(until=day(2)))
    assert (until.totals.started, until.totals.committed, until.totals.open) == (3, 1, 1)


def test_a_span_does_not_give_up_the_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    three_days(tmp_path, monkeypatch)
    path = tmp_path / "commit.log"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"seconds":10', b'"seconds":11')  # day 1, before the span
    path.write_bytes(b"".join(lines))
    result = verify(tmp_path, LATER, span=Span(since=day(3)))
    assert not result.ok and result.problem is not None
    assert "line 3: hash does not match" in result.problem
    with pytest.raises(Exception, match="line 3: hash does not match"):
        report(tmp_path, now=LATER, span=Span(since=day(3)))


def test_verify_of_a_span_hashes_only_the_recordings_committed_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_days(tmp_path, monkeypatch)
    # c's recording (committed on the 3rd) is damaged: a span without it does not hash it...
    (tmp_path / f"{DAY}/c.flac").write_bytes(b"fLaC damaged")
    before = verify(tmp_path, LATER, span=Span(day(1), day(3)))
    assert before.ok, before.problem
    assert before.recordings == 0 and before.entries == 15  # every line read all the same
    # ...the span that holds it does, and the whole log does.
    for span in (Span(since=day(3)), Span()):
        result = verify(tmp_path, LATER, span=span)
        assert not result.ok and result.problem is not None
        assert "recording" in result.problem and "'c'" in result.problem


def test_a_span_still_accounts_for_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_days(tmp_path, monkeypatch)
    (tmp_path / f"{DAY}/stray.flac").write_bytes(b"who put this here")
    result = verify(tmp_path, LATER, span=Span(day(1), day(2)))
    assert not result.ok and result.problem is not None
    assert "stray.flac is not accounted for by the log" in result.problem


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hindsight.client.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_command_line_takes_dates_and_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_days(tmp_path, monkeypatch)
    state = str(tmp_path)
    done = run_cli(
        "audit", "report", "--state-dir", state, "--since", "2026-11-02", "--until",
        "2026-11-02T23:59:59.999Z", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["started"] == 2
    text = run_cli("audit", "report", "--state-dir", state, "--since", "2026-11-02T00:00+01:00")
    assert text.returncode == 0, text.stderr
    assert "since            2026-11-01T23:00:00.000Z" in text.stdout
    checked = run_cli("audit", "verify", "--state-dir", state, "--since", "2026-11-03")
    assert checked.returncode == 0, checked.stderr
    assert "1 recordings intact (those committed since 2026-11-03T00:00:00.000Z)" in checked.stdout
    backwards = run_cli(
        "audit", "verify", "--state-dir", state, "--since", "2026-11-03", "--until", "2026-11-02"
    )
    assert backwards.returncode == 2
    assert "--since (2026-11-03T00:00:00.000Z) must be before --until" in backwards.stderr
    bad = run_cli("audit", "report", "--state-dir", state, "--since", "last tuesday")
    assert bad.returncode == 2 and "is not a date (YYYY-MM-DD)" in bad.stderr
