from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zmq

from hindsight.audit import register as reg
from hindsight.commitlog import CommitLog
from hindsight.config import LEGAL_BASES, load_config
from hindsight.errors import CommitLogError
from tests.harness import cli

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
END = "2026-11-28T10:00:00.000Z"


def recipient() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


def toml(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text)


BASE = {
    "daemon": 'state_dir = "state"\ncontrol = "ipc://ctl.sock"',
    "audio": 'source = "synthetic"',
    "sampling": 'one_in = 10\npurpose = "training"',
    "marking": 'purpose = "escalation"',
    "register": 'controller = "ACME Calls Ltd, 1 Main Street"\ncontact = "dpo@acme.example"',
}
LINES = '[[lines]]\nname = "desk-01"\nchannels = [1, 2]\n\n'
PURPOSES = """
[purposes.training]
legal_basis = "legitimate-interest"
retention_days = 92
description = "coaching agents on real calls"

[purposes.escalation]
legal_basis = "contract"
until_resolved = true
grace_days = 14
max_retention_days = 730
description = "settling complaints"

[purposes.fraud]
legal_basis = "legal-obligation"
retention_days = 7
max_retention_days = 3650
description = "evidence for the fraud desk"

[purposes.consented]
legal_basis = "consent"
until_resolved = true
description = "what the caller agreed to"

[purposes.tiny]
legal_basis = "legitimate-interests"
retention_days = 0.0001
description = "demos"
"""


def write_config(
    tmp: Path, purposes: str = PURPOSES, lines: str = LINES, extra: str = "", **sections: str
) -> Path:
    """A config file; a section given as a keyword replaces the one in ``BASE``."""
    tables = BASE | sections
    text = "".join(f"[{name}]\n{body}\n\n" for name, body in tables.items())
    path = tmp / "hindsight.toml"
    path.write_text(text + lines + purposes + extra)
    return path


def record(tmp: Path, state_dir: Path | None = None, **over: Any) -> reg.Register:
    return reg.register(load_config(write_config(tmp, **over)), state_dir, NOW)


def as_json(tmp: Path, **over: Any) -> dict[str, Any]:
    """The record as ``--json`` would print it, read back."""
    result: dict[str, Any] = json.loads(json.dumps(record(tmp, **over).to_json()))
    return result


def measure(tmp: Path, key: str, **over: Any) -> dict[str, Any]:
    found: dict[str, Any] = as_json(tmp, **over)["measures"][key]
    return found


# --- purposes, legal bases, retention --------------------------------------------------------


def test_every_declared_purpose_is_listed_with_its_legal_basis_and_retention(
    tmp_path: Path,
) -> None:
    text = reg.render(record(tmp_path))
    expected = {
        "training": ("Art. 6(1)(f) legitimate interests", "92 days"),
        "escalation": (
            "Art. 6(1)(b) contract",
            "until resolved + 14 days grace, at most 730 days",
        ),
        "fraud": ("Art. 6(1)(c) legal obligation", "7 days, extendable to at most 3650 days"),
        "consented": ("Art. 6(1)(a) consent", "until resolved, no upper limit"),
        "tiny": ("Art. 6(1)(f) legitimate interests", "0.0001 days"),
    }
    for name, (article, retention) in expected.items():
        block = text.split(f"### {name}\n\n", 1)[1].split("\n\n", 1)[0]
        assert f"Legal basis:  {article} (" in block, block
        assert f"Retention:    {retention}\n" in block + "\n", block
    erasure = text.split("## 7. Time limits for erasure", 1)[1].split("## 8.", 1)[0]
    for name, (_, retention) in expected.items():
        assert f"- {name.ljust(10)}  {retention}\n" in erasure
    purposes = as_json(tmp_path)["purposes"]
    assert [p["name"] for p in purposes] == list(expected)
    assert [(p["article"], p["retention"]["text"]) for p in purposes] == list(expected.values())
    assert purposes[1]["retention"] == {
        "retention_days": None,
        "until_resolved": True,
        "grace_days": 14.0,
        "max_retention_days": 730.0,
        "text": "until resolved + 14 days grace, at most 730 days",
    }


