"""``show``: one call's whole story, from the commit log and, when there is one, its sidecar.

Rules:

- Pure reads, like ``verify`` and ``report``: nothing under the state dir changes, and no
  daemon is needed.
- The log is read once, in order, its chain checked as it goes (``read_chain``): a broken
  chain is refused with its problem (``CommitLogError``), as ``report`` refuses it, because a
  tampered log tells no story worth trusting. Only the lines that name the call are kept,
  with the one ``sampling_epoch`` open at each point and the reveal of the call's epoch:
  memory does not grow with the log.
- Of the caller, only whether a pseudonym (``caller_ref``) was logged is shown, never the
  pseudonym (the log never holds a number). Of a mark's note, only whether there is one: a
  note is about the call's content, which ``export`` opens, and logs.
- The recording is hashed in blocks (``file_sha256``), never read whole, and only when its
  logged path stays under recordings/ (``layout.inside``).
- Every name from the log or the sidecar is ``shown`` in the text (quoted when it would not
  print as one line: a control character, an escape sequence); the JSON escapes it itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from hindsight import chaincheck
from hindsight.audit.common import shown
from hindsight.clock import iso
from hindsight.commitlog import LOG_NAME, RESERVED_FIELDS, LineHook
from hindsight.durable import file_sha256
from hindsight.errors import CommitLogError
from hindsight.layout import inside, sidecar_path
from hindsight.retention import Ledger, Recording
from hindsight.sampling import commitment, eligible, kept_as_sampled, picked, seed_from_hex

MARKS = ("call_marked",)
PAUSES = ("call_paused", "call_resumed")
OUTCOMES = ("call_committed", "call_wiped")
RETENTION_EVENTS = (
    "recording_resolved",
    "recording_extended",
    "recording_held",
    "recording_released",
)

# ---------------------------------------------------------------------------------------------
# the story, read from the log


@dataclass(frozen=True)
class Item:
    """One log line that names the call: its number, time, event and its own fields (without
    the framing, the call id, and with ``caller_ref`` only as present or not)."""

    log_line: int
    time: str
    event: str
    fields: Mapping[str, Any]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Item:
        fields = {
            key: value
            for key, value in entry.items()
            if key not in RESERVED_FIELDS and key != "call_id"
        }
        if entry["event"] == "call_started" or "caller_ref" in fields:
            fields["caller_ref"] = bool(fields.get("caller_ref"))
        return cls(entry["seq"], entry["time"], entry["event"], fields)

    def get(self, key: str) -> Any:
        return self.fields.get(key)

    def to_json(self) -> dict[str, Any]:
        return {"log_line": self.log_line, "time": self.time, "event": self.event, **self.fields}


@dataclass(frozen=True)
class Draw:
    """The call's sampling draw, and whether this log lets an auditor recompute it.

    ``epoch`` is what ``call_started`` names (None: a log from before epochs); ``declared_line``
    the ``sampling_epoch`` that opened it (None when the epoch open there is another);
    ``revealed_line`` its ``sampling_reveal`` (None: not revealed, yet or ever). Once revealed:
    ``seed_matches`` (the seed against the epoch's commitment), ``picked`` (the draw picks the
    call id), ``sampled`` (picked, and the sampling purpose announced) and ``agrees`` (the
    outcome is what that draw demands; None while the call is open or when lost in a crash).
    """

    epoch: int | None
    declared_line: int | None = None
    one_in: int | None = None
    purpose: str | None = None
    sealed: bool = False
    announced: bool = False  # the sampling purpose was among the call's announced
    revealed_line: int | None = None
    revealed_time: str | None = None
    seed_matches: bool | None = None
    picked: bool | None = None
    sampled: bool | None = None
    agrees: bool | None = None

    @property
    def checkable(self) -> bool:
        return self.revealed_line is not None and bool(self.seed_matches)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "declared_line": self.declared_line,
            "one_in": self.one_in,
            "purpose": self.purpose,
            "sealed": self.sealed,
            "announced": self.announced,
            "revealed_line": self.revealed_line,
            "revealed_time": self.revealed_time,
            "checkable": self.checkable,
            "seed_matches": self.seed_matches,
            "picked": self.picked,
            "sampled": self.sampled,
            "agrees": self.agrees,
        }


@dataclass
class _Reading:
    """What one pass over the log keeps: the call's lines, and its epoch's two lines."""

    call_id: str
    entries: int = 0
    items: list[Item] = field(default_factory=list)
    epoch: Mapping[str, Any] | None = None  # the sampling_epoch open where the call started
    reveal: Mapping[str, Any] | None = None
    ledger: Ledger = field(default_factory=Ledger)

    def feed(self, entry: Mapping[str, Any], open_epoch: Mapping[str, Any] | None) -> None:
        if entry.get("call_id") != self.call_id:
            return
        if entry["event"] == "call_started" and self.started is None:
            self.epoch = open_epoch
        self.items.append(Item.of(entry))
        self.ledger.apply(entry)

    def revealed(self, entry: Mapping[str, Any]) -> None:
        started = self.started
        if (
            self.reveal is None
            and started is not None
            and entry.get("epoch") == started.get("epoch")
        ):
            self.reveal = entry

    @property
    def started(self) -> Item | None:
        return next((item for item in self.items if item.event == "call_started"), None)


def _read(path: Path, call_id: str, on_line: LineHook | None) -> _Reading:
    reading, open_epoch = _Reading(call_id), None
    for entry in chaincheck.entries(path, on_line):
        reading.entries += 1
        event = entry["event"]
        if event == "sampling_epoch":
            open_epoch = entry
        elif event == "sampling_reveal":
            reading.revealed(entry)
        else:
            reading.feed(entry, open_epoch)
    return reading


def _draw(reading: _Reading, outcome: Item | None) -> Draw | None:
    started = reading.started
    if started is None:
        return None
    number = started.get("epoch")
    declared = reading.epoch
    if not isinstance(number, int) or declared is None or declared.get("epoch") != number:
        return Draw(number if isinstance(number, int) else None)
    one_in, purpose = declared.get("one_in"), declared.get("purpose")
    announced = started.get("announced")
    draw = Draw(
        number,
        declared_line=declared["seq"],
        one_in=one_in if isinstance(one_in, int) else None,
        purpose=purpose if isinstance(purpose, str) else None,
        sealed=isinstance(declared.get("sealed_seed"), str),
        announced=eligible(announced, purpose),
    )
    reveal = reading.reveal
    return draw if reveal is None else _recomputed(draw, reading.call_id, declared, reveal, outcome)


def _recomputed(
    draw: Draw,
    call_id: str,
    declared: Mapping[str, Any],
    reveal: Mapping[str, Any],
    outcome: Item | None,
) -> Draw:
    draw = replace(draw, revealed_line=reveal["seq"], revealed_time=reveal["time"])
    seed = seed_from_hex(reveal.get("seed"))
    if seed is None or commitment(seed) != declared.get("commitment"):
        return replace(draw, seed_matches=False)
    pick = picked(seed, call_id, draw.one_in or 0)
    sampled = pick and draw.announced
    return replace(
        draw, seed_matches=True, picked=pick, sampled=sampled, agrees=_agrees(sampled, outcome)
    )


def _agrees(sampled: bool, outcome: Item | None) -> bool | None:
    """Whether the outcome is what the draw demands, by ``audit verify``'s rule (see
    ``hindsight.audit.draws``): kept as sampled exactly when the draw sampled it. None while
    the call is open, and for a call lost in a crash, which the draw could not act on."""
    if outcome is None or outcome.get("why") == "lost_in_crash":
        return None
    return kept_as_sampled(outcome.fields) == sampled


# ---------------------------------------------------------------------------------------------
# the files


@dataclass(frozen=True)
class RecordingFile:
    """The committed recording on disk: ``sha256_matches`` is None when it cannot be hashed
    (absent, unreadable, or a logged path that leaves recordings/: ``problem`` says which)."""

    path: str
    present: bool
    sha256_matches: bool | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.present,
            "sha256_matches": self.sha256_matches,
            "problem": self.problem,
        }


def _recording(state_dir: Path, committed: Item) -> RecordingFile:
    path, logged = str(committed.get("path")), committed.get("sha256")
    file = inside(state_dir, path)
    if file is None:
        return RecordingFile(path, False, None, "the logged path leaves recordings/: not opened")
    if not file.is_file():
        return RecordingFile(path, False, None)
    try:
        digest = file_sha256(file)
    except OSError as exc:
        return RecordingFile(path, True, None, f"cannot be read ({exc.strerror or exc})")
    return RecordingFile(path, True, digest == logged)


@dataclass(frozen=True)
class SidecarMark:
    """A ``mark`` request as the sidecar keeps it; ``note``: ``none``, ``present``, or
    ``encrypted`` (``note_age``). The note's text is never shown."""

    purpose: object
    time: object
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "time": self.time, "note": self.note}


