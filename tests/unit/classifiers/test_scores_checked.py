"""Scores are checked at the classifier seam: an unusable one is an item error, never allow."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from classifiers.base import CheckedClassifier, Classification, checked
from modpipe.core.errors import ClassifierError
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming
from modpipe.core.settings import RoutingSettings, load_settings
from streams.routing import route
from streams.triage import Triage

CATEGORIES = ("harassment", "hate")
UNUSABLE = {
    "nan": {"harassment": math.nan},
    "inf": {"harassment": math.inf},
    "negative infinity": {"hate": -math.inf},
    "above one": {"harassment": 1.5},
    "below zero": {"harassment": -0.1},
    "unknown category": {"harasment": 0.99},
    "nan beside a clean score": {"harassment": 0.01, "hate": math.nan},
}


@pytest.mark.parametrize("scores", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_unusable_scores_become_item_errors(scores: dict[str, float]) -> None:
    good = Classification({"harassment": 0.2}, 1)
    out = checked([good, Classification(scores, 1)], CATEGORIES)
    assert out[0] is good
    assert isinstance(out[1], ClassifierError)


@pytest.mark.parametrize(
    "scores", [s for k, s in UNUSABLE.items() if k != "unknown category"], ids=str
)
def test_routing_escalates_a_score_it_cannot_compare(scores: dict[str, float]) -> None:
    assert route(scores, RoutingSettings()).route == "escalate"


class NanClassifier:
    model = "nan"
    kind = "cpu"

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({"harassment": math.nan}, 1) for _ in texts]

    async def aclose(self) -> None:
        pass


async def test_a_nan_score_is_escalated_by_triage_never_allowed() -> None:
    settings = load_settings()
    classifier = CheckedClassifier(NanClassifier(), settings.policy.categories)
    triage = Triage(settings, classifier, Metrics())
    msg = Incoming(
        topic="posts",
        partition=0,
        offset=0,
        key=b"p1",
        value=b'{"post_id": "p1", "text": "hello"}',
        timestamp_s=0.0,
    )
    result = await triage.process([msg])
    assert (result.verdicts, result.escalated) == (0, 1)
    assert [r.topic for r in result.records] == [settings.topics.escalations]
