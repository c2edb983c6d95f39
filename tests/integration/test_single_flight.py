"""Two escalators on one real Redis against the OpenAI wire server: one paid call per
distinct text even when calls outlast the lock's TTL, and a cost metric and budget that
match the provider's bill to the cent when a fifth of the replies are invalid but billed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from escalation.frontier import FrontierTier, build_frontier
from modpipe.core.cost import CostModel
from modpipe.core.errors import BudgetExhausted, InvalidOutput, ProviderError
from modpipe.core.metrics import Metrics
from tests.openai_wire_server import OpenAIWireServer, openai_wire_server

TIMEOUT_S = 120.0


@pytest.fixture
async def wire() -> AsyncIterator[OpenAIWireServer]:
    async with openai_wire_server() as server:
        yield server


def two_escalators(settings) -> list[tuple[FrontierTier, Metrics]]:
    """Two FrontierTiers, each with its own Redis connections, as two processes have."""
    out = []
    for _ in range(2):
        metrics = Metrics()
        tier = build_frontier(settings, metrics)
        assert tier is not None
        out.append((tier, metrics))
    return out


async def test_two_escalators_call_once_per_text_when_calls_outlast_the_lock(
    make_settings, wire: OpenAIWireServer
) -> None:
    # Redis's 0.5 s default timeout tripped on a loaded machine once: the escalators then
    # went on without the cache, as they must when Redis is away, and each text was paid
    # twice. This test is about single flight with Redis up.
    settings = make_settings(
        escalation={"provider": "chat", "base_url": wire.url, "timeout_s": 5.0},
        redis={"lock_ttl_s": 1.0, "timeout_s": 5.0},
    )
    wire.behaviour.latency_s = 2.5  # each call outlives the lock's TTL 2.5 times
    texts = [f"distinct post number {i}" for i in range(50)]
    jobs = [(i % 2, t) for t in texts for i in range(4)]  # 4 copies, split over both
    random.Random(20).shuffle(jobs)
    tiers = two_escalators(settings)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(tiers[w][0].decide(t) for w, t in jobs), return_exceptions=True),
            TIMEOUT_S,
        )
    finally:
        for tier, _ in tiers:
            await tier.aclose()
    assert not [r for r in results if isinstance(r, BaseException)]
    assert sum(wire.calls.values()) == 50, wire.calls.most_common(3)
    assert set(wire.calls.values()) == {1}
    assert sorted(r.tier for r in results).count("frontier") == 50


async def test_invalid_but_billed_replies_are_paid_for_to_the_cent(
    make_settings, wire: OpenAIWireServer
) -> None:
    probe = make_settings(escalation={"provider": "chat", "base_url": wire.url})
    tier = build_frontier(probe, Metrics())
    assert tier is not None
    texts = [f"post {i} with a few words in it to be paid for" for i in range(400)]
    estimate = max(tier._estimate_usd(t) for t in texts)
    await tier.aclose()
    cap = 40 * estimate
    settings = make_settings(
        escalation={
            "provider": "chat",
            "base_url": wire.url,
            "daily_budget_usd": cap,
            "deadline_s": 5.0,
            "breaker_failures": 1000,
        }
    )
    rng = random.Random(20)
    wire.behaviour.script = ["schema" if rng.random() < 0.2 else "ok" for _ in range(len(texts))]
    tiers = two_escalators(settings)
    outcomes: list[object] = []
    try:
        for batch in range(0, len(texts), 16):  # 16 in flight, alternating escalators
            outcomes += await asyncio.wait_for(
                asyncio.gather(
                    *(tiers[i % 2][0].decide(t) for i, t in enumerate(texts[batch : batch + 16])),
                    return_exceptions=True,
                ),
                TIMEOUT_S,
            )
        spent = await tiers[0][0]._budget.spent()
    finally:
        for tier, _ in tiers:
            await tier.aclose()
    invalid = [o for o in outcomes if isinstance(o, InvalidOutput)]
    refused = [o for o in outcomes if isinstance(o, BudgetExhausted)]
    other = [o for o in outcomes if isinstance(o, ProviderError | Exception)]
    assert invalid and refused, "some replies invalid, and the budget ran out"
    assert len(other) == len(invalid) + len(refused), other[:3]
    prices = CostModel(settings.prices)
    billed = sum(prices.frontier_usd(m, i, o) for m, i, o in wire.billed)
    counted = sum(
        m.registry.get_sample_value("modpipe_cost_usd_total", {"tier": "frontier"}) or 0
        for _, m in tiers
    )
    assert round(counted, 2) == round(billed, 2)
    assert counted == pytest.approx(billed, rel=1e-9)
    assert spent == pytest.approx(billed, rel=1e-9)  # every reservation settled to its bill
    assert cap <= spent + estimate  # it stopped only when the cap was reached
    assert spent <= cap + estimate  # and within one estimate of it