@dataclass(frozen=True)
class Sidecar:
    """What the sidecar adds to the log: every mark (the log has the first of each purpose),
    the pauses and device gaps within the audio, the call's start and end."""

    path: str
    present: bool
    problem: str | None = None
    start: object = None
    end: object = None
    marks: Sequence[SidecarMark] = ()
    pauses: Sequence[Mapping[str, Any]] = ()
    gaps: Sequence[Mapping[str, Any]] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "present": self.present,
            "problem": self.problem,
            "start": self.start,
            "end": self.end,
            "marks": [mark.to_json() for mark in self.marks],
            "pauses": [dict(pause) for pause in self.pauses],
            "gaps": [dict(gap) for gap in self.gaps],
        }


def _sidecar(state_dir: Path, call_id: str, committed: Item) -> Sidecar | None:
    recording = PurePosixPath(str(committed.get("path")))
    path = sidecar_path(recording, call_id).as_posix()
    file = inside(state_dir, path)
    if file is None:
        return None
    try:
        data = json.loads(file.read_bytes())
    except FileNotFoundError:
        return Sidecar(path, False)
    except (OSError, ValueError) as exc:
        return Sidecar(path, True, f"unreadable or not JSON ({exc})")
    if not isinstance(data, dict):
        return Sidecar(path, True, "not a JSON object")
    return Sidecar(
        path,
        True,
        start=data.get("start"),
        end=data.get("end"),
        marks=[_mark(mark) for mark in _objects(data.get("marks"))],
        pauses=_spans(data.get("pauses")),
        gaps=_spans(data.get("gaps")),
    )