@pytest.mark.parametrize("basis", LEGAL_BASES)
def test_every_legal_basis_keyword_is_an_art_6_1_point(tmp_path: Path, basis: str) -> None:
    purposes = f'[purposes.training]\nlegal_basis = "{basis}"\nretention_days = 1\n'
    (purpose,) = as_json(tmp_path, purposes=purposes, marking='purpose = "training"')["purposes"]
    letter = "abcdeff"[LEGAL_BASES.index(basis)]
    assert purpose["article"].startswith(f"Art. 6(1)({letter}) ")
    assert purpose["legal_basis"] == basis


def test_days_are_written_as_in_the_file() -> None:
    assert [reg.days(d) for d in (1.0, 92.0, 730.0, 0.5, 0.0001, 0.00001)] == [
        "1 day", "92 days", "730 days", "0.5 days", "0.0001 days", "0.00001 days",
    ]  # fmt: skip


def test_the_sampling_and_the_marking_purpose_are_named(tmp_path: Path) -> None:
    text = reg.render(record(tmp_path))
    assert "Kept when:    sampled at random, 1 in 10 calls; marked by an agent for it" in text
    assert "Kept when:    marked by an agent (the record key's purpose)" in text
    purposes = {p["name"]: p for p in as_json(tmp_path)["purposes"]}
    assert (purposes["training"]["sampled_one_in"], purposes["training"]["marking_default"]) == (
        10,
        False,
    )
    assert (
        purposes["escalation"]["sampled_one_in"],
        purposes["escalation"]["marking_default"],
    ) == (
        None,
        True,
    )


def test_sampling_off_is_said_and_no_purpose_is_sampled(tmp_path: Path) -> None:
    found = as_json(tmp_path, sampling="one_in = 0")
    assert [p["sampled_one_in"] for p in found["purposes"]] == [None] * 5
    assert found["measures"]["verifiable_sampling"]["state"] == "off"
    assert "sampling.one_in = 0" in found["measures"]["verifiable_sampling"]["text"]
    assert "sampled at random" not in reg.render(record(tmp_path, sampling="one_in = 0"))


# --- measures in force, from the config -------------------------------------------------------


def test_an_unencrypted_purpose_is_named_as_unencrypted(tmp_path: Path) -> None:
    key = recipient()
    purposes = PURPOSES.replace(
        "retention_days = 92\n", f"retention_days = 92\nrecipients = [{toml(key)}]\n"
    )
    found = as_json(tmp_path, purposes=purposes)
    encryption = found["measures"]["encryption_at_rest"]
    assert encryption["state"] == "partial"
    assert "Recordings kept for training are encrypted" in encryption["text"]
    assert (
        "NOT encrypted: recordings kept only for escalation, fraud, consented, tiny"
        in encryption["text"]
    )
    assert {p["name"]: p["encrypted"] for p in found["purposes"]} == {
        "training": True, "escalation": False, "fraud": False, "consented": False, "tiny": False,
    }  # fmt: skip
    text = reg.render(record(tmp_path, purposes=purposes))
    assert "- escalation: none: NOT encrypted" in text
    assert "Encryption at rest [partly in force]:" in text


def test_global_recipients_encrypt_every_purpose(tmp_path: Path) -> None:
    storage = f"recipients = [{toml(recipient())}]\nrequire_encryption = true"
    encryption = measure(tmp_path, "encryption_at_rest", storage=storage)
    assert encryption["state"] == "in_force"
    assert "NOT encrypted" not in encryption["text"]
    assert "refuses to start unless every purpose has a recipient" in encryption["text"]


def test_no_recipient_at_all_is_encryption_off(tmp_path: Path) -> None:
    encryption = measure(tmp_path, "encryption_at_rest")
    assert encryption["state"] == "off"
    assert "encrypted with age" not in encryption["text"]
    assert "refuses to start" not in encryption["text"]


