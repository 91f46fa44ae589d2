"""``logline.parse_line`` agrees with the reference path on every input: the same accept or
reject (the same exception), the same object (types, key order and all) and the same hash.

"The same" is checked strictly by ``same``: ``1 == 1.0 == True`` and ``0.0 == -0.0`` in Python,
so ``==`` alone would let a wrong type or sign through. The spies check that the fast path
really runs where it should (else the equivalence would hold trivially, every line going
to the reference) and falls back where it must.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hindsight import logline
from hindsight.commitlog import CommitLog, canonical
from hindsight.logline import MAX_BRACKETS, parse_line, reference_line, safe_hash

Outcome = tuple[str, Any, Any]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_PLAIN = json.JSONDecoder(parse_constant=_no_constant)


def reference(data: bytes) -> tuple[dict[str, Any], str | None]:
    """The contract's rule written out with the standard library alone, independently of
    ``hindsight.logline``: Python's json, keys sorted, compact, UTF-8, SHA-256."""
    obj = _PLAIN.decode(data.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    body = {key: value for key, value in obj.items() if key != "hash"}
    try:
        text = json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except ValueError:  # a lone surrogate, an infinity: no hash
        return obj, None
    return obj, hashlib.sha256(text).hexdigest()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down, floats to the bit, dicts in key order
    (without recursion: some lines nest deeper than the stack)."""
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, float):
            if struct.pack("<d", a) != struct.pack("<d", b):
                return False
        elif isinstance(a, dict):
            if list(a) != list(b):
                return False
            pending.extend((a[key], b[key]) for key in a)
        elif isinstance(a, list | tuple):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif a != b:
            return False
    return True


def outcome(parse: Callable[[bytes], tuple[dict[str, Any], str | None]], data: bytes) -> Outcome:
    try:
        obj, digest = parse(data)
    except (ValueError, RecursionError) as exc:
        return "raised", type(exc), str(exc)
    return "parsed", obj, digest


def assert_equivalent(data: bytes) -> Outcome:
    fast, ref = outcome(parse_line, data), outcome(reference, data)
    assert fast[0] == ref[0], (data[:200], fast, ref)
    if fast[0] == "raised":
        assert fast[1:] == ref[1:], (data[:200], fast, ref)
    else:
        assert same(fast[1], ref[1]), (data[:200], fast, ref)
        assert fast[2] == ref[2], (data[:200], fast, ref)
    return fast


class Spy:
    """Counts the lines the fast path hands to the reference, and the objects it parsed but
    has the reference hash."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lines: list[bytes] = []
        self.hashes = 0
        real_line, real_hash = logline.reference_line, safe_hash
        inside = threading.local()

        def spy_line(data: bytes) -> tuple[dict[str, Any], str | None]:
            self.lines.append(data)
            inside.line = True
            try:
                return real_line(data)
            finally:
                inside.line = False

        def spy_hash(entry: Any) -> str | None:
            self.hashes += not getattr(inside, "line", False)
            return real_hash(entry)

        monkeypatch.setattr(logline, "reference_line", spy_line)
        monkeypatch.setattr(logline, "safe_hash", spy_hash)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(monkeypatch)


# ---------------------------------------------------------------------------------------------
# Real lines, written by CommitLog


FLOATS = [
    0.0, -0.0, 52.0, 0.5, -1.25, 1e-4, 9.999999999999999e-05, 1e-05, 1.5e-7, 5e-324, -5e-324,
    2.2250738585072014e-308, 0.1, 1 / 3, 123456789.123, 9999999999999998.0, 1e16, 1e+22,
    -3.7609587960547416e16, 1.7976931348623157e308, -1.7976931348623157e308, 1e100, 12345.6789,
]  # fmt: skip
INTS = [0, 1, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**100, -(10**300)]
TEXTS = [
    "", "é", "naïve ☎ 电话 😀 \U0010ffff", "\x00\x01\x1f\x7f\x80\x9f", "tab\tnew\nline\rcr",
    'quote " back \\ slash /', "\u2028\u2029\ufeff\ufffe\uffff", "\ue000\U00010000",
    "\b\f", "hash", '{"hash":"x"}', "0.00001", "1e+16",
]  # fmt: skip


def varied_fields(rnd: random.Random, n: int) -> dict[str, Any]:
    pick = rnd.choice
    return {
        "n": n,
        "text": pick(TEXTS) + pick(TEXTS),
        "real": pick(FLOATS),
        "whole": pick(INTS),
        "flags": [True, False, None, pick(INTS), pick(FLOATS)],
        "nested": {
            "z": {"hash": pick(TEXTS), "list": [[], {}, [pick(FLOATS)], {"é": pick(INTS)}]},
            "a": pick([None, True, False, pick(TEXTS)]),
            pick(TEXTS): pick(FLOATS),
        },
        "x" + pick(TEXTS): pick([1, 1.0, "1", [1], {"1": 1}]),
    }


def write_log(path: Path, rnd: random.Random, lines: int) -> list[bytes]:
    with CommitLog.open(path) as log:
        for n in range(lines):
            log.append(f"event-{n % 7}-é", **varied_fields(rnd, n))
            log.append("segment_wiped", call_id=f"c{n}", line="desk-01", seconds=52.0, why="x")
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def quick_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.mark.usefixtures("quick_fsync")
def test_real_log_lines_parse_and_hash_as_the_reference(tmp_path: Path, spy: Spy) -> None:
    lines = write_log(tmp_path / "commit.log", random.Random(7), 600)
    assert len(lines) == 1200
    for data in lines:
        _, obj, digest = assert_equivalent(data)
        assert digest == obj["hash"]  # the line's own hash: the chain would check
        assert_equivalent(data.rstrip(b"\n"))  # a torn tail's bytes too
    # Lines with a float that repr() writes in exponent form go to the reference; most don't.
    exponent_form = [data for data in lines if b"e-" in data or b"e+" in data]
    assert 0 < len(spy.lines) <= 2 * len(exponent_form), len(spy.lines)
    assert spy.hashes == 0


@pytest.mark.usefixtures("quick_fsync")
def test_the_daemons_lines_take_the_fast_path(tmp_path: Path, spy: Spy) -> None:
    path = tmp_path / "commit.log"
    with CommitLog.open(path) as log:
        log.append("daemon_started", version="1", config_sha256=None)
        log.append("sampling_epoch", epoch=1, one_in=10, purpose="training", commitment="0" * 64)
        log.append("call_started", call_id="c1", line="d", agent="a", announced=["training"])
        log.append(
            "call_committed", call_id="c1", line="d", agent="a", reasons=["sampled"],
            purposes=["training"], retention={"training": "2026-12-31T00:00:00.000Z"},
            seconds=52.0, rolled_seconds=0.0, lost_seconds=-0.0, status_flags=0, caller_ref=None,
        )  # fmt: skip
        log.append("call_started", call_id="c2", line="d", agent=None, announced=[])
        log.append("call_wiped", call_id="c2", line="d", seconds=0.0001, why="not_kept")
    for data in path.read_bytes().splitlines(keepends=True):
        obj, digest = parse_line(data)
        assert digest == obj["hash"] == reference(data)[1]
        assert list(obj)[-1] == "hash"
    assert spy.lines == [] and spy.hashes == 0


def test_the_hash_is_the_canonical_sha256_without_hash() -> None:
    obj = {"seq": 1, "event": "x", "b": "é", "a": [1, 2.5], "hash": "h", "prev": "p"}
    data = json.dumps(obj, ensure_ascii=False).encode()
    parsed, digest = parse_line(data)
    body = '{"a":[1,2.5],"b":"é","event":"x","prev":"p","seq":1}'.encode()
    assert digest == hashlib.sha256(body).hexdigest()
    assert list(parsed) == ["seq", "event", "b", "a", "hash", "prev"]  # "hash" not moved


# ---------------------------------------------------------------------------------------------
# Hostile lines


HOSTILE = [
    b"{}", b"{}\n", b' \t\r\n{"a":1} \t\r\n', b'{"a":1}\n\n', b"",  b"\n", b" ",
    b'{"a":1,"a":2,"b":3,"a":4}', b'{"hash":"1","a":1,"hash":"2"}', b'{"hash":"x","a":[1]}',
    b'{"a":1,"hash":"x","b":{"hash":"y"}}', b'{"hash":1}', b'{"hash":{"hash":null}}',
    b'{"a":{"hash":"x","b":[{"hash":2.5}]}}', b'{"hash":"x"}',
    b'{"a":NaN}', b'{"a":-NaN}', b'{"a":nan}', b'{"a":Infinity}', b'{"a":-Infinity}',
    b'{"a":inf}', b"NaN", b"Infinity",
    b'{"a":1e400}', b'{"a":-1e400}', b'{"a":1E+400}', b'{"a":1e-400}', b'{"a":-1e-400}',
    b'{"a":1' + b"0" * 400 + b'.0}', b'{"a":0.' + b"0" * 400 + b'1}',
    b'{"a":-0}', b'{"a":-0.0}', b'{"a":0e0}', b'{"a":-0E-0}', b'{"a":1E5}', b'{"a":1e+5}',
    b'{"a":1.5e-7}', b'{"a":1e-4}', b'{"a":0.0001}', b'{"a":0.00009999999999999999}',
    b'{"a":1e16}', b'{"a":9999999999999998}', b'{"a":9999999999999998.0}', b'{"a":1e15}',
    b'{"a":123456789012345678901234567890}', b'{"a":-9223372036854775809}',
    b'{"a":18446744073709551616}', b'{"a":' + b"9" * 4300 + b"}", b'{"a":' + b"9" * 4301 + b"}",
    b'{"a":-' + b"9" * 4300 + b"}", b'{"a":1.}', b'{"a":01}', b'{"a":.5}', b'{"a":+1}',
    b'{"a":1e}', b'{"a":-}', b'{"a":0x10}', b'{"a":1_000}',
    b'{"a":"\\ud800"}', b'{"a":"\\udc00"}', b'{"\\ud800":1}', b'{"a":"\\ud800\\u0041"}',
    b'{"a":"\\ud83d\\ude00"}', b'{"a":"\\uD83D\\uDE00"}', b'{"a":"\\ude00\\ud83d"}',
    b'{"a":["\\udfff",{"b":"\\ud800"}],"hash":"x"}', b'{"a":"\\ud800","hash":"x"}',
    b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b'{"a":"\xc0\x80"}', b'{"a":"\xf4\x90\x80\x80"}',
    b'{"a":"\xe2\x82"}', b'{"a":1}\xff', b'\xff{"a":1}', b'{"\xc3\xa9":"\xf0\x9f\x98\x80"}',
    b'\xef\xbb\xbf{"a":1}', b'{"a":"\xef\xbb\xbf"}', b'{"a":"\\ufeff"}',
    b'{"a":"\t"}', b'{"a":"\n"}', b'{"a":"\x00"}', b'{"a":"\x1f"}', b'{"a":"\x7f"}',
    b'{"a":"\\t\\n\\r\\b\\f\\/\\\\\\"\\u0000\\u001f\\u007f"}', b'{"a":"\\x41"}', b'{"a":"\\u12"}',
    b'{"a":1}x', b'{"a":1}\x0c', b'\x0c{"a":1}', b'{"a":1}\x00', b'{"a":1}{"b":2}',
    b'{"a":1}\xc2\xa0', b'\xc2\xa0{"a":1}', b'{"a"\xc2\xa0:1}', b'{"a":1}\r',
    b'{"a":1,}', b'{,}', b'{"a"}', b'{"a":}', b"{'a':1}", b'{a:1}', b'{"a":1', b'{"a":1}}',
    b'{"a":true,"b":false,"c":null}', b'{"a":True}', b'{"a":NULL}', b'{"a":nul}',
    b"[]", b'[{"a":1}]', b"1", b"-0.0", b'"{}"', b"null", b"true", b'"\\ud800"',
    b'{"a":[1,2,[3,[4,{"b":[]}]]]}', b'{"a":[1,]}', b'{"a":[,1]}',
    b'{"a":"\\u 123"}', b'{"a":"\\u-123"}', b'{"a":"\\u+123"}', b'{"a":"\\u0x12"}',
    b'{"a":"\\u12g4"}', b'{"a":"\\U0001F600"}', b'{"a":"\\u00E9\\u00e9"}', b'{"":""}',
    b'{"a":1 2}', b'{"a":-01}', b'{"a":1.5E}', b'{"a":0.e1}', b'{"a":1e5.5}', b'{"a":--1}',
    b'{"a":"\\', b'{"a":"\\"}', b'{"a":"', b'{"a":"x}', b'{"a"  :  [  ]  ,  "b"  :  {  }  }',
]  # fmt: skip


@pytest.mark.parametrize("data", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_lines_agree_with_the_reference(data: bytes) -> None:
    assert_equivalent(data)
    assert_equivalent(data + b"\n")
    # The bench times logline's own copy of the reference path: it must be the same.
    line, ref = outcome(reference_line, data), outcome(reference, data)
    assert line[0] == ref[0] and same(line[1:], ref[1:])


def test_rejections_raise_the_references_value_error() -> None:
    for data in (b'{"a":NaN}', b'{"a":"\xff"}', b"[1]", b'{"a":1}x', b"", b'{"a":"\t"}'):
        with pytest.raises(ValueError):
            parse_line(data)
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_line(b"[1]\n")
    with pytest.raises(UnicodeDecodeError):
        parse_line(b'{"a":"\xed\xa0\x80"}')


def test_what_cannot_be_hashed_is_parsed_with_no_hash(spy: Spy) -> None:
    obj, digest = parse_line(b'{"a":"\\ud800","hash":"x"}\n')
    assert obj == {"a": "\ud800", "hash": "x"} and digest is None
    obj, digest = parse_line(b'{"a":1e400}\n')
    assert obj == {"a": math.inf} and digest is None
    assert len(spy.lines) == 2


def test_floats_in_exponent_form_go_to_the_reference(spy: Spy) -> None:
    fast = [b"0.0001", b"1e-4", b"-0.5", b"9999999999999998.0", b"0e0", b"-0.0", b"52.0"]
    slow = [b"1e-5", b"0.00009999999999999999", b"1e16", b"-1e16", b"1e400", b"2.5E+300"]
    for text in fast + slow:
        assert_equivalent(b'{"a":[' + text + b"]}")
    assert [line[6:-2] for line in spy.lines] == slow


def test_floats_in_fixed_form_encode_as_repr() -> None:
    """Where the fast path takes a float, 1e-4 <= |f| < 1e16, msgspec writes it as repr()."""
    rnd = random.Random(11)
    low, high = struct.unpack("<q", struct.pack("<d", 1e-4))[0], 0x4341C37937E08000  # 1e16
    assert struct.unpack("<d", struct.pack("<q", high))[0] == 1e16
    encode = msgspec.json.encode
    values = [struct.unpack("<d", struct.pack("<q", rnd.randrange(low, high)))[0]]
    for _ in range(100_000):
        bits = rnd.randrange(low, high)
        values.append(struct.unpack("<d", struct.pack("<q", bits))[0])
    values += [rnd.randrange(10**16) / 10 ** rnd.randrange(17) for _ in range(50_000)]
    values += [math.nextafter(1e16, 0), 1e-4, 0.1, 0.5, 1.0, 2.0**52, 2.0**53, 1e15 + 0.5]
    for value in values:
        if 1e-4 <= value < 1e16:
            assert encode(value) == encode(-value)[1:] == repr(value).encode(), value


def test_ints_beyond_the_digit_limit_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = sys.get_int_max_str_digits()
    try:
        for digits in (640, 0):
            sys.set_int_max_str_digits(digits)
            for n in (639, 640, 641, 4300, 4301, 5000):
                assert_equivalent(b'{"a":-' + b"7" * n + b',"b":1.5}')
    finally:
        sys.set_int_max_str_digits(limit)


def test_deep_nesting_goes_to_the_reference(spy: Spy) -> None:
    def nested(depth: int, kind: bytes = b"[") -> bytes:
        close = b"]" if kind == b"[" else b"}"
        open_ = b"[" if kind == b"[" else b'{"a":'
        return b'{"a":' + open_ * depth + b"1" + close * depth + b"}"

    for depth in (1, 2, MAX_BRACKETS - 1):
        assert_equivalent(nested(depth))
        assert_equivalent(nested(depth, b"{"))
    assert spy.lines == []
    for depth in (MAX_BRACKETS, 500, 5000):
        assert_equivalent(nested(depth))
        assert_equivalent(nested(depth, b"{"))
    assert len(spy.lines) == 6
    with pytest.raises(RecursionError):
        parse_line(nested(5000))


def test_at_the_recursion_limit_the_outcome_is_the_references() -> None:
    """json.dumps fails a few levels before msgspec would: across the limit, every depth
    must come out as the reference's, called from as deep in the stack as the fall-back."""

    def one_frame_deeper(data: bytes) -> tuple[dict[str, Any], str | None]:
        return reference_line(data)  # the fall-back itself: the same frames as the reference

    seen = set()
    for depth in range(MAX_BRACKETS - 2, sys.getrecursionlimit() + 20):
        data = b'{"a":' + b"[" * depth + b"]" * depth + b',"hash":"x"}\n'
        fast, ref = outcome(parse_line, data), outcome(one_frame_deeper, data)
        assert fast[0] == ref[0] and same(fast[1:], ref[1:]), depth
        seen.add(fast[0] if fast[0] == "parsed" else fast[1])
    assert seen == {"parsed", RecursionError}


def test_a_dict_without_hash_is_hashed_whole_and_not_changed() -> None:
    for data in (b'{"b":1,"a":2}', b'{"hash":"h","b":1}', b'{"b":1,"hash":"h","a":[]}'):
        obj, digest = parse_line(data)
        ref, _ = reference(data)
        assert same(obj, ref)
        body = canonical({k: v for k, v in ref.items() if k != "hash"})
        assert digest == hashlib.sha256(body).hexdigest()
        assert digest == safe_hash(ref)


def test_very_long_lines_agree() -> None:
    rnd = random.Random(5)
    text = "".join(rnd.choice('aé☎😀"\\\n\t\x01') for _ in range(200_000))
    wide = {f"k{n:05d}é": [n, n / 7, str(n)] for n in range(20_000)}
    for obj in ({"a": text, "hash": "x"}, {**wide, "hash": "y"}, {"a": "x" * 5_000_000}):
        data = (json.dumps(obj, ensure_ascii=rnd.random() < 0.5) + "\n").encode()
        assert_equivalent(data)


def test_threads_share_the_fast_path() -> None:
    lines = [
        json.dumps({"n": n, "f": n / 3, "e": n * 1e-9, "hash": "h"}).encode() for n in range(2000)
    ]
    expected = [reference(data) for data in lines]
    failures: list[int] = []

    def work() -> None:
        for data, (obj, digest) in zip(lines, expected, strict=True):
            got, got_digest = parse_line(data)
            if not same(got, obj) or got_digest != digest:
                failures.append(obj["n"])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# ---------------------------------------------------------------------------------------------
# Random JSON text


class RandomJson:
    """Random JSON text, written token by token so that the odd forms occur: escapes, exponents,
    duplicate and "hash" keys, stray whitespace, and now and then something invalid."""

    CHARS = (
        "abcxyz019 _-:.,{}[]", "\"\\/", "\x00\x01\x08\x0c\x1f\x7f", "\t\n\r",
        "éß€☎电话\u2028\ufeff",
        "\ud7ff\ue000\uffff\ufffd", "😀\U00010000\U0010ffff",
    )  # fmt: skip

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def ws(self) -> str:
        r = self.rnd.random()
        if r < 0.9:
            return ""
        if r < 0.995:
            return "".join(self.rnd.choice(" \t\n\r") for _ in range(self.rnd.randrange(1, 3)))
        return self.rnd.choice(["\x0c", "\u00a0", "\x0b", "\ufeff"])  # not JSON whitespace

    def char(self) -> str:
        rnd = self.rnd
        c = rnd.choice(rnd.choice(self.CHARS))
        r = rnd.random()
        if c in '"\\' or (c < " " and r < 0.995):
            return rnd.choice([f"\\u{ord(c):04x}", f"\\u{ord(c):04X}", json.dumps(c)[1:-1]])
        if r < 0.1 and ord(c) < 0x10000:
            return f"\\u{ord(c):04x}"
        if r < 0.12 and ord(c) >= 0x10000:
            return json.dumps(c)[1:-1]  # a surrogate pair escape
        if r < 0.125:
            return f"\\u{rnd.randrange(0xD800, 0xE000):04x}"  # a lone surrogate
        return c

    def string(self) -> str:
        return '"' + "".join(self.char() for _ in range(self.rnd.randrange(0, 12))) + '"'

    def number(self) -> str:
        rnd = self.rnd
        sign = rnd.choice(["", "", "-"])
        whole = rnd.choice(["0", str(rnd.randrange(1, 10 ** rnd.randrange(1, 25)))])
        if rnd.random() < 0.02:
            whole = str(rnd.randrange(1, 10)) * rnd.choice([20, 400, 640, 4300, 4301])
        if rnd.random() < 0.4:
            return sign + whole
        frac = "." + str(rnd.randrange(10 ** rnd.randrange(1, 20))) if rnd.random() < 0.7 else ""
        exp = ""
        if rnd.random() < 0.5 or not frac:
            exp = rnd.choice("eE") + rnd.choice(["", "+", "-"]) + str(rnd.randrange(0, 330))
        return sign + whole + frac + exp

    def key(self) -> str:
        if self.rnd.random() < 0.15:
            return '"hash"'
        head = self.rnd.choice(["a", "b", "seq", "é", "\\u0061", "has\\u0068"])
        return '"' + head + "".join(self.char() for _ in range(self.rnd.randrange(0, 3))) + '"'

    def value(self, depth: int) -> str:
        rnd = self.rnd
        kind = rnd.randrange(10 if depth < 6 else 7)
        if kind == 0:
            return rnd.choice(["null", "true", "false"])
        if kind in (1, 2):
            return self.number()
        if kind in (3, 4, 5, 6):
            return self.string()
        if kind in (7, 8):
            return self.obj(depth + 1)
        items = [self.ws() + self.value(depth + 1) + self.ws() for _ in range(rnd.randrange(4))]
        return "[" + ",".join(items) + "]"

    def obj(self, depth: int = 0) -> str:
        members = [
            self.ws() + self.key() + self.ws() + ":" + self.ws() + self.value(depth) + self.ws()
            for _ in range(self.rnd.randrange(0 if depth else 1, 8))
        ]
        return "{" + ",".join(members) + "}"

    def line(self) -> bytes:
        r = self.rnd.random()
        text = self.obj() if r < 0.97 else self.value(3)
        data = (self.ws() + text + self.ws()).encode("utf-8", "surrogatepass")
        return data + b"\n" if self.rnd.random() < 0.8 else data

    def mutated(self) -> bytes:
        data = bytearray(self.line())
        for _ in range(self.rnd.randrange(1, 3)):
            at = self.rnd.randrange(len(data) + 1)
            how = self.rnd.randrange(3)
            byte = self.rnd.choice(b'{}[]",:.-+eE0159\\ \x00\x80\xc3\xed\xff')
            if how == 0 and at < len(data):
                del data[at]
            elif how == 1:
                data.insert(at, byte)
            elif at < len(data):
                data[at] = byte
        return bytes(data)


def cases(make: Callable[[], bytes], n: int) -> Iterator[bytes]:
    return (make() for _ in range(n))


def test_random_json_agrees_with_the_reference() -> None:
    gen = RandomJson(20260)
    kinds: dict[str, int] = {}
    hashed = 0
    for data in cases(gen.line, 6000):
        result = assert_equivalent(data)
        kinds[result[0]] = kinds.get(result[0], 0) + 1
        hashed += result[0] == "parsed" and result[2] is not None
    # The generator must exercise both sides, and mostly lines that parse and hash.
    assert kinds["raised"] > 600 and hashed > 2500, (kinds, hashed)


def test_mutated_random_json_agrees_with_the_reference() -> None:
    gen = RandomJson(4242)
    kinds: dict[str, int] = {}
    for data in cases(gen.mutated, 6000):
        result = assert_equivalent(data)
        kinds[result[0]] = kinds.get(result[0], 0) + 1
    assert kinds["raised"] > 3000 and kinds["parsed"] > 500, kinds


def test_random_values_round_trip_through_json_dumps_agree() -> None:
    """Objects built in Python and written by json.dumps, as the daemon writes its lines."""
    rnd = random.Random(99)

    def value(depth: int) -> Any:
        kind = rnd.randrange(9 if depth < 4 else 6)
        if kind == 0:
            return rnd.choice([None, True, False])
        if kind == 1:
            return rnd.choice([rnd.randrange(-(2**70), 2**70), rnd.randrange(-9, 9)])
        if kind == 2:
            bits = rnd.getrandbits(64)
            number: float = struct.unpack("<d", bits.to_bytes(8, "little"))[0]
            return number if math.isfinite(number) else rnd.random() * 10 ** rnd.randrange(20)
        if kind in (3, 4, 5):
            return "".join(chr(rnd.choice([rnd.randrange(0x20), rnd.randrange(0x20, 0x800),
                                           rnd.randrange(0xE000, 0x110000)]))
                           for _ in range(rnd.randrange(8)))  # fmt: skip
        if kind in (6, 7):
            return {
                rnd.choice(["hash", "a", "zz", "é", "\U0001f600", "\uffff", "A"]): value(depth + 1)
                for _ in range(rnd.randrange(5))
            }
        return [value(depth + 1) for _ in range(rnd.randrange(4))]

    parsed_fast = 0
    for _ in range(4000):
        obj = {"seq": rnd.randrange(10**6), "v": value(0), "hash": "0" * 64}
        if rnd.random() < 0.3:
            obj = {"hash": "1", **obj}
        data = (json.dumps(obj, ensure_ascii=rnd.random() < 0.3) + "\n").encode()
        result = assert_equivalent(data)
        parsed_fast += result[2] is not None
    assert parsed_fast > 3000