def _objects(value: object) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _mark(mark: Mapping[str, Any]) -> SidecarMark:
    if mark.get("note_age") is not None:
        note = "encrypted"
    else:
        note = "none" if mark.get("note") in (None, "") else "present"
    return SidecarMark(mark.get("purpose"), mark.get("time"), note)


def _spans(value: object) -> list[Mapping[str, Any]]:
    return [
        {"at_seconds": span.get("at_seconds"), "seconds": span.get("seconds")}
        for span in _objects(value)
    ]


# ---------------------------------------------------------------------------------------------
# show


@dataclass(frozen=True)
class Story:
    """Everything the log and the files say of one call; see ``to_json``."""

    call_id: str
    entries: int
    items: Sequence[Item]
    draw: Draw | None
    retention: Recording | None
    recording: RecordingFile | None
    sidecar: Sidecar | None

    def of(self, *events: str) -> list[Item]:
        return [item for item in self.items if item.event in events]

    def first(self, *events: str) -> Item | None:
        return next(iter(self.of(*events)), None)

    def to_json(self) -> dict[str, Any]:
        """The story as JSON; keys stable and always present (see docs/commands.md).

        Every log item is ``log_line``, ``time``, ``event`` and the line's own fields (without
        ``call_id``; ``caller_ref`` as true or false). ``timeline`` holds them all, in log
        order; the keys after it pick them out by kind.
        """
        started, outcome = self.first("call_started"), self.first(*OUTCOMES)
        deletion = self.first("recording_deleted")
        return {
            "call_id": self.call_id,
            "entries": self.entries,
            "timeline": [item.to_json() for item in self.items],
            "started": None if started is None else started.to_json(),
            "marks": [item.to_json() for item in self.of(*MARKS)],
            "refused_marks": [item.to_json() for item in self.of("mark_refused")],
            "pauses": [item.to_json() for item in self.of(*PAUSES)],
            "outcome": None if outcome is None else outcome.to_json(),
            "retention_events": [item.to_json() for item in self.of(*RETENTION_EVENTS)],
            "accesses": [item.to_json() for item in self.of("recording_accessed")],
            "deletion": None if deletion is None else deletion.to_json(),
            "retention": None if self.retention is None else _retention_json(self.retention),
            "draw": None if self.draw is None else self.draw.to_json(),
            "recording": None if self.recording is None else self.recording.to_json(),
            "sidecar": None if self.sidecar is None else self.sidecar.to_json(),
        }