def test_require_lock_changes_the_memory_locking_measure(tmp_path: Path) -> None:
    locked = measure(tmp_path, "memory_locking", buffer="require_lock = true\nmemory_mb = 64")
    unlocked = measure(tmp_path, "memory_locking", buffer="require_lock = false\nmemory_mb = 64")
    assert locked["state"] == "in_force"
    assert "refuses to start when it cannot lock it" in locked["text"]
    assert "64 MiB" in locked["text"]
    assert unlocked["state"] == "off"
    assert "buffer.require_lock = false" in unlocked["text"]
    assert "could be swapped to disk" in unlocked["text"]


def test_auditor_recipients_say_whether_seeds_are_sealed(tmp_path: Path) -> None:
    keys = toml(recipient()) + ", " + toml(recipient())
    sealed = measure(tmp_path, "sealed_sampling_seeds", audit=f"recipients = [{keys}]")
    bare = measure(tmp_path, "sealed_sampling_seeds")
    assert sealed["state"] == "in_force" and "2 age keys in [audit] recipients" in sealed["text"]
    assert bare["state"] == "off" and "[audit] recipients is empty" in bare["text"]
    epochs = measure(tmp_path, "verifiable_sampling", sampling="one_in = 4\nepoch_hours = 6")
    assert "1 in 4 calls" in epochs["text"] and "every 6 hours" in epochs["text"]


def test_purge_interval_and_state_dir_come_from_the_config(tmp_path: Path) -> None:
    found = as_json(tmp_path, retention="purge_interval_seconds = 900")["measures"]
    assert "every 900 seconds" in found["retention_enforcement"]["text"]
    state = tmp_path / "state"
    assert f"{state}/caller.key" in found["pseudonymisation"]["text"]
    assert f"{state}/commit.log" in found["hash_chained_log"]["text"]


def test_remote_clients_are_counted_by_role_and_curve_is_named(tmp_path: Path) -> None:
    keys = [zmq.curve_keypair()[0].decode() for _ in range(3)]
    clients = "".join(
        f'\n[[clients]]\nname = "c{i}"\npublic_key = {toml(key)}\nrole = "{role}"\n'
        for i, (key, role) in enumerate(zip(keys, ("telephony", "agent", "agent"), strict=True))
    )
    daemon = (
        'state_dir = "state"\ncontrol = "ipc://ctl.sock"\nlisten = "tcp://0.0.0.0:7700"\n'
        'curve_secret_key_file = "server.key_secret"'
    )
    access = measure(tmp_path, "access_control", daemon=daemon, extra=clients)
    assert access["state"] == "in_force"
    assert "tcp://0.0.0.0:7700" in access["text"] and "CURVE" in access["text"]
    assert "3 client keys (2 agent, 1 telephony)" in access["text"]
    assert all(key not in access["text"] for key in keys)
    local = measure(tmp_path, "access_control")
    assert "Unix socket" in local["text"] and "daemon.listen is not set" in local["text"]


def test_a_control_endpoint_off_loopback_is_not_in_force(tmp_path: Path) -> None:
    key = toml(zmq.curve_keypair()[0].decode())
    clients = f'\n[[clients]]\nname = "pbx"\npublic_key = {key}\nrole = "telephony"\n'
    daemon = 'state_dir = "state"\ncontrol = "tcp://0.0.0.0:7701"'
    access = measure(tmp_path, "access_control", daemon=daemon, extra=clients)
    assert access["state"] == "off" and "is not loopback" in access["text"]
    loopback = measure(tmp_path, "access_control", daemon='control = "tcp://127.0.0.1:7701"')
    assert loopback["state"] == "in_force" and "bound to loopback" in loopback["text"]


def test_recipient_keys_are_counted_never_printed(tmp_path: Path) -> None:
    shared, own = recipient(), recipient()
    purposes = PURPOSES.replace(
        "retention_days = 92\n", f"retention_days = 92\nrecipients = [{toml(own)}]\n"
    )
    over: dict[str, Any] = {"purposes": purposes, "storage": f"recipients = [{toml(shared)}]"}
    text = reg.render(record(tmp_path, **over))
    dumped = json.dumps(record(tmp_path, **over).to_json())
    for key in (shared, own):
        assert key not in text and key not in dumped
        assert key[:12] in text and key[:12] in dumped
    training = as_json(tmp_path, **over)["purposes"][0]["recipients"]
    assert training == {"count": 2, "prefixes": [shared[:12], own[:12]]}
    assert f"- training: 2 age keys ({shared[:12]}…, {own[:12]}…)" in text
    assert f"- escalation: 1 age key ({shared[:12]}…)" in text


