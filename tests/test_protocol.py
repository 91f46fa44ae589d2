from __future__ import annotations

import json

import pytest

from hindsight.errors import ProtocolError
from hindsight.protocol import (
    ERROR_CODES,
    MAX_ACTOR_CHARS,
    MAX_ANNOUNCED,
    MAX_CALLER_CHARS,
    MAX_EXTEND_DAYS,
    MAX_REASON_CHARS,
    MAX_REQUEST_BYTES,
    Access,
    End,
    Erase,
    Extend,
    Hold,
    Mark,
    Pause,
    Ping,
    Purge,
    Recordings,
    Release,
    Request,
    Resolve,
    Resume,
    Start,
    Status,
    error_reply,
    ok_reply,
    parse_request,
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
    assert json.loads(ok_reply(call_id="c1")) == {"ok": True, "call_id": "c1"}
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