def _retention_json(recording: Recording) -> dict[str, Any]:
    hold = recording.hold
    until = recording.retain_until
    return {
        "purposes": {
            name: {
                "retain_until": None if state.retain_until is None else iso(state.retain_until),
                "resolved": state.resolved,
            }
            for name, state in recording.purposes.items()
        },
        "retain_until": None if until is None else iso(until),
        "hold": None
        if hold is None
        else {"actor": hold.actor, "reason": hold.reason, "since": iso(hold.since)},
    }


def show(state_dir: Path, call_id: str, on_line: LineHook | None = None) -> Story | None:
    """The story of ``call_id``, or None when no line of the log names it. Raises
    CommitLogError when the log is missing, its chain breaks, or one of the call's retention
    events cannot be read. ``on_line`` is told how far the reading has come (a progress bar)."""
    path = state_dir / LOG_NAME
    if not path.is_file():
        raise CommitLogError(f"{LOG_NAME} is missing in {state_dir}")
    reading = _read(path, call_id, on_line)
    if not reading.items:
        return None
    outcome = next((item for item in reading.items if item.event in OUTCOMES), None)
    committed = outcome if outcome is not None and outcome.event == "call_committed" else None
    return Story(
        call_id,
        reading.entries,
        tuple(reading.items),
        _draw(reading, outcome),
        reading.ledger.get(call_id),
        None if committed is None else _recording(state_dir, committed),
        None if committed is None else _sidecar(state_dir, call_id, committed),
    )


# ---------------------------------------------------------------------------------------------
# rendering


