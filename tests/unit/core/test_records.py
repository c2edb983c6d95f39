import base64
import json

import pytest

from modpipe.core.errors import InvalidRecord
from modpipe.core.records import DeadLetter, Incoming, dead_letter, parse_escalation, parse_post

MAX = 1024


def test_valid_post_keeps_unknown_fields() -> None:
    raw = json.dumps({"post_id": "p1", "text": "hi", "lang": "en", "x_custom": [1, 2]}).encode()
    post = parse_post(raw, MAX)
    assert post.post_id == "p1"
    assert post.wire() == {"post_id": "p1", "text": "hi", "lang": "en", "x_custom": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (b"not json", "json", "not UTF-8 JSON"),
        (b"\xff\xfe", "json", "not UTF-8 JSON"),
        (b"[1, 2]", "json", "JSON list, not an object"),
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
    assert letter.reason == "json"
    assert "not UTF-8 JSON" in letter.error


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
