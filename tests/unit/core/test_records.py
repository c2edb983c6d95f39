import base64
import hashlib
import json
import random

import pytest

from modpipe.core.dead_letters import DeadLetter, dead_letter
from modpipe.core.errors import InvalidRecord
from modpipe.core.records import (
    DLQ_KEEP_BYTES,
    DLQ_PREFIX_BYTES,
    MAX_DEPTH,
    Escalation,
    Incoming,
    Post,
    encode,
    parse_escalation,
    parse_post,
    wire_limits,
)

MAX = 1024


def test_valid_post_keeps_unknown_fields() -> None:
    raw = json.dumps({"post_id": "p1", "text": "hi", "lang": "en", "x_custom": [1, 2]}).encode()
    post = parse_post(raw, MAX)
    assert post.post_id == "p1"
    assert post.wire() == {"post_id": "p1", "text": "hi", "lang": "en", "x_custom": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (b"not json", "json", "not standard JSON"),
        (b"\xff\xfe", "encoding", "byte order mark"),
        (b"[1, 2]", "json", "JSON array, not an object"),
        (b'{"text": "x"}', "schema", "post_id: Field required"),
        (b'{"post_id": "p"}', "schema", "text: Field required"),
        (b'{"post_id": 5, "text": "x"}', "schema", "post_id: Input should be a valid string"),
        (b'{"post_id": "p", "text": ["x"]}', "schema", "text: Input should be a valid string"),
        (b'{"post_id": "", "text": "x"}', "schema", "post_id: String should have at least 1"),
        (json.dumps({"post_id": "p" * 257, "text": "x"}).encode(), "schema", "at most 256"),
        (b'{"post_id": "p", "text": "x", "created_at": "yesterday"}', "schema", "RFC 3339"),
        (json.dumps({"post_id": "p", "text": "x" * 2000}).encode(), "size", "over the maximum"),
        (None, "empty", "empty"),
    ],
)
def test_invalid_posts_say_why(raw: bytes | None, reason: str, needle: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        parse_post(raw, MAX)
    assert info.value.reason == reason
    assert needle in str(info.value)


def test_dead_letter_keeps_raw_bytes_and_origin() -> None:
    msg = Incoming(b"k", b"\x00garbage", "posts", 3, 42, 0.0)
    try:
        parse_post(msg.value, MAX)
    except InvalidRecord as exc:
        out = dead_letter(msg, exc, "dlq")
    letter = DeadLetter.model_validate_json(out.value)
    assert (out.topic, out.key) == ("dlq", b"k")
    assert base64.b64decode(letter.value_b64) == b"\x00garbage"
    assert base64.b64decode(letter.key_b64 or "") == b"k"
    assert (letter.topic, letter.partition, letter.offset) == ("posts", 3, 42)
    assert letter.reason == "encoding"
    assert "NUL bytes" in letter.error


def test_a_dead_letter_without_a_key_is_keyed_by_its_origin() -> None:
    out = dead_letter(Incoming(None, b"[]", "posts", 1, 7, 0.0), InvalidRecord("x", "json"), "dlq")
    assert out.key == b"posts:1:7"
    assert DeadLetter.model_validate_json(out.value).key_b64 is None


def test_escalation_carries_a_valid_post() -> None:
    raw = json.dumps(
        {
            "post": {"post_id": "p", "text": "t"},
            "scores": {"harassment": 0.5},
            "model": "m",
            "policy_version": "v",
            "escalated_at": "2026-01-01T00:00:00Z",
        }
    ).encode()
    escalation, post = parse_escalation(raw, MAX)
    assert post.text == "t"
    assert escalation.scores == {"harassment": 0.5}
    with pytest.raises(InvalidRecord, match=r"text: Field required"):
        parse_escalation(
            json.dumps(
                {"post": {"post_id": "p"}, "scores": {}, "model": "m", "policy_version": "v"}
            ).encode(),
            MAX,
        )


def post(**fields: object) -> dict[str, object]:
    return {"post_id": "p", "text": "hi", **fields}


def nested(depth: int) -> object:
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (b"", "empty", "0 bytes"),
        (b"\xef\xbb\xbf" + json.dumps(post()).encode(), "encoding", "byte order mark"),
        (json.dumps(post()).encode("utf-16"), "encoding", "byte order mark"),
        (json.dumps(post()).encode("utf-16-le"), "encoding", "NUL bytes"),
        (json.dumps(post()).encode("utf-32-be"), "encoding", "NUL bytes"),
        (b'{"post_id": "p", "text": "\xed\xa0\x80"}', "encoding", "not UTF-8"),
        (b'{"post_id": "p", "text": "\xc3"}', "encoding", "not UTF-8"),
        (b'{"post_id": "p", "text": "\\ud800"}', "encoding", "lone surrogate"),
        (b'{"post_id": "p", "text": "x", "\\udfff": 1}', "encoding", "lone surrogate"),
        (b'{"post_id": "p", "text": "x", "m": NaN}', "json", "NaN is not a JSON number"),
        (b'{"post_id": "p", "text": "x", "m": -Infinity}', "json", "-Infinity"),
        (b'{"post_id": "p", "text": "x", "m": 1e400}', "json", "out of range"),
        (b'{"post_id": "p", "text": "x", "m": 1' + b"0" * 5000 + b"}", "json", "digits"),
        (b'{"post_id": "p", "text": "x"} {}', "json", "Extra data"),
        (b"null", "json", "JSON null, not an object"),
        (b'"a string"', "json", "JSON string, not an object"),
        (json.dumps(post(m=nested(MAX_DEPTH))).encode(), "depth", "more than 32 levels"),
        (b"[" * 30_000 + b"]" * 30_000, "depth", "more than 32 levels"),
        (b"[{" * 500, "depth", "more than 32 levels"),
    ],
)
def test_strict_decoding_says_which_rule_broke(raw: bytes, reason: str, needle: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        parse_post(raw, 65536)
    assert (info.value.reason, needle in str(info.value)) == (reason, True), str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        post(m=nested(MAX_DEPTH - 1)),  # the deepest post allowed
        post(text="\U0001f600 \u200f\u202e rtl \u200b zero-width \x00 nul"),
        post(m=10**4000, f=1.5e308, neg=-0.0),
        post(tags=["[", "{", "]]]"] * 40),  # brackets in strings are not nesting
        post(m=[{"a": i} for i in range(100)]),  # many containers, shallow
    ],
)
def test_strict_decoding_accepts_standard_json_and_keeps_it(value: dict[str, object]) -> None:
    for raw in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False).encode()):
        parsed = parse_post(raw, 65536)
        assert parsed.wire() == value
        # It travels on as received: an escalation can carry it unchanged.
        escalation = Escalation(post=parsed.wire(), scores={}, model="m", policy_version="v")
        assert json.loads(encode(escalation))["post"] == value


