from __future__ import annotations

import json

import pytest

from hindsight.errors import ProtocolError
from hindsight.protocol import (
    MAX_REQUEST_BYTES,
    End,
    Mark,
    Ping,
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
