"""``register``: the GDPR Art. 30(1) record of processing activities, built from the config
and, when a state folder is given, from its commit log.

Rules of this module:

- Derived, never boilerplate: every purpose, retention rule and measure it states is read
  from the ``Config``; a measure that the config switches off is said to be off, naming the
  key that would switch it on. What no config can show (the systemd unit) says so.
- Keys are counted, never printed: a purpose's age recipients appear as a count and the first
  12 characters of each.
- Every text from the config or the log goes through ``shown``: a newline or a control
  character in a description is quoted, so that it can neither forge a heading nor a line.
- The log is streamed through ``read_chain`` (a broken chain is refused, as by ``report``):
  what is kept is one ``Ledger`` and a few counters, never the log's lines.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from hindsight import chaincheck
from hindsight.audit.common import DELETION_WHYS, shown
from hindsight.clock import iso, utcnow
from hindsight.commitlog import LOG_NAME
from hindsight.config import Config, PurposeConfig, is_loopback
from hindsight.errors import CommitLogError
from hindsight.retention import Ledger

# hindsight's legal_basis keywords as the points of GDPR Art. 6(1).
ARTICLE_6 = {
    "consent": "Art. 6(1)(a) consent",
    "contract": "Art. 6(1)(b) contract",
    "legal-obligation": "Art. 6(1)(c) legal obligation",
    "vital-interests": "Art. 6(1)(d) vital interests",
    "public-task": "Art. 6(1)(e) public task",
    "legitimate-interests": "Art. 6(1)(f) legitimate interests",
    "legitimate-interest": "Art. 6(1)(f) legitimate interests",
}
PREFIX_CHARS = 12  # of an age recipient: enough to tell keys apart, too little to use one
_WIDTH = 96

# ---------------------------------------------------------------------------------------------
# the record


@dataclass(frozen=True)
class Purpose:
    """One declared purpose as the register states it."""

    config: PurposeConfig
    sampled_one_in: int | None  # 1 in N calls is kept for it at random; None: never sampled
    marking_default: bool  # the record key's purpose when a mark names none
    recipients: tuple[str, ...]  # the first PREFIX_CHARS of each age recipient

    @property
    def article(self) -> str:
        return ARTICLE_6.get(self.config.legal_basis, self.config.legal_basis)

    @property
    def retention(self) -> str:
        return retention_words(self.config)

    def to_json(self) -> dict[str, Any]:
        p = self.config
        return {
            "name": p.name,
            "description": p.description or None,
            "legal_basis": p.legal_basis,
            "article": self.article,
            "sampled_one_in": self.sampled_one_in,
            "marking_default": self.marking_default,
            "retention": {
                "retention_days": p.retention_days,
                "until_resolved": p.until_resolved,
                "grace_days": p.grace_days,
                "max_retention_days": p.max_retention_days,
                "text": self.retention,
            },
            "recipients": {"count": len(self.recipients), "prefixes": list(self.recipients)},
            "encrypted": bool(self.recipients),
        }


# A measure's state: what the config makes of it.
IN_FORCE = "in_force"
PARTIAL = "partial"  # for some purposes only
OFF = "off"
DEPLOYMENT = "deployment"  # the config cannot tell: it depends on how the daemon is run
_STATE_WORDS = {
    IN_FORCE: "in force",
    PARTIAL: "partly in force",
    OFF: "NOT in force",
    DEPLOYMENT: "depends on the deployment",
}


@dataclass(frozen=True)
class Measure:
    """A technical or organisational measure; ``state`` is one of the four above."""

    key: str
    title: str
    state: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "state": self.state, "text": self.text}


@dataclass(frozen=True)
class LogFacts:
    """What the commit log of ``state_dir`` says, at its last entry."""

    state_dir: Path
    entries: int
    first_time: str | None
    last_time: str | None
    recordings: Mapping[str, int]  # purpose -> recordings that exist and are kept for it
    total_recordings: int
    deletions: Mapping[str, int]  # why -> recordings deleted; expired and erased always
    accesses: int

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": str(self.state_dir),
            "entries": self.entries,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "recordings": {"total": self.total_recordings, "by_purpose": dict(self.recordings)},
            "deletions": dict(self.deletions),
            "accesses": self.accesses,
        }


@dataclass(frozen=True)
class Register:
    """The record of processing; ``missing`` names what the config should say but does not."""

    generated: datetime
    config: Config
    purposes: Sequence[Purpose]
    measures: Sequence[Measure]
    log: LogFacts | None

    @property
    def missing(self) -> list[str]:
        found = [
            f"[register] {key}"
            for key in ("controller", "contact")
            if not getattr(self.config.register, key).strip()
        ]
        return found + [
            f"purposes.{p.config.name}.description"
            for p in self.purposes
            if not p.config.description.strip()
        ]

    def to_json(self) -> dict[str, Any]:
        """The record as JSON; keys are stable and always present (see docs/commands.md)."""
        reg = self.config.register
        return {
            "record": "GDPR Art. 30(1) record of processing activities",
            "generated": iso(self.generated),
            "config": {
                "path": None if self.config.path is None else str(self.config.path),
                "sha256": self.config.sha256,
            },
            "controller": {"name": reg.controller or None, "contact": reg.contact or None},
            "missing": self.missing,
            "purposes": [purpose.to_json() for purpose in self.purposes],
            "data_subjects": list(reg.data_subjects),
            "data_categories": list(reg.data_categories),
            "data_recipients": list(reg.data_recipients),
            "transfers": reg.transfers,
            "measures": {measure.key: measure.to_json() for measure in self.measures},
            "log": None if self.log is None else self.log.to_json(),
        }


def register(
    config: Config, state_dir: Path | None = None, now: datetime | None = None
) -> Register:
    """The record of processing for ``config``, with the facts of ``state_dir``'s log when
    given; raises CommitLogError when that log is missing or its chain breaks."""
    return Register(
        generated=utcnow() if now is None else now,
        config=config,
        purposes=[_purpose(config, p) for p in config.purposes],
        measures=measures(config),
        log=None if state_dir is None else read_log(state_dir),
    )


def _purpose(config: Config, purpose: PurposeConfig) -> Purpose:
    sampling = config.sampling
    sampled = sampling.purpose == purpose.name and sampling.one_in > 0
    return Purpose(
        config=purpose,
        sampled_one_in=sampling.one_in if sampled else None,
        marking_default=config.marking.purpose == purpose.name,
        recipients=tuple(key[:PREFIX_CHARS] for key in config.recipients([purpose.name])),
    )


# ---------------------------------------------------------------------------------------------
# retention in words


def days(value: float) -> str:
    """``1 day``, ``92 days``, ``0.0001 days``: as written in the file, never in exponents."""
    text = format(Decimal(repr(value)).normalize(), "f")
    return f"{text} day" if text == "1" else f"{text} days"


def retention_words(purpose: PurposeConfig) -> str:
    """The purpose's time limit for erasure, counted from the end of the call."""
    cap = purpose.max_retention_days
    if purpose.until_resolved:
        rule = "until resolved"
        if purpose.grace_days:
            rule += f" + {days(purpose.grace_days)} grace"
        return f"{rule}, at most {days(cap)}" if cap is not None else f"{rule}, no upper limit"
    rule = days(purpose.retention_days or 0.0)
    if cap is not None and cap != purpose.retention_days:
        rule += f", extendable to at most {days(cap)}"
    return rule


