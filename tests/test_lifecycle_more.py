"""Purposes and retention through the real daemon, continued: the purge at start-up, the
manual ``purge``, pause and resume that say nothing of sampling, a line's own ``announced``
list, the ``hindsight`` retention commands, and ``--check-config`` on purpose mistakes."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hindsight.client.options import login_name
from hindsight.clock import parse_iso
from tests.harness import BIN, Daemon, cli, config_text
from tests.test_lifecycle import PURPOSES, by, deleted, files, kept_call
from tests.test_worker import wait_until

# PURPOSES, but the daemon purges by itself only at start-up and then once an hour: within a
# test, anything deleted later was deleted by a request.
HOURLY = PURPOSES.replace("purge_interval_seconds = 1\n", "purge_interval_seconds = 3600\n")
assert HOURLY != PURPOSES

# The fields every log line has and no two lines share.
CHAIN = {"seq", "time", "prev", "hash"}


def recording(d: Daemon, call_id: str) -> dict[str, Any] | None:
    """The ``recordings`` row of ``call_id``, or None."""
    for row in d.ok({"op": "recordings"})["recordings"]:
        if row["call_id"] == call_id:
            found: dict[str, Any] = row
            return found
    return None


def due(d: Daemon) -> list[str]:
    listed: list[str] = d.ok({"op": "purge", "dry_run": True})["deleted"]
    return listed


def outcome(d: Daemon, call_id: str) -> dict[str, Any]:
    (found,) = [
        e for e in d.events("call_committed") + d.events("call_wiped") if e["call_id"] == call_id
    ]
    return found


def test_a_recording_that_expired_while_the_daemon_was_stopped_is_purged_at_start(
    tmp_path: Path,
) -> None:
    d = Daemon(tmp_path, extra=HOURLY)
    with d:
        call_id = kept_call(d, "desk-01", "training", seconds=0.3)
        (committed,) = d.wait_for_event("call_committed", timeout=15)
        row = recording(d, call_id)
        assert row is not None and row["retain_until"] == committed["retain_until"]
        until = parse_iso(row["retain_until"])
    assert d.proc is not None and d.proc.returncode == 0
    assert deleted(d) == {}, "nothing deleted it while the daemon ran"
    assert files(d) == {f"{call_id}.flac", f"{call_id}.json"}
    # The retention passes while no daemon runs.
    left = (until - datetime.now(UTC)).total_seconds()
    time.sleep(max(0.0, left) + 0.3)
    assert files(d) == {f"{call_id}.flac", f"{call_id}.json"}

    with d:  # same state folder, the same hourly interval
        # Well before the hour: the purge at start-up, not the next interval.
        wait_until(lambda: call_id in deleted(d), timeout=15, what="the purge at start-up")
        assert deleted(d) == {call_id: "expired"}
        (gone,) = d.events("recording_deleted")
        assert gone["path"] == committed["path"] and "actor" not in gone
        second_start = d.events("daemon_started")[1]
        assert gone["seq"] > second_start["seq"], "deleted by the new run"
        assert d.ok({"op": "recordings"})["recordings"] == []
        assert due(d) == []
        wait_until(lambda: files(d) == set(), timeout=10, what="the worker's unlink")
    assert "purge: 1 expired recording(s) deleted" in d.stderr()


def test_pause_and_resume_answer_and_log_the_same_whether_the_call_is_kept_or_not(
    tmp_path: Path,
) -> None:
    # Every call that hears of training is sampled; one that hears of escalation alone, or of
    # nothing, is not.
    announced: dict[str, list[str] | None] = {
        "kept": None,
        "unsampled": ["escalation"],
        "told-nothing": [],
    }
    replies: dict[str, list[str]] = {}
    with Daemon(tmp_path, one_in=1, extra=PURPOSES) as d:
        ids: dict[str, str] = {}
        for name, told in announced.items():
            start: dict[str, Any] = {"op": "start", "line": "desk-01"}
            if told is not None:
                start["announced"] = told
            call_id = d.ok(start)["call_id"]
            ids[name] = call_id
            time.sleep(0.3)
            said = [d.request({"op": "pause", "line": "desk-01"}) for _ in range(2)]
            time.sleep(0.3)  # blocks arrive while paused: silence in a kept recording
            said += [d.request({"op": "resume", "line": "desk-01"}) for _ in range(2)]
            d.ok({"op": "end", "line": "desk-01"})
            assert said[0] == {"ok": True, "call_id": call_id}, said
            assert said[1]["error"]["code"] == "not_allowed", said
            assert said[2] == {"ok": True, "call_id": call_id}, said
            assert said[3]["error"]["code"] == "not_allowed", said
            replies[name] = [json.dumps(r, sort_keys=True).replace(call_id, "<id>") for r in said]
        d.wait_for_event("call_committed", timeout=15)
        d.wait_for_event("call_wiped", count=2, timeout=15)

    # The comparison is between a kept call and two that were not.
    assert outcome(d, ids["kept"])["event"] == "call_committed"
    assert outcome(d, ids["kept"])["reasons"] == ["sampled"]
    assert outcome(d, ids["unsampled"])["why"] == "not_kept"
    assert outcome(d, ids["told-nothing"])["why"] == "not_kept"
    sidecar = json.loads(
        (d.state / outcome(d, ids["kept"])["path"]).with_suffix(".json").read_text()
    )
    assert len(sidecar["pauses"]) == 1, "the pause took effect on the kept call"

    assert replies["unsampled"] == replies["kept"]
    assert replies["told-nothing"] == replies["kept"]

    logged: dict[str, list[dict[str, Any]]] = {}
    for name, call_id in ids.items():
        mine = [
            e
            for e in d.entries()
            if e.get("call_id") == call_id and e["event"] in {"call_paused", "call_resumed"}
        ]
        logged[name] = [{k: v for k, v in e.items() if k not in CHAIN | {"call_id"}} for e in mine]
    assert logged["kept"] == [
        {"event": "call_paused", "line": "desk-01"},
        {"event": "call_resumed", "line": "desk-01"},
    ]
    assert logged["unsampled"] == logged["kept"]
    assert logged["told-nothing"] == logged["kept"]


def test_purge_on_request_lists_with_dry_run_then_deletes_what_is_due(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra=HOURLY) as d:
        expiring = kept_call(d, "desk-01", "training", seconds=0.3)
        unresolved = kept_call(d, "desk-01", "escalation", seconds=0.3)
        d.wait_for_event("call_committed", count=2, timeout=15)
        wait_until(lambda: due(d) == [expiring], timeout=15, what="the recording to fall due")

        # A dry run changes nothing, however often it is asked.
        before = d.entries()
        assert due(d) == [expiring]
        assert d.entries() == before, "a dry run logs nothing"
        assert not d.events("recording_deleted")
        assert recording(d, expiring) is not None
        both = {f"{c}.{ext}" for c in (expiring, unresolved) for ext in ("flac", "json")}
        assert files(d) == both

        assert d.ok({"op": "purge"})["deleted"] == [expiring]
        assert deleted(d) == {expiring: "expired"}
        (gone,) = d.events("recording_deleted")
        assert gone["seq"] == before[-1]["seq"] + 1
        assert recording(d, expiring) is None
        assert recording(d, unresolved) is not None
        refused = d.request({"op": "hold", "call_id": expiring, **by()})
        assert refused["error"]["code"] == "unknown_call"
        assert "expired" in refused["error"]["message"]
        assert d.ok({"op": "purge"})["deleted"] == []
        assert due(d) == []
        wait_until(
            lambda: files(d) == {f"{unresolved}.flac", f"{unresolved}.json"},
            timeout=10,
            what="the worker's unlink",
        )
    assert deleted(d) == {expiring: "expired"}


def test_the_retention_commands_of_the_client_against_the_real_daemon(tmp_path: Path) -> None:
    with Daemon(tmp_path, extra=HOURLY) as d:
        expiring = kept_call(d, "desk-01", "training", seconds=0.3)
        reviewed = kept_call(d, "desk-01", "training", "escalation", seconds=0.3)
        erased = kept_call(d, "desk-01", "escalation", seconds=0.3)
        # Listed in the order they were kept: the order of their commits.
        order = [e["call_id"] for e in d.wait_for_event("call_committed", count=3, timeout=15)]
        assert sorted(order) == sorted([expiring, reviewed, erased])

        def hs(*args: str) -> subprocess.CompletedProcess[str]:
            return cli("--endpoint", d.endpoint, "--timeout", "15", *args)

        def ok(*args: str) -> tuple[str, list[dict[str, Any]]]:
            """Run a command that must succeed; return its stdout and the lines it logged."""
            seen = len(d.entries())
            result = hs(*args)
            assert result.returncode == 0, result
            assert result.stderr == "", result
            return result.stdout, d.entries()[seen:]

        def refused(code: str, *args: str) -> None:
            seen = len(d.entries())
            result = hs(*args)
            assert result.returncode == 1, result
            assert result.stdout == "" and result.stderr.startswith("hindsight: ")
            assert f"({code})" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
            assert d.entries()[seen:] == []

        def table(text: str) -> list[list[str]]:
            header, *rows = text.splitlines()
            assert header.split() == [
                "CALL", "LINE", "AGENT", "PURPOSE", "RETAIN", "UNTIL", "RESOLVED", "HELD"
            ]  # fmt: skip
            return [row.split() for row in rows]

        def expected_rows() -> list[list[str]]:
            return [
                [
                    r["call_id"],
                    r["line"],
                    r["agent"] or "-",
                    name,
                    p["retain_until"] or "-",
                    "yes" if p["resolved"] else "no",
                    "yes" if r["held"] else "no",
                ]
                for r in d.ok({"op": "recordings"})["recordings"]
                for name, p in sorted(r["purposes"].items())
            ]

        # recordings, as JSON and as a table: the daemon's reply, one row per purpose. They
        # change nothing, so they run side by side (a client start-up takes a while).
        seen = len(d.entries())
        reads = [
            ["recordings", "--json"],
            ["recordings"],
            ["recordings", "--purpose", "escalation", "--json"],
        ]
        with ThreadPoolExecutor(len(reads)) as pool:
            results = list(pool.map(lambda argv: hs(*argv), reads))
        for result in results:
            assert (result.returncode, result.stderr) == (0, ""), result
        assert len(d.entries()) == seen, "reading recordings logs nothing"
        as_json, as_table, escalations = (result.stdout for result in results)
        listed: list[dict[str, Any]] = json.loads(as_json)
        assert listed == d.ok({"op": "recordings"})["recordings"]
        assert [r["call_id"] for r in listed] == order
        rows = table(as_table)
        assert rows == expected_rows()
        assert sorted(r[0] for r in rows) == sorted([expiring, reviewed, reviewed, erased])
        assert [r[3] for r in rows if r[0] == reviewed] == ["escalation", "training"]
        assert {r[4] for r in rows if r[3] == "escalation"} == {"-"}, "no end until resolved"
        (training,) = [r for r in rows if r[0] == expiring]

        def listed_row(call_id: str) -> dict[str, Any]:
            (row,) = [r for r in listed if r["call_id"] == call_id]
            return row

        assert training[4] == listed_row(expiring)["retain_until"] and parse_iso(training[4])
        filtered = json.loads(escalations)
        assert [r["call_id"] for r in filtered] == [c for c in order if c != expiring]

        # hold and release
        out, logged = ok("hold", reviewed, "--reason", "case 17", "--actor", "alice")
        assert out == f"{reviewed}\n"
        assert [{k: e[k] for k in ("event", "call_id", "actor", "reason")} for e in logged] == [
            {"event": "recording_held", "call_id": reviewed, "actor": "alice", "reason": "case 17"}
        ]
        text, logged = ok("recordings")
        assert logged == [] and table(text) == expected_rows()
        assert {r[6] for r in table(text) if r[0] == reviewed} == {"yes"}
        refused("not_allowed", "erase", reviewed, "--reason", "while held")
        out, logged = ok("release", reviewed, "--reason", "case 17 closed")
        assert out == f"{reviewed}\n"
        (released,) = logged
        assert (released["event"], released["call_id"]) == ("recording_released", reviewed)
        assert (released["actor"], released["reason"]) == (login_name(), "case 17 closed")
        assert recording(d, reviewed) == {**listed_row(reviewed), "held": False}

        # extend, then resolve: each prints the purpose's new end, as logged.
        out, logged = ok(
            "extend", reviewed, "--purpose", "training", "--days", "0.5",
            "--reason", "learning moment", "--actor", "alice",
        )  # fmt: skip
        (extended,) = logged
        printed = out.strip()
        assert out == f"{printed}\n"
        assert extended["event"] == "recording_extended"
        assert (extended["call_id"], extended["purpose"]) == (reviewed, "training")
        assert (extended["retain_until"], extended["actor"]) == (printed, "alice")
        assert extended["reason"] == "learning moment"
        ahead = parse_iso(printed) - datetime.now(UTC)
        assert timedelta(hours=11.9) < ahead < timedelta(hours=12.1)
        refused(
            "not_allowed", "extend", reviewed, "--purpose", "escalation", "--days", "1",
            "--reason", "no end yet",
        )  # fmt: skip
        out, logged = ok(
            "resolve", reviewed, "--purpose", "escalation", "--reason", "settled", "--actor", "bob"
        )
        (resolved,) = logged
        assert resolved["event"] == "recording_resolved"
        assert (resolved["call_id"], resolved["purpose"]) == (reviewed, "escalation")
        assert (resolved["retain_until"], resolved["actor"]) == (out.strip(), "bob")
        assert resolved["reason"] == "settled"
        assert abs(parse_iso(out.strip()) - datetime.now(UTC)) < timedelta(minutes=1)
        row = recording(d, reviewed)
        assert row is not None
        assert row["purposes"]["escalation"] == {"retain_until": out.strip(), "resolved": True}
        assert row["purposes"]["training"]["retain_until"] == printed

        # erase
        out, logged = ok("erase", erased, "--reason", "subject asked", "--actor", "carol")
        assert out == f"{erased}\n"
        (gone,) = logged
        assert (gone["event"], gone["call_id"], gone["why"]) == (
            "recording_deleted",
            erased,
            "erased",
        )
        assert (gone["actor"], gone["reason"]) == ("carol", "subject asked")
        refused("unknown_call", "erase", erased, "--reason", "twice")

        # purge --dry-run, then purge: only the recording whose training ended.
        wait_until(lambda: due(d) == [expiring], timeout=15, what="the recording to fall due")
        out, logged = ok("purge", "--dry-run")
        assert (out, logged) == (f"{expiring}\n", [])
        assert recording(d, expiring) is not None
        out, logged = ok("purge")
        assert out == f"{expiring}\n"
        (purged,) = logged
        assert (purged["event"], purged["call_id"], purged["why"]) == (
            "recording_deleted",
            expiring,
            "expired",
        )
        assert "actor" not in purged and "reason" not in purged
        assert ok("purge", "--dry-run") == ("no recording is due\n", [])
        assert [r["call_id"] for r in d.ok({"op": "recordings"})["recordings"]] == [reviewed]
        wait_until(
            lambda: files(d) == {f"{reviewed}.flac", f"{reviewed}.json"},
            timeout=10,
            what="the worker's unlinks",
        )
    assert deleted(d) == {erased: "erased", expiring: "expired"}


def test_a_lines_announced_list_decides_what_its_calls_may_be_kept_for(tmp_path: Path) -> None:
    # desk-01 tells its callers of escalation only; desk-02 of every purpose.
    lines = (
        '[[lines]]\nname = "desk-01"\nchannels = [1, 2]\nannounced = ["escalation"]\n'
        '[[lines]]\nname = "desk-02"\nchannels = [1, 2]\n'
    )
    with Daemon(tmp_path, one_in=1, lines=[], extra=lines + PURPOSES) as d:
        control = d.ok({"op": "start", "line": "desk-02"})["call_id"]
        plain = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        time.sleep(0.4)
        d.ok({"op": "end", "line": "desk-01"})
        d.ok({"op": "end", "line": "desk-02"})

        escalated = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        time.sleep(0.4)
        assert d.ok({"op": "mark", "line": "desk-01", "purpose": "escalation"}) == {
            "ok": True,
            "call_id": escalated,
        }
        d.ok({"op": "end", "line": "desk-01"})

        trained = d.ok({"op": "start", "line": "desk-01"})["call_id"]
        time.sleep(0.4)
        refused = d.request({"op": "mark", "line": "desk-01", "purpose": "training"})
        assert refused["error"]["code"] == "not_allowed"
        d.ok({"op": "end", "line": "desk-01"})
        d.wait_for_event("call_committed", count=2, timeout=15)
        d.wait_for_event("call_wiped", count=2, timeout=15)
        kept = {r["call_id"] for r in d.ok({"op": "recordings"})["recordings"]}

    started = {e["call_id"]: e["announced"] for e in d.events("call_started")}
    assert started == {
        control: ["training", "escalation"],
        plain: ["escalation"],
        escalated: ["escalation"],
        trained: ["escalation"],
    }
    assert outcome(d, control)["event"] == "call_committed"
    assert outcome(d, control)["reasons"] == ["sampled"], "one_in = 1 samples where announced"
    assert outcome(d, plain)["event"] == "call_wiped"
    assert outcome(d, plain)["why"] == "not_kept", "not sampled: training is not announced"
    kept_for = outcome(d, escalated)
    assert kept_for["event"] == "call_committed"
    assert (kept_for["reasons"], kept_for["purposes"]) == (["marked"], ["escalation"])
    assert outcome(d, trained)["event"] == "call_wiped"
    assert outcome(d, trained)["why"] == "not_kept"
    (refusal,) = d.events("mark_refused")
    assert (refusal["call_id"], refusal["line"], refusal["purpose"]) == (
        trained,
        "desk-01",
        "training",
    )
    assert [(e["call_id"], e["purpose"]) for e in d.events("call_marked")] == [
        (escalated, "escalation")
    ]
    assert kept == {control, escalated}


def test_check_config_names_every_purpose_mistake_at_once(tmp_path: Path) -> None:
    text = config_text(tmp_path, lines=[]) + (
        '[[lines]]\nname = "desk-01"\nchannels = [1, 2]\nannounced = ["training", "ghost"]\n'
        + PURPOSES
        + '[purposes.both]\nlegal_basis = "consent"\nretention_days = 7\nuntil_resolved = true\n'
        + '[purposes.neither]\nlegal_basis = "consent"\n'
        + '[purposes.negative]\nlegal_basis = "consent"\nretention_days = -2\n'
        + '[purposes.typo]\nlegal_basis = "contrakt"\nretention_days = 1\n'
    )
    config = tmp_path / "purposes.toml"
    config.write_text(text)
    result = subprocess.run(
        [str(BIN / "hindsightd"), "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    problems = [line for line in result.stdout.splitlines() if line.strip()]
    by_key: dict[str, str] = {}
    for line in problems:
        key, _, what = line.partition(": ")
        assert key not in by_key, f"one line per mistake: {problems}"
        by_key[key] = what
    assert set(by_key) == {
        "purposes.both",
        "purposes.neither",
        "purposes.negative.retention_days",
        "purposes.typo.legal_basis",
        "lines[0].announced",
    }, problems
    assert "has both retention_days and until_resolved" in by_key["purposes.both"]
    assert "needs retention_days or until_resolved" in by_key["purposes.neither"]
    assert "got -2" in by_key["purposes.negative.retention_days"]
    assert "'contrakt'" in by_key["purposes.typo.legal_basis"]
    assert "did you mean 'contract'" in by_key["purposes.typo.legal_basis"]
    assert "'ghost' is not declared under [purposes]" in by_key["lines[0].announced"]
    assert not (tmp_path / "state").exists(), "a check starts nothing"
    assert not (tmp_path / "ctl.sock").exists()

    # The same file without the mistakes is accepted: each line above came from a mistake.
    fixed = text.replace('"training", "ghost"', '"training"').split("[purposes.both]")[0]
    config.write_text(fixed)
    good = subprocess.run(
        [str(BIN / "hindsightd"), "--config", str(config), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert good.returncode == 0, good