def test_duplicate_keys_keep_the_last() -> None:
    assert parse_post(b'{"post_id": "a", "post_id": "b", "text": "t"}', MAX).post_id == "b"


def test_a_value_too_big_to_keep_is_a_prefix_with_its_hash_and_size() -> None:
    value = b"x" * (DLQ_KEEP_BYTES + 1)
    key = b"k" * 100_000
    out = dead_letter(Incoming(key, value, "posts", 0, 9, 0.0), InvalidRecord("big", "size"), "q")
    letter = DeadLetter.model_validate_json(out.value)
    assert letter.truncated
    assert base64.b64decode(letter.value_b64) == value[:DLQ_PREFIX_BYTES]
    assert (letter.value_size, letter.value_sha256) == (
        len(value),
        hashlib.sha256(value).hexdigest(),
    )
    assert (letter.key_size, letter.key_sha256) == (len(key), hashlib.sha256(key).hexdigest())
    assert out.key == b"posts:0:9"  # too long to reuse as the DLQ record's key
    assert len(out.value) <= wire_limits(65536).dlq_bytes


def test_the_largest_dead_letter_kept_whole_fits_the_dlq() -> None:
    value, key = b"\x01" * DLQ_KEEP_BYTES, b"\x02" * 65536
    error = InvalidRecord("\x03" * 10_000 + "\ud800", "size")  # control chars escape to 6 bytes
    out = dead_letter(Incoming(key, value, "t" * 249, 0, 1, 0.0), error, "q")
    letter = DeadLetter.model_validate_json(out.value)
    assert not letter.truncated and base64.b64decode(letter.value_b64) == value
    assert len(out.value) <= wire_limits(65536).dlq_bytes


def test_any_exception_becomes_an_internal_dead_letter() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        out = dead_letter(Incoming(b"k", b"{}", "posts", 0, 1, 0.0), exc, "q")
    letter = DeadLetter.model_validate_json(out.value)
    assert letter.reason == "internal"
    assert "KeyError" in letter.error and "test_records.py" in letter.error


def test_any_bytes_are_a_post_or_an_invalid_record() -> None:
    # Random damage to valid posts and escalations: decoding never raises anything else,
    # and whatever it accepts can be written on again.
    rng = random.Random(7)
    seeds = [
        json.dumps(post(m=nested(5), t="caf\u00e9 \U0001f600", n=[1.5, -2, None, True])).encode(),
        json.dumps(
            {"post": post(), "scores": {"h": 0.5}, "model": "m", "policy_version": "v"}
        ).encode(),
    ]
    pieces = [
        b"[",
        b"]",
        b"{",
        b"}",
        b'"',
        b"\\",
        b"\\u",
        b"\\ud800",
        b"\xed\xa0\x80",
        b"\x00",
        b"\xff",
        b"NaN",
        b"1e999",
        b",",
        b":",
        b"\xef\xbb\xbf",
        b"9" * 30,
    ]
    for _ in range(3000):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(raw) + 1)
            action = rng.random()
            if action < 0.4:
                raw[at:at] = rng.choice(pieces) * rng.randint(1, 40)
            elif action < 0.7 and len(raw) > 1:
                del raw[at : at + rng.randint(1, 8)]
            elif raw:
                raw[min(at, len(raw) - 1)] = rng.randrange(256)
        for parse in (parse_post, parse_escalation):
            try:
                parsed = parse(bytes(raw), 65536)
            except InvalidRecord:
                continue
            post_ = parsed if isinstance(parsed, Post) else parsed[1]
            encode(Escalation(post=post_.wire(), scores={}, model="m", policy_version="v"))
