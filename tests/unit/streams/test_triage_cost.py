"""Tier 1's cheap per-post path: verdicts without models, metrics once per batch."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Literal

from classifiers import Classification
from modpipe.core.errors import ClassifierError
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Verdict, encode, encode_verdict
from modpipe.core.settings import Settings
from streams.triage import Triage


class ScoreInText:
    """Scores a text by the number it starts with: '0.5 ...'."""

    model = "fake"
    kind: Literal["cpu", "gpu"] = "cpu"

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({"harassment": float(t.split()[0])}, 3) for t in texts]

    async def aclose(self) -> None:
        pass


def test_encode_verdict_writes_what_the_verdict_model_writes() -> None:
    fields = {
        "post_id": 'p-ü"1',
        "action": "block",
        "categories": ["harassment"],
        "scores": {"harassment": 0.97, "hate": 1e-05},
        "tier": "small",
        "model": "m",
        "policy_version": "v3",
        "latency_ms": 12.345,
        "cost_usd": 1.5e-07,
        "decided_at": "2026-11-29T12:00:00.000Z",
        "verdict_id": "0123456789abcdef0123456789abcdef",
    }
    fast = encode_verdict(**fields)  # type: ignore[arg-type]
    assert json.loads(fast) == json.loads(encode(Verdict(**fields)))  # type: ignore[arg-type]
    assert list(json.loads(fast)) == list(json.loads(encode(Verdict(**fields))))  # type: ignore[arg-type]
    Verdict.model_validate_json(fast)
    # The model's own JSON (as nested in a review item) has the same fields and order.
    own = json.loads(Verdict(**fields).model_dump_json())  # type: ignore[arg-type]
    assert own == json.loads(fast) and list(own) == list(json.loads(fast))


async def test_metrics_count_every_post_once_per_batch(settings: Settings) -> None:
    metrics = Metrics()
    triage = Triage(settings, ScoreInText(), metrics)
    now = time.time()
    texts = ["0.01 fine", "0.99 awful", "0.5 hmm", "0.02 ok"]
    batch = [
        Incoming(b"k", json.dumps({"post_id": f"p{i}", "text": t}).encode(), "posts", 0, i, now)
        for i, t in enumerate(texts)
    ] + [Incoming(b"k", b"nope", "posts", 0, 9, now)]

    result = await triage.process(batch)

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    assert value("modpipe_posts_total", worker="triage", outcome="verdict") == 3
    assert value("modpipe_posts_total", worker="triage", outcome="escalated") == 1
    assert value("modpipe_posts_total", worker="triage", outcome="dlq") == 1
    assert value("modpipe_decisions_total", tier="small", action="allow") == 2
    assert value("modpipe_decisions_total", tier="small", action="block") == 1
    assert value("modpipe_tokens_total", tier="small") == 12
    assert value("modpipe_stage_seconds_count", stage="end_to_end") == 3
    verdicts = [json.loads(r.value) for r in result.records if r.topic == settings.topics.verdicts]
    assert len({v["decided_at"] for v in verdicts}) == 1  # one clock read per batch
    assert all(v["latency_ms"] >= 0 for v in verdicts)
