"""One post whose handling fails becomes a dead letter; the rest of its batch is decided.
A Triage with a fake classifier: no Kafka."""

import json
from collections.abc import Sequence

import pytest

from classifiers import Classification
from modpipe.core.errors import ClassifierError
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming
from modpipe.core.settings import Settings
from streams.triage import Triage


class Unusable:
    """Scores 'ok' texts; for others returns what a buggy backend might."""

    model = "unusable"
    kind = "cpu"

    def __init__(self, bad: object) -> None:
        self.bad = bad

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [
            Classification({"harassment": 0.01}, 1) if t == "ok" else self.bad  # type: ignore[misc]
            for t in texts
        ]

    async def aclose(self) -> None:
        pass


def batch(settings: Settings) -> list[Incoming]:
    texts = ["ok", "bad", "ok"]
    return [
        Incoming(b"k", json.dumps({"post_id": f"p{i}", "text": t}).encode(), "posts", 0, i, 0.0)
        for i, t in enumerate(texts)
    ]


@pytest.mark.parametrize(
    ("bad", "reason", "needle"),
    [
        (None, "internal", "AttributeError"),
        (Classification(None, 1), "internal", "AttributeError"),  # type: ignore[arg-type]
        # 30,000 borderline categories: an escalation far over the record limit.
        (Classification({f"c{i}": 0.5 for i in range(30_000)}, 1), "size", "over the maximum"),
    ],
)
async def test_a_post_that_breaks_its_handling_is_dead_lettered_alone(
    settings: Settings, bad: object, reason: str, needle: str
) -> None:
    metrics = Metrics()
    result = await Triage(settings, Unusable(bad), metrics).process(batch(settings))
    letters = [json.loads(r.value) for r in result.records if r.topic == settings.topics.dlq]
    verdicts = [json.loads(r.value) for r in result.records if r.topic == settings.topics.verdicts]
    assert [v["post_id"] for v in verdicts] == ["p0", "p2"]
    assert [(d["offset"], d["reason"]) for d in letters] == [(1, reason)]
    assert needle in letters[0]["error"]
    assert (result.verdicts, result.escalated, result.dlq) == (2, 0, 1)
    assert len(result.records) == 3  # nothing half-built for the failed post
    assert metrics.registry.get_sample_value("modpipe_dlq_total", {"reason": reason}) == 1