# ---------------------------------------------------------------------------------------------
# measures in force


def measures(config: Config) -> list[Measure]:
    """Every technical and organisational measure, as the config sets it, in a stable order."""
    return [
        _encryption(config),
        _memory_only(config),
        _memory_locking(config),
        Measure(
            "no_core_dumps",
            "No core dumps",
            IN_FORCE,
            "The daemon and its worker turn core dumps off and make themselves non-dumpable "
            "(no ptrace by other processes of the same user): buffered audio never lands in "
            "a core file.",
        ),
        _pseudonymisation(config),
        _purpose_limitation(config),
        Measure(
            "access_logging",
            "Access logging",
            IN_FORCE,
            "Every opening of a recording (hindsight export and play) is logged in the commit "
            "log with who (actor) and why (reason) before the recording is named; so is every "
            "change to a recording's retention (resolve, extend, hold, release, erase) and "
            "every request a remote client's role does not allow (access_denied).",
        ),
        Measure(
            "hash_chained_log",
            "Hash-chained commit log",
            IN_FORCE,
            "Every call's outcome (kept or wiped, and why) and every retention event is "
            f"appended to {shown(config.daemon.state_dir / LOG_NAME)}, each line chained to "
            "the one before by SHA-256 and flushed to disk before the daemon goes on; "
            "hindsight audit verify detects an altered, removed or reordered line.",
        ),
        _verifiable_sampling(config),
        _sealed_seeds(config),
        _retention_enforcement(config),
        _access_control(config),
        Measure(
            "systemd_hardening",
            "Service hardening",
            DEPLOYMENT,
            "When run with the shipped unit (systemd/hindsightd.service): a dedicated system "
            "user without capabilities, the file system read-only but for the state and "
            "runtime folders, core dumps off (LimitCORE=0), a system-call filter, devices "
            "limited to sound cards and network traffic to loopback (IPAddressDeny=any).",
        ),
    ]