def test_systemd_hardening_is_conditional(tmp_path: Path) -> None:
    hardening = measure(tmp_path, "systemd_hardening")
    assert hardening["state"] == "deployment"
    assert hardening["text"].startswith("When run with the shipped unit")


# --- the register's own sections ----------------------------------------------------------------

HEADINGS = [
    "# Record of processing activities (GDPR Art. 30(1))",
    "## 1. Controller (Art. 30(1)(a))",
    "## 2. Purposes of the processing (Art. 30(1)(b))",
    "## 3. Categories of data subjects (Art. 30(1)(c))",
    "## 4. Categories of personal data (Art. 30(1)(c))",
    "## 5. Categories of recipients (Art. 30(1)(d))",
    "## 6. Transfers to third countries (Art. 30(1)(e))",
    "## 7. Time limits for erasure (Art. 30(1)(f))",
    "## 8. Technical and organisational measures (Art. 30(1)(g), Art. 32(1))",
]


def headings(text: str) -> list[str]:
    """Every line that starts with ``#``, but a purpose's ``###``."""
    return [line for line in text.splitlines() if line.startswith("#") and line[:4] != "### "]


def test_register_sections_come_from_the_config(tmp_path: Path) -> None:
    section = (
        'controller = "ACME Calls Ltd"\ncontact = "dpo@acme.example"\n'
        'data_subjects = ["callers", "agents"]\ndata_categories = ["voices"]\n'
        'data_recipients = ["quality team", "Hosting GmbH (processor)"]\n'
        'transfers = "none outside the EEA"'
    )
    rec = record(tmp_path, register=section)
    text = reg.render(rec)
    assert headings(text) == HEADINGS
    assert rec.missing == []
    for line in (
        "Controller:   ACME Calls Ltd",
        "Contact/DPO:  dpo@acme.example",
        "- callers\n- agents\n",
        "- voices\n",
        "- quality team\n- Hosting GmbH (processor)\n",
        "Transfers to third countries (Art. 30(1)(e))\n\nTransfers:    none outside the EEA",
    ):
        assert line in text
    found = rec.to_json()
    assert found["controller"] == {"name": "ACME Calls Ltd", "contact": "dpo@acme.example"}
    assert found["data_recipients"] == ["quality team", "Hosting GmbH (processor)"]
    assert found["transfers"] == "none outside the EEA"


def test_the_text_is_the_same_from_run_to_run(tmp_path: Path) -> None:
    assert reg.render(record(tmp_path)) == reg.render(record(tmp_path))


def test_hostile_strings_in_the_config_do_not_break_the_output(tmp_path: Path) -> None:
    evil = "ok\n## 9. From the commit log\n\x1b[31mred\x1b[0m \u202eevil\r# heading"
    purposes = PURPOSES.replace('"coaching agents on real calls"', toml(evil))
    section = (
        f"controller = {toml(evil)}\ncontact = {toml('a' * 500)}\n"
        f"data_subjects = [{toml(evil)}]\ntransfers = {toml(evil)}"
    )
    rec = record(tmp_path, purposes=purposes, register=section)
    text = reg.render(rec)
    assert headings(text) == HEADINGS
    assert not any(char in text for char in "\x1b\r\u202e")
    assert "Controller:   'ok\\n## 9. From the commit log\\n\\x1b[31mred" in text
    assert "a" * 500 in text  # never cut: the register quotes the config in full
    assert [line for line in text.splitlines() if line.startswith("### ")] == [
        f"### {name}" for name in ("training", "escalation", "fraud", "consented", "tiny")
    ]
    found = json.loads(json.dumps(rec.to_json()))
    assert found["purposes"][0]["description"] == evil
    assert found["controller"]["name"] == evil


