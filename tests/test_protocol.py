from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from hindsight.checkpoint import sign
from hindsight.errors import ClientError, ProtocolError
from hindsight.protocol import (
    ERROR_CODES,
    EXIT_CODES,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    MAX_ACTOR_CHARS,
    MAX_ANNOUNCED,
    MAX_CALLER_CHARS,
    MAX_EXTEND_DAYS,
    MAX_NOTE_CHARS,
    MAX_REASON_CHARS,
    MAX_REQUEST_BYTES,
    OP_NAMES,
    Access,
    Asks,
    Checkpoint,
    End,
    Erase,
    Extend,
    Hold,
    Mark,
    Pause,
    Ping,
    Purge,
    Recordings,
    Refusal,
    Release,
    ReplyError,
    Request,
    Resolve,
    Resume,
    Start,
    Status,
    encode_request,
    error_reply,
    ok_reply,
    op_name,
    parse_reply,
    parse_request,
    reply_type,
    request_fields,
)
from hindsight.replies import (
    AccessReply,
    CallReply,
    CheckpointReply,
    DeviceState,
    Encryption,
    LineStatus,
    MetricsSnapshot,
    Pong,
    PurgeReply,
    PurposeRetention,
    RecordingRow,
    RecordingsReply,
    Reply,
    RetentionReply,
    StatusReply,
    WorkerState,
)


def req(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def refused(frame: bytes) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_request(frame)
    return caught.value.code


def test_every_op_parses_into_its_request() -> None:
    assert parse_request(req(op="ping")) == Ping()
    assert parse_request(req(op="status")) == Status()
    assert parse_request(req(op="end", line="desk-01")) == End("desk-01")
    assert parse_request(
        req(op="start", line="d1", call_id="c.1", agent="ann", caller="+31 20 555")
    ) == Start("d1", "c.1", "ann", "+31 20 555")
    assert parse_request(req(op="mark", line="d1", purpose="escalation", note="shouting")) == Mark(
        "d1", "escalation", "shouting"
    )


def test_optional_fields_may_be_null_or_absent() -> None:
    assert parse_request(req(op="start", line="d1", call_id=None)) == Start("d1")
    assert parse_request(req(op="mark", line="d1")) == Mark("d1")


def test_unknown_fields_are_ignored_for_newer_clients() -> None:
    assert parse_request(req(op="ping", trace="x")) == Ping()


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00binary",
        b"[1, 2]",
        b'"ping"',
        b"null",
        req(),
        req(op=5),
        req(op="start"),
        req(op="start", line=7),
        req(op="start", line=""),
        req(op="start", line="a" * 65),
        req(op="start", line="desk 01"),
        req(op="start", line="d1", call_id="../../etc/passwd"),
        req(op="start", line="d1", agent=["x"]),
        req(op="start", line="d1", caller=12345),
        req(op="mark", line="d1", note="x" * 5000),
        req(op="mark", line="d1", note="line\nbreak"),
        req(op="end", line=None),
        b" " * (MAX_REQUEST_BYTES + 1),
        b"[" * 50_000 + b"]" * 50_000,
    ],
)
def test_malformed_requests_are_bad_requests(frame: bytes) -> None:
    assert refused(frame) == "bad_request"