def _keys(count: int) -> str:
    return "1 age key" if count == 1 else f"{count} age keys"


def _names(names: Iterable[str]) -> str:
    return ", ".join(shown(name) for name in names)


def _encryption(config: Config) -> Measure:
    bare = config.unencrypted()
    sealed = [p for p in config.purposes if p.name not in bare]
    per = "; ".join(f"{shown(p.name)}: {_keys(len(config.recipients([p.name])))}" for p in sealed)
    parts = []
    if sealed:
        parts.append(
            f"Recordings kept for {_names(p.name for p in sealed)} are encrypted with age "
            f"(X25519) as they are written ({per}), agents' notes with them; the recorder "
            "holds public keys only."
        )
    if bare:
        parts.append(
            f"NOT encrypted: recordings kept only for {_names(bare)} (no age recipient in "
            "storage.recipients or the purpose's recipients) are written as plain FLAC."
        )
    if config.storage.require_encryption:
        parts.append(
            "The daemon refuses to start unless every purpose has a recipient "
            "(storage.require_encryption = true)."
        )
    state = OFF if not sealed else PARTIAL if bare else IN_FORCE
    return Measure("encryption_at_rest", "Encryption at rest", state, " ".join(parts))


def _memory_only(config: Config) -> Measure:
    return Measure(
        "memory_only_buffering",
        "Calls buffered in memory only",
        IN_FORCE,
        f"Live calls are held in a fixed {config.buffer.memory_mb} MiB memory pool, at most "
        f"the last {config.buffer.max_call_seconds:g} seconds of each; a call neither sampled "
        "nor marked is zeroed in memory when it ends and never written to disk (only its wipe "
        "is logged).",
    )


def _memory_locking(config: Config) -> Measure:
    pool = f"the {config.buffer.memory_mb} MiB audio pool"
    if config.buffer.require_lock:
        text = (
            f"{pool[0].upper()}{pool[1:]} is locked in RAM: the daemon refuses to start when "
            "it cannot lock it (buffer.require_lock = true), so buffered calls never reach swap."
        )
    else:
        text = (
            "Not required (buffer.require_lock = false): the daemon locks "
            f"{pool} in RAM when the locked-memory limit allows, and otherwise runs with it "
            "unlocked, so buffered calls could be swapped to disk."
        )
    state = IN_FORCE if config.buffer.require_lock else OFF
    return Measure("memory_locking", "Memory locking", state, text)