@pytest.mark.parametrize("filler", range(0, 110, 9))
def test_a_printable_heading_in_the_config_never_starts_a_line(tmp_path: Path, filler: int) -> None:
    forged = toml("x" * filler + " ## 9. From the commit log")
    purposes = PURPOSES.replace('"coaching agents on real calls"', forged)
    section = f"transfers = {forged}\ndata_categories = [{forged}]\ncontroller = {forged}"
    text = reg.render(record(tmp_path, purposes=purposes, register=section))
    assert headings(text) == HEADINGS
    assert "From the commit log" in text


def test_a_missing_controller_and_contact_are_said_in_the_record(tmp_path: Path) -> None:
    rec = record(tmp_path, register="")
    text = reg.render(rec)
    assert "Controller:   (not set: [register] controller)" in text
    assert "Contact/DPO:  (not set: [register] contact)" in text
    assert rec.missing == ["[register] controller", "[register] contact"]
    assert rec.to_json()["controller"] == {"name": None, "contact": None}
    # The defaults of [register] are the record's categories.
    assert "- callers\n- call-centre agents\n" in text
    assert "- (none declared: [register] data_recipients)" in text


# --- from the commit log ------------------------------------------------------------------------


def commit(log: CommitLog, call_id: str, purposes: dict[str, str | None]) -> None:
    log.append("call_started", call_id=call_id, line="desk-01", agent="ann")
    log.append(
        "call_committed", call_id=call_id, line="desk-01", agent="ann", reasons=["marked"],
        purposes=list(purposes), retention=purposes, retain_until=None, ended=END,
        path=f"recordings/2026/11/28/{call_id}.flac", sha256="ab" * 32,
    )  # fmt: skip


def delete(log: CommitLog, call_id: str, why: str, **more: str) -> None:
    path = f"recordings/2026/11/28/{call_id}.flac"
    log.append("recording_deleted", call_id=call_id, path=path, why=why, **more)


def build_log(state: Path) -> Path:
    """c2, c3 and c5 exist at the end: escalation 2, training 1, retired (undeclared) 1."""
    train = "2027-02-28T10:00:00.000Z"
    state.mkdir(exist_ok=True)
    with CommitLog.open(state / "commit.log") as log:
        log.append("daemon_started", version="0.1.0")
        commit(log, "c1", {"training": train})
        commit(log, "c2", {"escalation": None})
        commit(log, "c3", {"training": train, "escalation": None})
        commit(log, "c4", {"training": train})
        commit(log, "c5", {"retired": train})
        log.append("recording_accessed", call_id="c1", actor="rev", reason="coaching")
        log.append("recording_accessed", call_id="c3", actor="rev", reason="coaching")
        delete(log, "c4", "expired")
        delete(log, "c1", "erased", actor="dpo", reason="the caller asked")
        log.append("daemon_stopped", version="0.1.0")
    return state / "commit.log"


def test_recordings_per_purpose_and_the_period_match_the_log(tmp_path: Path) -> None:
    path = build_log(tmp_path / "state")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    rec = record(tmp_path, state_dir=tmp_path / "state")
    assert rec.log is not None
    assert rec.log.to_json() == {
        "state_dir": str(tmp_path / "state"),
        "entries": len(lines),
        "first_time": lines[0]["time"],
        "last_time": lines[-1]["time"],
        "recordings": {"total": 3, "by_purpose": {"escalation": 2, "retired": 1, "training": 1}},
        "deletions": {"expired": 1, "erased": 1},
        "accesses": 2,
    }
    text = reg.render(rec)
    assert headings(text) == [*HEADINGS, "## 9. From the commit log"]
    log_part = text.split("## 9. From the commit log", 1)[1]
    assert f"Period:       {lines[0]['time']} to {lines[-1]['time']}" in log_part
    assert f"Entries:      {len(lines)} (hash chain intact)" in log_part
    assert (
        "- training: 1\n- escalation: 2\n- fraud: 0\n- consented: 0\n- tiny: 0\n"
        "- retired: 1  (not declared in this config)\n" in log_part
    )
    assert "- expired: 1\n- erased: 1" in log_part