@pytest.mark.parametrize("bad", [".", "..", ".hidden", ".x.flac"])
@pytest.mark.parametrize(
    "fields",
    [
        {"op": "start", "line": "d1", "call_id": "{}"},
        {"op": "start", "line": "{}"},
        {"op": "start", "line": "d1", "agent": "{}"},
        {"op": "mark", "line": "d1", "purpose": "{}"},
        {"op": "end", "line": "{}"},
    ],
    ids=lambda fields: "-".join(k for k, v in fields.items() if v == "{}"),
)
def test_call_ids_that_start_with_a_dot_are_refused(fields: dict[str, str], bad: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(req(**{key: value.format(bad) for key, value in fields.items()}))

    assert caught.value.code == "bad_request"
    assert caught.value.message.endswith("must match [A-Za-z0-9._-]{1,64} and not start with a dot")


def test_an_unknown_op_is_named_as_such() -> None:
    assert refused(req(op="reboot")) == "unknown_op"


def test_replies_follow_the_contract() -> None:
    assert json.loads(ok_reply(CallReply("c1"))) == {"ok": True, "call_id": "c1"}
    assert json.loads(error_reply("no_call", "idle")) == {
        "ok": False,
        "error": {"code": "no_call", "message": "idle"},
    }


# ---------------------------------------------------------------------------------------------
# purposes and retention

SIGNED = {"actor": "ann", "reason": "ticket 4711"}
# One valid request per new op, and what it parses into.
VALID: dict[str, tuple[dict[str, object], Request]] = {
    "pause": ({"line": "d1"}, Pause("d1")),
    "resume": ({"line": "d1"}, Resume("d1")),
    "recordings": (
        {"purpose": "training", "caller": "+31 20 555"},
        Recordings("training", "+31 20 555"),
    ),
    "resolve": (
        {"call_id": "c1", "purpose": "escalation", **SIGNED},
        Resolve("c1", "escalation", "ann", "ticket 4711"),
    ),
    "extend": (
        {"call_id": "c1", "purpose": "training", "days": 30, **SIGNED},
        Extend("c1", "training", 30.0, "ann", "ticket 4711"),
    ),
    "hold": ({"call_id": "c1", **SIGNED}, Hold("c1", "ann", "ticket 4711")),
    "release": ({"call_id": "c1", **SIGNED}, Release("c1", "ann", "ticket 4711")),
    "erase": ({"call_id": "c1", **SIGNED}, Erase("c1", "ann", "ticket 4711")),
    "purge": ({"dry_run": True}, Purge(dry_run=True)),
    "access": ({"call_id": "c1", **SIGNED}, Access("c1", "ann", "ticket 4711")),
}
REQUIRED = [
    (op, key)
    for op, (fields, _) in VALID.items()
    if op not in {"recordings", "purge"}
    for key in fields
]
NOT_AN_ID: list[object] = [None, 7, "", "a b", ".hidden", "a" * 65, ["c1"]]
NOT_TEXT: list[object] = [7, "", "   ", "line\nbreak", "tab\there", ["ann"], {"a": 1}, True]
NOT_DAYS: list[object] = [
    0,
    -1,
    0.0,
    MAX_EXTEND_DAYS + 0.001,
    10**400,
    True,
    False,
    "30",
    [30],
    float("nan"),
    float("inf"),
    float("-inf"),
]

SIGNED_OPS = ("resolve", "extend", "hold", "release", "erase", "access")
NOT_A_CALLER: list[object] = [7, "x" * (MAX_CALLER_CHARS + 1), "a\nb", ["x"]]
NOT_A_FLAG: list[object] = [1, 0, "true", "yes", [], {}]
MISTYPED: list[tuple[str, str, object]] = (
    [(op, "line", bad) for op in ("pause", "resume") for bad in NOT_AN_ID]
    + [(op, "call_id", bad) for op in SIGNED_OPS for bad in NOT_AN_ID]
    + [(op, "purpose", bad) for op in ("resolve", "extend", "recordings") for bad in NOT_AN_ID[1:]]
    + [(op, key, bad) for op in SIGNED_OPS for key in ("actor", "reason") for bad in NOT_TEXT]
    + [("extend", "days", bad) for bad in NOT_DAYS]
    + [("recordings", "caller", bad) for bad in NOT_A_CALLER]
    + [("purge", "dry_run", bad) for bad in NOT_A_FLAG]
)


def fields_of(op: str, **changes: object) -> dict[str, object]:
    return {"op": op, **VALID[op][0], **changes}


@pytest.mark.parametrize("op", VALID)
def test_every_retention_op_parses_into_its_request(op: str) -> None:
    assert parse_request(req(**fields_of(op))) == VALID[op][1]


def test_optional_fields_of_the_retention_ops_default() -> None:
    assert parse_request(req(op="recordings")) == Recordings(None, None)
    caller = "1" * MAX_CALLER_CHARS
    assert parse_request(req(op="recordings", caller=caller)) == Recordings(caller=caller)
    assert parse_request(req(op="recordings", purpose=None, caller=None)) == Recordings()
    assert parse_request(req(op="purge")) == Purge(dry_run=False)
    assert parse_request(req(op="purge", dry_run=None)) == Purge(dry_run=False)
    assert parse_request(req(op="purge", dry_run=False)) == Purge(dry_run=False)


def test_unknown_fields_of_the_retention_ops_are_ignored() -> None:
    assert parse_request(req(**fields_of("hold", trace="x", days="y"))) == VALID["hold"][1]


@pytest.mark.parametrize(("op", "key"), REQUIRED, ids=lambda v: str(v))
def test_a_missing_required_field_is_named(op: str, key: str) -> None:
    for fields in (
        {k: v for k, v in fields_of(op).items() if k != key},
        fields_of(op, **{key: None}),
    ):
        with pytest.raises(ProtocolError) as caught:
            parse_request(req(**fields))
        assert caught.value.code == "bad_request"
        assert caught.value.message == f"field '{key}' is required"


@pytest.mark.parametrize(("op", "key", "bad"), MISTYPED)
def test_a_mistyped_field_is_a_bad_request(op: str, key: str, bad: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(req(**fields_of(op, **{key: bad})))
    assert caught.value.code == "bad_request"
    assert f"'{key}'" in caught.value.message


@pytest.mark.parametrize("key", ["actor", "reason"])
@pytest.mark.parametrize("op", SIGNED_OPS)
def test_actor_and_reason_hold_up_to_200_printable_characters(op: str, key: str) -> None:
    limit = {"actor": MAX_ACTOR_CHARS, "reason": MAX_REASON_CHARS}[key]
    assert limit == 200
    longest = "é" * (limit - 1) + "x"  # characters, not bytes
    assert getattr(parse_request(req(**fields_of(op, **{key: longest}))), key) == longest
    assert getattr(parse_request(req(**fields_of(op, **{key: " a b "}))), key) == " a b "
    assert refused(req(**fields_of(op, **{key: longest + "x"}))) == "bad_request"


@pytest.mark.parametrize(
    ("days", "parsed"), [(1, 1.0), (0.5, 0.5), (1e-3, 1e-3), (MAX_EXTEND_DAYS, 36500.0)]
)
def test_extend_takes_days_as_a_number(days: float, parsed: float) -> None:
    request = parse_request(req(**fields_of("extend", days=days)))
    assert isinstance(request, Extend) and request.days == parsed
    assert isinstance(request.days, float)


def test_announced_keeps_not_given_apart_from_none_announced() -> None:
    assert parse_request(req(op="start", line="d1")) == Start("d1", announced=None)
    assert parse_request(req(op="start", line="d1", announced=None)) == Start("d1")
    assert parse_request(req(op="start", line="d1", announced=[])) == Start("d1", announced=())
    assert parse_request(req(op="start", line="d1", announced=["training", "escalation"])) == Start(
        "d1", announced=("training", "escalation")
    )


def test_announced_holds_at_most_32_distinct_ids() -> None:
    ids = [f"p{i}" for i in range(MAX_ANNOUNCED)]
    assert MAX_ANNOUNCED == 32
    request = parse_request(req(op="start", line="d1", announced=ids))
    assert isinstance(request, Start) and request.announced == tuple(ids)
    assert refused(req(op="start", line="d1", announced=[*ids, "one-more"])) == "bad_request"


@pytest.mark.parametrize(
    "announced",
    [
        "training",
        {"training": True},
        1,
        True,
        ["training", "training"],
        ["training", None],
        ["training", 3],
        ["a b"],
        [".hidden"],
        [""],
        [["training"]],
    ],
)
def test_a_bad_announced_list_is_a_bad_request(announced: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(req(op="start", line="d1", announced=announced))
    assert caught.value.code == "bad_request"
    assert "'announced" in caught.value.message


def test_a_bad_announced_id_is_named_by_its_place() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(req(op="start", line="d1", announced=["training", "a b"]))
    assert caught.value.message.startswith("field 'announced[1]' must match")


def test_unknown_call_is_an_error_code() -> None:
    assert "unknown_call" in ERROR_CODES
    assert json.loads(error_reply("unknown_call", "no recording c1")) == {
        "ok": False,
        "error": {"code": "unknown_call", "message": "no recording c1"},
    }


# ---------------------------------------------------------------------------------------------
# both sides: encode_request and parse_request, parse_reply, the exit codes

ALL_TYPES: tuple[type[Any], ...] = typing.get_args(Request)
IDS = ["d1", "desk-01", "_x", "A.b-c_9", "20261129T055421Z-65d6bc9e", "a" * 64]
TEXTS = ["ann", " a b ", "é☎ unicode", 'quote " and \\ backslash']
# Representative values of each request field, by its name: limits, unicode, empty lists.
VALUES: dict[str, list[Any]] = {
    "line": IDS,
    "call_id": IDS,
    "agent": IDS,
    "purpose": IDS,
    "caller": ["+31 20 555", "", "1" * MAX_CALLER_CHARS, "é☎"],
    "announced": [
        (),
        ("training",),
        ("training", "escalation"),
        tuple(IDS),
        tuple(f"p{i}" for i in range(MAX_ANNOUNCED)),
    ],
    "note": ["", "customer asked for a callback", "x" * MAX_NOTE_CHARS, 'é☎ "quoted"'],
    "actor": [*TEXTS, "é" * MAX_ACTOR_CHARS],
    "reason": [*TEXTS, "r" * MAX_REASON_CHARS],
    "days": [1.0, 0.5, 1e-3, 30.0, float(MAX_EXTEND_DAYS)],
    "dry_run": [True, False],
}


def examples(kind: type[Any]) -> list[Request]:
    """Requests of ``kind``: the smallest, then each field through each of its values (an
    optional one also None, the others at their first value), then every field set."""
    fields = dataclasses.fields(kind)
    first = {f.name: VALUES[f.name][0] for f in fields}
    required = {f.name: first[f.name] for f in fields if f.default is dataclasses.MISSING}
    found: list[Request] = [kind(**required), kind(**first)]
    for f in fields:
        others = required if f.default is not dataclasses.MISSING else first
        for value in [*VALUES[f.name], *([f.default] if f.default is None else [])]:
            found.append(kind(**{**others, f.name: value}))
    return found


EXAMPLES = [(kind.__name__, r) for kind in ALL_TYPES for r in examples(kind)]


def test_every_request_field_has_representative_values() -> None:
    names = {f.name for kind in ALL_TYPES for f in dataclasses.fields(kind)}
    assert names == set(VALUES)


@pytest.mark.parametrize(
    ("kind", "asked"), EXAMPLES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(EXAMPLES)]
)
def test_every_request_round_trips(kind: str, asked: Request) -> None:
    frame = encode_request(asked)
    assert parse_request(frame) == asked
    sent = json.loads(frame)
    # Never a field the parser does not read, nor a null: only the op and the fields given.
    assert sent["op"] == op_name(asked)
    given = {f.name for f in dataclasses.fields(asked) if getattr(asked, f.name) is not None}
    assert set(sent) == {"op"} | given
    assert None not in sent.values()


def test_round_trips_keep_the_tell_tale_cases_apart() -> None:
    for request in (
        Start("d1"),
        Start("d1", announced=()),
        Start("d1", announced=("training",)),
        Mark("d1"),
        Mark("d1", call_id="c1"),
        Mark("d1", "escalation", "n", "c1"),
        Purge(),
        Purge(dry_run=True),
        Extend("c1", "training", 30, "ann", "r"),
    ):
        assert parse_request(encode_request(request)) == request
    assert json.loads(encode_request(Start("d1")))["op"] == "start"
    assert "announced" not in json.loads(encode_request(Start("d1")))
    assert json.loads(encode_request(Start("d1", announced=())))["announced"] == []
    assert json.loads(encode_request(Purge()))["dry_run"] is False


def test_encode_request_is_what_the_client_always_sent() -> None:
    """The wire stays as it was: json.dumps of the fields in order, nulls left out."""
    assert encode_request(Start("desk-01", agent="ann")) == (
        b'{"op": "start", "line": "desk-01", "agent": "ann"}'
    )
    assert request_fields(Mark("desk-01", "training")) == {
        "op": "mark",
        "line": "desk-01",
        "purpose": "training",
    }
    assert encode_request(Ping()) == b'{"op": "ping"}'


def test_one_table_names_every_request_type() -> None:
    assert set(OP_NAMES) == set(ALL_TYPES)
    # As rights logs them (access_denied): the class's name in lower case.
    assert all(op == kind.__name__.lower() for kind, op in OP_NAMES.items())
    assert len(set(OP_NAMES.values())) == len(OP_NAMES)


def reply(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# One representative ok-reply of each op, as the daemon builds it.
REPLIES: dict[type[Any], Reply] = {
    Ping: Pong("0.1.0"),
    Start: CallReply("20261129T055421Z-65d6bc9e"),
    End: CallReply("c1"),
    Mark: CallReply("c1"),
    Pause: CallReply("c1"),
    Resume: CallReply("c1"),
    Status: StatusReply(
        lines=(
            LineStatus("desk-01", "c1", 2.26, True, "floor", 1, 0.5),
            LineStatus("desk-02", None, 0.0, False, "floor"),
        ),
        devices=(DeviceState("floor", "running"),),
        worker=WorkerState(None, 2),
        encryption=Encryption(False, ("training",)),
        metrics=MetricsSnapshot(taken="2026-11-29T05:54:21.000Z", devices={"floor": "lost"}),
    ),
    Recordings: RecordingsReply(
        (
            RecordingRow(
                "c1",
                "desk-01",
                None,
                "recordings/c1.flac.age",
                {
                    "escalation": PurposeRetention(None, False),
                    "training": PurposeRetention("2027-03-01T05:54:24.386Z", True),
                },
                None,
                True,
            ),
        )
    ),
    Resolve: RetentionReply("c1", "2027-03-01T05:54:24.386Z"),
    Extend: RetentionReply("c1", "2027-03-01T05:54:24.386Z"),
    Hold: CallReply("c1"),
    Release: CallReply("c1"),
    Erase: CallReply("c1"),
    Purge: PurgeReply(("c1", "c2")),
    Access: AccessReply("recordings/c1.flac.age", "ab" * 32),
    Checkpoint: CheckpointReply(sign(b"k" * 32, 12, "cd" * 32, "2026-11-29T05:54:21.000Z")),
}


def test_every_op_has_one_reply_type_and_the_type_checker_knows_it() -> None:
    assert set(REPLIES) == set(ALL_TYPES)
    for kind in ALL_TYPES:
        # The run-time table and the static one (``class End(Asks[CallReply])``) agree.
        (base,) = [b for b in kind.__orig_bases__ if typing.get_origin(b) is Asks]
        (static,) = typing.get_args(base)
        request: Any = examples(kind)[0]
        assert reply_type(request) is static is type(REPLIES[kind]), kind


@pytest.mark.parametrize("kind", ALL_TYPES, ids=lambda kind: kind.__name__)
def test_every_ok_reply_round_trips_between_daemon_and_client(kind: type[Any]) -> None:
    reply, request = REPLIES[kind], examples(kind)[0]
    assert parse_reply(ok_reply(reply), reply_type(request)) == reply


def test_ok_replies_on_the_wire_are_unchanged() -> None:
    assert ok_reply(CallReply("c1")) == b'{"ok":true,"call_id":"c1"}'
    assert ok_reply(Pong("0.1.0")) == b'{"ok":true,"version":"0.1.0"}'
    assert ok_reply(PurgeReply(())) == b'{"ok":true,"deleted":[]}'
    assert ok_reply(RetentionReply("c1", "T")) == b'{"ok":true,"call_id":"c1","retain_until":"T"}'
    status = json.loads(ok_reply(REPLIES[Status]))
    assert list(status) == ["ok", "lines", "devices", "worker", "encryption", "metrics"]
    assert status["lines"][1] == {
        "line": "desk-02",
        "call_id": None,
        "seconds": 0.0,
        "marked": False,
        "device": "floor",
        "status_flags": 0,
        "lost_seconds": 0.0,
    }
    assert status["worker"] == {"pid": None, "restarts": 2}
    assert status["encryption"] == {"encrypted": False, "unencrypted_purposes": ["training"]}
    # An agent's status: no floor-wide fields at all, not even as null.
    agent = json.loads(ok_reply(StatusReply(lines=(), devices=())))
    assert agent == {"ok": True, "lines": [], "devices": []}


def test_a_newer_daemon_s_extra_fields_are_ignored_and_an_older_one_s_missing_ones_default() -> (
    None
):
    newer = b'{"ok":true,"call_id":"c1","queue":3}'
    assert parse_reply(newer, CallReply) == CallReply("c1")
    older = b'{"ok":true,"lines":[{"line":"a","call_id":null,"seconds":0,"marked":false}]}'
    assert parse_reply(older, StatusReply) == StatusReply((LineStatus("a", None, 0.0, False),))


@pytest.mark.parametrize(
    ("frame", "kind", "why"),
    [
        (b'{"ok":true}', CallReply, "missing required field `call_id`"),
        (b'{"ok":true,"call_id":null}', CallReply, "got `null` - at `$.call_id`"),
        (b'{"ok":true,"call_id":7}', CallReply, "got `int` - at `$.call_id`"),
        (b'{"ok":true,"deleted":"c1"}', PurgeReply, "at `$.deleted`"),
        (b'{"ok":true,"path":"p"}', AccessReply, "missing required field `sha256`"),
        (
            b'{"ok":true,"lines":[{"line":"a","call_id":null,"seconds":"x","marked":false}]}',
            StatusReply,
            "at `$.lines[0].seconds`",
        ),
        (
            b'{"ok":true,"lines":[],"worker":{"pid":true,"restarts":0}}',
            StatusReply,
            "at `$.worker.pid`",
        ),
        (
            b'{"ok":true,"recordings":[{"call_id":"c"}]}',
            RecordingsReply,
            "at `$.recordings[0]`",
        ),
    ],
)
def test_a_malformed_ok_reply_names_its_field(frame: bytes, kind: type[Any], why: str) -> None:
    with pytest.raises(ReplyError) as caught:
        parse_reply(frame, kind)
    assert why in str(caught.value)
    assert f"does not hold a {kind.__name__}" in str(caught.value)
    assert caught.value.exit_code == EXIT_REFUSED


def test_the_documented_example_replies_are_what_the_client_reads() -> None:
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    examples = [json.loads(m) for m in re.findall(r"```json\n(\{.*\})\n```", text)]
    kinds = {
        "lines": StatusReply,
        "recordings": RecordingsReply,
        "path": AccessReply,
        "checkpoint": CheckpointReply,
    }
    read: list[Reply] = []
    for example_reply in examples:
        (kind,) = [kinds[key] for key in example_reply if key in kinds]
        parsed = parse_reply(json.dumps(example_reply).encode(), kind)
        assert not isinstance(parsed, Refusal)
        # Nothing in the example that the client's type does not know (a stale doc).
        assert json.loads(ok_reply(parsed)) == example_reply
        read.append(parsed)
    assert {type(r) for r in read} == set(kinds.values())


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_a_refusal_is_its_code_and_message(code: str) -> None:
    refusal = parse_reply(error_reply(code, "no recording c1"), CallReply)
    assert refusal == Refusal(code, "no recording c1")
    assert isinstance(refusal, Refusal) and refusal.exit_code == EXIT_REFUSED


def test_a_refusal_with_a_code_this_client_does_not_know_is_still_a_refusal() -> None:
    """A newer daemon may add error codes: the client passes them on, exit 1."""
    refusal = parse_reply(reply(ok=False, error={"code": "gone", "message": "m"}), CallReply)
    assert refusal == Refusal("gone", "m")
    assert isinstance(refusal, Refusal) and refusal.exit_code == EXIT_REFUSED


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"", "not UTF-8 JSON"),
        (b"not json", "not UTF-8 JSON"),
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "not UTF-8 JSON"),
        (b"[]", "not a JSON object"),
        (b'"ok"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (reply(call_id="c1"), "'ok' is not true or false"),
        (reply(ok=1), "'ok' is not true or false"),
        (reply(ok="true"), "'ok' is not true or false"),
        (reply(ok=False), "no 'error' object"),
        (reply(ok=False, error="no_call"), "no 'error' object"),
        (reply(ok=False, error={"message": "m"}), "code None is not text"),
        (reply(ok=False, error={"code": "", "message": "m"}), "code '' is not text"),
        (reply(ok=False, error={"code": 7, "message": "m"}), "code 7 is not text"),
        (reply(ok=False, error={"code": "no_call"}), "'message' is not text"),
        (reply(ok=False, error={"code": "no_call", "message": 7}), "'message' is not text"),
    ],
)
def test_a_malformed_reply_is_a_clear_client_error(frame: bytes, why: str) -> None:
    with pytest.raises(ReplyError) as caught:
        parse_reply(frame, CallReply)
    assert why in str(caught.value)
    assert isinstance(caught.value, ClientError) and caught.value.exit_code == EXIT_REFUSED


def test_the_exit_code_table_covers_every_error_code() -> None:
    assert set(EXIT_CODES) == ERROR_CODES
    # The contract: 0 ok, 1 the daemon refused, 2 usage error, 3 daemon unreachable.
    assert (EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE) == (0, 1, 2, 3)
    assert set(EXIT_CODES.values()) == {EXIT_REFUSED}


def test_the_documented_error_codes_are_the_table_s() -> None:
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text(encoding="utf-8")
    errors = text[text.index("\n## Errors\n") :]
    errors = errors[: errors.index("\n## ", 1)]
    assert set(re.findall(r"^\| `([a-z_]+)` \|", errors, re.MULTILINE)) == ERROR_CODES