def _pseudonymisation(config: Config) -> Measure:
    key = shown(config.daemon.state_dir / "caller.key")
    return Measure(
        "pseudonymisation",
        "Pseudonymisation of callers' numbers",
        IN_FORCE,
        "A caller's number is never stored or logged: only its keyed pseudonym (HMAC-SHA-256 "
        f"under a random 32-byte key made once in {key}, mode 0600), which finds a caller's "
        "recordings for an access or erasure request.",
    )


def _purpose_limitation(config: Config) -> Measure:
    declared = {p.name for p in config.purposes}
    every = sum(set(line.announced) >= declared for line in config.lines)
    none = sum(not line.announced for line in config.lines)
    some = len(config.lines) - every - none
    return Measure(
        "purpose_limitation",
        "Purpose limitation",
        IN_FORCE,
        "A call is kept only for a purpose its caller was told of (lines' announced, or the "
        f"start request's): of {len(config.lines)} lines, every purpose is announced on "
        f"{every}, only some on {some}, none on {none} (their calls are never buffered).",
    )


def _verifiable_sampling(config: Config) -> Measure:
    sampling = config.sampling
    if sampling.one_in <= 0:
        return Measure(
            "verifiable_sampling",
            "Verifiable sampling",
            OFF,
            "Sampling is off (sampling.one_in = 0): no call is kept at random.",
        )
    return Measure(
        "verifiable_sampling",
        "Verifiable sampling",
        IN_FORCE,
        f"1 in {sampling.one_in} calls is kept for {shown(sampling.purpose)} by a draw an "
        "auditor can recompute: each sampling epoch's seed (a new one every "
        f"{sampling.epoch_hours:g} hours and at every start) is committed in the log before "
        "its calls and revealed when the epoch ends; hindsight audit verify recomputes every "
        "draw. Nothing the agents see depends on a draw.",
    )


def _sealed_seeds(config: Config) -> Measure:
    count = len(config.audit.recipients)
    if config.sampling.one_in <= 0:
        text = "Not applicable: sampling is off."
    elif count:
        text = (
            f"Each epoch's seed is sealed to the auditors ({_keys(count)} in [audit] recipients) "
            "when the epoch opens, so an epoch cut short by a crash stays verifiable."
        )
    else:
        text = (
            "[audit] recipients is empty: the draws of an epoch cut short by a crash, "
            "before its seed was revealed, cannot be recomputed."
        )
    state = IN_FORCE if count and config.sampling.one_in > 0 else OFF
    return Measure("sealed_sampling_seeds", "Sampling seeds sealed to auditors", state, text)


def _retention_enforcement(config: Config) -> Measure:
    return Measure(
        "retention_enforcement",
        "Retention enforced",
        IN_FORCE,
        "The daemon deletes the recordings past their time limit by itself every "
        f"{config.retention.purge_interval_seconds:g} seconds, logging each deletion before "
        "the files go; only a legal hold (hindsight hold) suspends it. hindsight audit verify "
        "fails on a recording more than a day overdue.",
    )


def _local_control(control: str) -> tuple[bool, str]:
    """Whether the control endpoint is out of the network's reach, and how it is guarded."""
    if control.startswith("ipc://"):
        return True, (
            f"The local control socket {shown(control)} is a Unix socket (mode 0660: the "
            "daemon's user and group only)."
        )
    if is_loopback(control):
        return True, (
            f"The control endpoint {shown(control)} is bound to loopback and has no "
            "authentication: every local user can use it."
        )
    return False, (
        f"NOT protected: the control endpoint {shown(control)} is not loopback and has no "
        "authentication; anyone who can reach it can keep or end calls."
    )


def _remote_clients(config: Config) -> str:
    if config.daemon.listen is None:
        return "No remote clients: daemon.listen is not set."
    roles = Counter(client.role for client in config.clients)
    by_role = ", ".join(f"{count} {role}" for role, count in sorted(roles.items()))
    return (
        f"Remote clients reach the daemon only on {shown(config.daemon.listen)}, encrypted "
        f"and authenticated with CURVE: {len(config.clients)} client keys ({by_role}), each "
        "limited to its role; any other key gets no answer."
    )