def test_without_a_state_dir_nothing_is_read_from_a_log(tmp_path: Path) -> None:
    rec = record(tmp_path)
    assert rec.log is None and rec.to_json()["log"] is None
    assert "## 9." not in reg.render(rec)


def test_an_empty_log_says_so(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    CommitLog.open(tmp_path / "state" / "commit.log").close()
    rec = record(tmp_path, state_dir=tmp_path / "state")
    assert rec.log is not None and (rec.log.entries, rec.log.first_time) == (0, None)
    assert "Period:       (the log is empty)" in reg.render(rec)


def test_a_broken_chain_is_refused(tmp_path: Path) -> None:
    path = build_log(tmp_path / "state")
    path.write_text(path.read_text().replace('"reason":"coaching"', '"reason":"nothing"', 1))
    with pytest.raises(CommitLogError, match="line 12: hash does not match"):
        record(tmp_path, state_dir=tmp_path / "state")


# --- the command line ---------------------------------------------------------------------------

JSON_KEYS = [
    "record", "generated", "config", "controller", "missing", "purposes", "data_subjects",
    "data_categories", "data_recipients", "transfers", "measures", "log",
]  # fmt: skip
PURPOSE_KEYS = [
    "name", "description", "legal_basis", "article", "sampled_one_in", "marking_default",
    "retention", "recipients", "encrypted",
]  # fmt: skip
MEASURE_KEYS = [
    "encryption_at_rest", "memory_only_buffering", "memory_locking", "no_core_dumps",
    "pseudonymisation", "purpose_limitation", "access_logging", "hash_chained_log",
    "verifiable_sampling", "sealed_sampling_seeds", "retention_enforcement", "access_control",
    "systemd_hardening",
]  # fmt: skip


def test_cli_json_has_the_documented_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    build_log(tmp_path / "state")
    state = str(tmp_path / "state")
    done = cli("audit", "register", "--config", str(config), "--state-dir", state, "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    found = json.loads(done.stdout)
    assert list(found) == JSON_KEYS
    assert all(list(purpose) == PURPOSE_KEYS for purpose in found["purposes"])
    assert list(found["measures"]) == MEASURE_KEYS
    assert all(list(m) == ["title", "state", "text"] for m in found["measures"].values())
    assert {m["state"] for m in found["measures"].values()} <= {
        "in_force", "partial", "off", "deployment",
    }  # fmt: skip
    assert found["config"] == {"path": str(config), "sha256": load_config(config).sha256}
    assert found["log"]["recordings"]["total"] == 3
    assert found["missing"] == []


def test_cli_prints_the_record_without_a_controller_and_warns(tmp_path: Path) -> None:
    purposes = PURPOSES.replace('description = "settling complaints"\n', "")
    config = write_config(tmp_path, register='contact = "dpo@acme.example"', purposes=purposes)
    done = cli("--config", str(config), "audit", "register")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Record of processing activities (GDPR Art. 30(1))\n")
    assert "Controller:   (not set: [register] controller)" in done.stdout
    assert "Description:  (not set: purposes.escalation.description)" in done.stdout
    assert done.stderr.splitlines() == [
        "hindsight: warning: [register] controller is not set; the record says so",
        "hindsight: warning: purposes.escalation.description is not set; the record says so",
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read"),
        ("[daemon\n", "invalid TOML"),
        (
            LINES + '[purposes.escalation]\nlegal_basis = "contrakt"\nretention_days = 1\n',
            "purposes.escalation.legal_basis: must be one of",
        ),
    ],
    ids=["missing", "not-toml", "invalid"],
)
def test_cli_exits_2_for_a_config_it_cannot_use(
    tmp_path: Path, content: str | None, needle: str
) -> None:
    config = tmp_path / "hindsight.toml"
    if content is not None:
        config.write_text(content)
    done = cli("audit", "register", "--config", str(config))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("hindsight: audit register needs a valid config: ")
    assert needle in done.stderr and "Traceback" not in done.stderr


def test_cli_exits_1_for_a_missing_log(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = cli("audit", "register", "--config", str(config), "--state-dir", str(tmp_path / "x"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"hindsight: commit.log is missing in {tmp_path / 'x'}"