def _text(value: object) -> str:
    """A value from the log or the sidecar, safe to print: ``-`` for null, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value) if value else "none"
    return shown(value)


def _by(item: Item) -> str:
    return f"by {_text(item.get('actor'))}: {_text(item.get('reason'))}"


def _started(item: Item) -> list[str]:
    caller = "logged" if item.get("caller_ref") else "not logged"
    epoch = item.get("epoch")
    return [
        f"started on {_text(item.get('line'))}, agent {_text(item.get('agent'))}",
        f"announced: {_text(item.get('announced'))}",
        f"sampling epoch: {'none' if epoch is None else _text(epoch)}",
        f"caller pseudonym (caller_ref): {caller}",
    ]


def _committed(item: Item) -> list[str]:
    retention = item.get("retention")
    ends = retention.items() if isinstance(retention, dict) else []
    recovered = " (recovered after a crash)" if item.get("recovered") else ""
    return [
        f"committed{recovered}, kept as {_text(item.get('reasons'))}",
        f"purposes: {_text(item.get('purposes'))}",
        *(f"retention {_text(name)}: until {_text(until)}" for name, until in ends),
        f"path: {_text(item.get('path'))}",
        f"sha256: {_text(item.get('sha256'))}",
        f"seconds: {_text(item.get('seconds'))} (rolled away {_text(item.get('rolled_seconds'))},"
        f" device lost {_text(item.get('lost_seconds'))})",
    ]


def _wiped(item: Item) -> list[str]:
    reasons = item.get("reasons")
    kept = [] if reasons is None else [f"it was to be kept as {_text(reasons)}"]
    return [f"wiped ({_text(item.get('why'))}), {_text(item.get('seconds'))} s of audio", *kept]


def _deleted(item: Item) -> list[str]:
    by = "" if item.get("actor") is None else f", {_by(item)}"
    return [f"recording deleted ({_text(item.get('why'))}){by}", f"path: {_text(item.get('path'))}"]


def _other(item: Item) -> list[str]:
    return [_text(item.event), *(f"{_text(k)}: {_text(v)}" for k, v in item.fields.items())]


_HEADLINES = {
    "call_started": _started,
    "call_marked": lambda item: [
        f"marked for {_text(item.get('purpose'))}"
        + (" (after the call ended)" if item.get("after_end") else "")
    ],
    "mark_refused": lambda item: [
        f"mark for {_text(item.get('purpose'))} refused (a purpose the caller was not told of)"
    ],
    "call_paused": lambda item: ["paused"],
    "call_resumed": lambda item: ["resumed"],
    "call_committed": _committed,
    "call_wiped": _wiped,
    "recording_resolved": lambda item: [
        f"{_text(item.get('purpose'))} resolved, now until {_text(item.get('retain_until'))}, "
        + _by(item)
    ],
    "recording_extended": lambda item: [
        f"{_text(item.get('purpose'))} extended, now until {_text(item.get('retain_until'))}, "
        + _by(item)
    ],
    "recording_held": lambda item: [f"legal hold, {_by(item)}"],
    "recording_released": lambda item: [f"legal hold released, {_by(item)}"],
    "recording_accessed": lambda item: [f"recording opened, {_by(item)}"],
    "recording_deleted": _deleted,
}


def _timeline(items: Sequence[Item]) -> list[str]:
    width = len(str(items[-1].log_line))
    out = []
    for item in items:
        first, *more = _HEADLINES.get(item.event, _other)(item)
        head = f"line {item.log_line:>{width}}  {_text(item.time)}  "
        out.append(head + first)
        out.extend(" " * len(head) + line for line in more)
    return out


def _retention_now(story: Story) -> list[str]:
    recording, deletion = story.retention, _gone(story)
    if recording is None:
        if deletion is not None:
            return [f"none: the recording was deleted on line {deletion.log_line}"]
        return ["none: the call was never committed" + ("" if story.first(*OUTCOMES) else " (yet)")]
    out = [
        f"{_text(name)}: until {'-' if state.retain_until is None else iso(state.retain_until)}"
        + (" (resolved)" if state.resolved else "")
        for name, state in recording.purposes.items()
    ]
    hold = recording.hold
    held = "no" if hold is None else f"yes, since {iso(hold.since)} by {shown(hold.actor)}"
    return [*out, f"legal hold: {held}"]


def _gone(story: Story) -> Item | None:
    return story.first("recording_deleted")


def _recording_lines(story: Story) -> list[str]:
    file, gone = story.recording, _gone(story)
    if file is None:
        return ["none: the call was not committed"]
    if not file.present:
        why = file.problem or "not present" + (
            "" if gone is None else f", as deleted on line {gone.log_line}"
        )
        return [f"{_text(file.path)}: {why}"]
    present = "present" if gone is None else f"present, though deleted on line {gone.log_line}"
    if file.sha256_matches is None:
        return [f"{_text(file.path)}: {present}, but {file.problem}"]
    committed = story.first("call_committed")
    logged_on = "" if committed is None else f" logged on line {committed.log_line}"
    verdict = "matches" if file.sha256_matches else "does NOT match (altered or replaced)"
    return [f"{_text(file.path)}: {present}; its SHA-256 {verdict} the one{logged_on}"]


def _sidecar_lines(story: Story) -> list[str]:
    sidecar, gone = story.sidecar, _gone(story)
    if sidecar is None:
        return ["none: the call was not committed"]
    if sidecar.problem is not None:
        return [f"{_text(sidecar.path)}: {sidecar.problem}"]
    if not sidecar.present:
        why = "" if gone is None else f", as deleted on line {gone.log_line}"
        return [f"{_text(sidecar.path)}: not present{why}"]
    marks = [
        f"  {_text(mark.time)}  {_text(mark.purpose)}, note: {mark.note}" for mark in sidecar.marks
    ]
    return [
        f"{_text(sidecar.path)}: present",
        f"start {_text(sidecar.start)}, end {_text(sidecar.end)}",
        f"marks (every request; a note's text is not shown): {len(marks) or 'none'}",
        *marks,
        f"pauses: {_spans_text(sidecar.pauses)}",
        f"device gaps: {_spans_text(sidecar.gaps)}",
    ]


def _spans_text(spans: Sequence[Mapping[str, Any]]) -> str:
    if not spans:
        return "none"
    return "; ".join(
        f"at {_text(span['at_seconds'])} s for {_text(span['seconds'])} s" for span in spans
    )


def _draw_lines(draw: Draw | None) -> list[str]:
    if draw is None:
        return ["no call_started line: no draw to check"]
    if draw.epoch is None:
        return ["call_started names no epoch (a log from before sampling epochs): nothing to check"]
    if draw.declared_line is None:
        return [f"epoch {draw.epoch}, which is not the epoch open there: not checkable"]
    told = "announced" if draw.announced else "not announced, so never sampled"
    sealed = "; its seed is sealed to the auditors" if draw.sealed else ""
    rate = "sampling off (one_in 0)" if draw.one_in == 0 else f"1 in {_text(draw.one_in)}"
    declared = (
        f"epoch {draw.epoch} (declared on line {draw.declared_line}): {rate} "
        f"for {_text(draw.purpose)}, {told}{sealed}"
    )
    return [declared, _reveal_text(draw)]


def _reveal_text(draw: Draw) -> str:
    if draw.revealed_line is None:
        opener = " (audit verify --identity opens the sealed seed)" if draw.sealed else ""
        return (
            "seed not revealed in this log: the epoch is still open, or a crash kept its seed;"
            f" the draw cannot be checked yet{opener}"
        )
    where = f"seed revealed on line {draw.revealed_line} ({_text(draw.revealed_time)})"
    if not draw.seed_matches:
        return f"{where}, but it does NOT match the epoch's commitment"
    verdict = "picked" if draw.picked else "did not pick"
    sampled = "sampled" if draw.sampled else "not sampled"
    agrees = {None: "", True: "; the outcome agrees", False: "; the outcome does NOT agree"}
    return f"{where}: the draw {verdict} this call: {sampled}{agrees[draw.agrees]}"


def _state(story: Story) -> str:
    outcome = story.first(*OUTCOMES)
    if outcome is None:
        return "open (no outcome yet)"
    if outcome.event == "call_wiped":
        return f"wiped ({_text(outcome.get('why'))})"
    return "committed" + (", recording deleted" if _gone(story) else "")


def _section(title: str, lines: list[str]) -> str:
    return "\n".join([title, "-" * len(title), *lines])


def render(story: Story) -> str:
    """The story as text: a heading, the timeline, then what the files and the draw say."""
    head = (
        f"call {shown(story.call_id)}: {_state(story)}\n"
        f"{LOG_NAME}: {story.entries} lines read, hash chain intact; "
        f"{len(story.items)} name this call"
    )
    return "\n\n".join(
        [
            head,
            _section("Timeline", _timeline(story.items)),
            _section("Retention now", _retention_now(story)),
            _section("Recording", _recording_lines(story)),
            _section("Sidecar", _sidecar_lines(story)),
            _section("Sampling draw", _draw_lines(story.draw)),
        ]
    )