def _access_control(config: Config) -> Measure:
    guarded, local = _local_control(config.daemon.control)
    text = f"{local} {_remote_clients(config)}"
    return Measure("access_control", "Access to the daemon", IN_FORCE if guarded else OFF, text)


# ---------------------------------------------------------------------------------------------
# the log


def read_log(state_dir: Path) -> LogFacts:
    """Stream ``state_dir``'s commit log once; CommitLogError when missing or broken."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CommitLogError(f"{LOG_NAME} is missing in {state_dir}")
    # Deletions are counted as they come (whys), not kept: memory bounded by what exists.
    ledger, whys = Ledger(on_deleted=lambda deletion: None), Counter[str]()
    entries = accesses = 0
    first: str | None = None
    last: str | None = None
    for entry in chaincheck.entries(path):
        entries += 1
        first, last = first or entry["time"], entry["time"]
        ledger.apply(entry)
        accesses += entry["event"] == "recording_accessed"
        if entry["event"] == "recording_deleted":
            whys[str(entry.get("why"))] += 1
    kept = ledger.recordings()
    by_purpose = Counter(name for recording in kept for name in recording.purposes)
    others = sorted(why for why in whys if why not in DELETION_WHYS)
    return LogFacts(
        state_dir=state_dir,
        entries=entries,
        first_time=first,
        last_time=last,
        recordings=dict(sorted(by_purpose.items())),
        total_recordings=len(kept),
        deletions={why: whys[why] for why in (*DELETION_WHYS, *others)},
        accesses=accesses,
    )


# ---------------------------------------------------------------------------------------------
# rendering: a plain-text document with Markdown headings


def _heading(title: str) -> list[str]:
    return ["", f"## {title}", ""]


def _wrapped(text: str, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [first.rstrip()]


def _items(values: Iterable[str], empty: str) -> list[str]:
    lines = [line for value in values for line in _wrapped(shown(value), "- ", "  ")]
    return lines or [f"- {empty}"]


def _or_unset(value: str, key: str) -> str:
    return shown(value) if value.strip() else f"(not set: {key})"


def _header(record: Register) -> list[str]:
    config = record.config
    source = "(no file)" if config.path is None else shown(config.path)
    lines = [
        "# Record of processing activities (GDPR Art. 30(1))",
        "",
        "Processing:   recording of telephone calls (Hindsight call recorder)",
        f"Generated:    {iso(record.generated)}",
        f"Config:       {source}",
    ]
    if config.sha256 is not None:
        lines.append(f"Config hash:  sha256 {config.sha256}")
    if record.log is not None:
        lines.append(f"Commit log:   {shown(record.log.state_dir / LOG_NAME)}")
    return lines


def _controller(record: Register) -> list[str]:
    reg = record.config.register
    return [
        *_heading("1. Controller (Art. 30(1)(a))"),
        f"Controller:   {_or_unset(reg.controller, '[register] controller')}",
        f"Contact/DPO:  {_or_unset(reg.contact, '[register] contact')}",
    ]


def _kept_when(purpose: Purpose) -> str:
    ways = []
    if purpose.sampled_one_in is not None:
        ways.append(f"sampled at random, 1 in {purpose.sampled_one_in} calls")
    if purpose.marking_default:
        ways.append("marked by an agent (the record key's purpose)")
    else:
        ways.append(f"marked by an agent for it (mark --purpose {shown(purpose.config.name)})")
    return "; ".join(ways)


def _recipient_words(purpose: Purpose) -> str:
    if not purpose.recipients:
        return "none: NOT encrypted"
    return f"{_keys(len(purpose.recipients))} ({', '.join(f'{k}…' for k in purpose.recipients)})"


def _purpose_block(purpose: Purpose) -> list[str]:
    p = purpose.config
    description = _or_unset(p.description, f"purposes.{p.name}.description")
    return [
        f"### {shown(p.name)}",
        "",
        *_wrapped(f"Description:  {description}", rest=" " * 14),
        f"Legal basis:  {purpose.article} ({shown(p.legal_basis)})",
        f"Kept when:    {_kept_when(purpose)}",
        f"Retention:    {purpose.retention}",
        f"Opened by:    {_recipient_words(purpose)}",
        "",
    ]


def _purposes(record: Register) -> list[str]:
    lines = [
        *_heading("2. Purposes of the processing (Art. 30(1)(b))"),
        *_wrapped(
            "Calls are buffered in memory while they last; a call is written (kept) only when "
            "it is sampled at random or an agent marks it, and only for the purposes below."
        ),
        "",
    ]
    for purpose in record.purposes:
        lines += _purpose_block(purpose)
    return lines[:-1]


def _categories(record: Register) -> list[str]:
    reg = record.config.register
    return [
        *_heading("3. Categories of data subjects (Art. 30(1)(c))"),
        *_items(reg.data_subjects, "(none declared: [register] data_subjects)"),
        *_heading("4. Categories of personal data (Art. 30(1)(c))"),
        *_items(reg.data_categories, "(none declared: [register] data_categories)"),
    ]


def _recipients(record: Register) -> list[str]:
    reg = record.config.register
    return [
        *_heading("5. Categories of recipients (Art. 30(1)(d))"),
        *_items(reg.data_recipients, "(none declared: [register] data_recipients)"),
        "",
        "Holders of the age identities that open each purpose's recordings:",
        *(f"- {shown(p.config.name)}: {_recipient_words(p)}" for p in record.purposes),
        *_heading("6. Transfers to third countries (Art. 30(1)(e))"),
        *_wrapped(f"Transfers:    {shown(record.config.register.transfers)}", rest=" " * 14),
    ]


def _erasure(record: Register) -> list[str]:
    width = max((len(shown(p.config.name)) for p in record.purposes), default=0)
    return [
        *_heading("7. Time limits for erasure (Art. 30(1)(f))"),
        *_wrapped(
            "Counted from the end of the call; a recording kept for several purposes is "
            "erased when the last of them ends. A legal hold suspends erasure while it lasts."
        ),
        "",
        *(f"- {shown(p.config.name).ljust(width)}  {p.retention}" for p in record.purposes),
    ]


def _measures(record: Register) -> list[str]:
    lines = _heading("8. Technical and organisational measures (Art. 30(1)(g), Art. 32(1))")
    for measure in record.measures:
        state = _STATE_WORDS[measure.state]
        lines += _wrapped(f"{measure.title} [{state}]: {measure.text}", "- ", "  ")
    return lines


def _log(facts: LogFacts, config: Config) -> list[str]:
    period = (
        f"{facts.first_time} to {facts.last_time}" if facts.first_time else "(the log is empty)"
    )
    declared = {p.name for p in config.purposes}
    lines = [
        *_heading("9. From the commit log"),
        f"Period:       {period}",
        f"Entries:      {facts.entries} (hash chain intact)",
        f"Accesses:     {facts.accesses} openings of a recording logged (recording_accessed)",
        "",
        f"Recordings that exist, by purpose ({facts.total_recordings} in all):",
    ]
    names = [
        *(p.name for p in config.purposes),
        *(n for n in facts.recordings if n not in declared),
    ]
    for name in names:
        note = "" if name in declared else "  (not declared in this config)"
        lines.append(f"- {shown(name)}: {facts.recordings.get(name, 0)}{note}")
    lines += ["", "Recordings deleted, by reason:"]
    lines += [f"- {shown(why)}: {count}" for why, count in facts.deletions.items()]
    return lines


def render(record: Register) -> str:
    """The record as a plain-text document with Markdown headings; stable from run to run."""
    lines = [
        *_header(record),
        *_controller(record),
        *_purposes(record),
        *_categories(record),
        *_recipients(record),
        *_erasure(record),
        *_measures(record),
    ]
    if record.log is not None:
        lines += _log(record.log, record.config)
    return "\n".join(lines)
