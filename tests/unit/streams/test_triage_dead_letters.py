"""Bad input in a triage batch: the DLQ keeps the raw bytes and where they came from, and
every dead letter is counted. A Triage with a fake classifier: no Kafka."""

import base64
import json
from collections.abc import Sequence
from typing import Literal

import pytest

from classifiers import Classification
from modpipe.core.errors import ClassifierError
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming
from modpipe.core.settings import Settings
from streams.triage import Triage


class AllowAll:
    model = "allow-all"
    kind: Literal["cpu", "gpu"] = "cpu"

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({"harassment": 0.0}, 1) for _ in texts]

    async def aclose(self) -> None:
        pass


BAD = [
    (b"k0", b"\xff\xfe not utf-8", "encoding"),
    (None, b"[1, 2]", "json"),
    (b"k2", b'{"post_id": 7, "text": "x"}', "schema"),
    (b"k3", None, "empty"),
]


async def test_every_bad_post_becomes_a_traceable_counted_dead_letter(settings: Settings) -> None:
    metrics = Metrics()
    good = json.dumps({"post_id": "ok", "text": "hello"}).encode()
    batch = [
        Incoming(key, value, settings.topics.posts, 1, 100 + i, 0.0)
        for i, (key, value, _) in enumerate(BAD)
    ] + [Incoming(b"ok", good, settings.topics.posts, 1, 200, 0.0)]
    result = await Triage(settings, AllowAll(), metrics).process(batch)

    letters = [r for r in result.records if r.topic == settings.topics.dlq]
    assert result.dlq == len(BAD) == len(letters)
    for i, ((key, value, reason), record) in enumerate(zip(BAD, letters, strict=True)):
        offset = 100 + i
        letter = json.loads(record.value)
        assert base64.b64decode(letter["value_b64"]) == (value or b"")
        assert letter["key_b64"] == (base64.b64encode(key).decode() if key else None)
        assert (letter["topic"], letter["partition"], letter["offset"]) == (
            settings.topics.posts,
            1,
            offset,
        )
        assert letter["reason"] == reason and letter["error"]
        # Keyed by the original key, or by where it was found when it had none.
        assert record.key == (key or f"{settings.topics.posts}:1:{offset}".encode())

    def counted(name: str, labels: dict[str, str]) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert counted("modpipe_dlq_total", {"reason": "json"}) == 1
    assert counted("modpipe_dlq_total", {"reason": "encoding"}) == 1
    assert counted("modpipe_dlq_total", {"reason": "schema"}) == 1
    assert counted("modpipe_dlq_total", {"reason": "empty"}) == 1
    assert counted("modpipe_posts_total", {"worker": "triage", "outcome": "dlq"}) == 4
    assert counted("modpipe_posts_total", {"worker": "triage", "outcome": "verdict"}) == 1


@pytest.mark.parametrize("value", [b"", b"x" * 70_000])
async def test_empty_and_oversized_values_are_dead_letters_too(
    settings: Settings, value: bytes
) -> None:
    metrics = Metrics()
    result = await Triage(settings, AllowAll(), metrics).process(
        [Incoming(b"k", value, settings.topics.posts, 0, 7, 0.0)]
    )
    (record,) = result.records
    letter = json.loads(record.value)
    assert record.topic == settings.topics.dlq
    assert base64.b64decode(letter["value_b64"]) == value
    assert metrics.registry.get_sample_value("modpipe_dlq_total", {"reason": letter["reason"]}) == 1
