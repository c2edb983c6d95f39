"""The daily budget under concurrency: reserve before a call, settle after, on real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from escalation.budget import Budget
from escalation.frontier import build_frontier
from modpipe.core.errors import BudgetExhausted
from modpipe.core.metrics import Metrics
from modpipe.core.redis_client import connect_redis
from tests.openai_wire_server import OpenAIWireServer, openai_wire_server


@pytest.fixture
async def wire() -> AsyncIterator[OpenAIWireServer]:
    async with openai_wire_server() as server:
        yield server


async def test_64_concurrent_escalations_end_at_most_one_estimate_over_the_cap(
    make_settings, wire: OpenAIWireServer
) -> None:
    probe = make_settings(escalation={"provider": "chat", "base_url": wire.url})
    frontier = build_frontier(probe, Metrics())
    assert frontier is not None
    texts = [f"post number {i} with some words to pay for" for i in range(64)]
    estimates = [frontier._estimate_usd(t) for t in texts]
    await frontier.aclose()
    cap = 3 * max(estimates)  # a few calls' worth
    settings = make_settings(
        escalation={
            "provider": "chat",
            "base_url": wire.url,
            "daily_budget_usd": cap,
            "deadline_s": 5.0,
            "max_in_flight": 64,
        }
    )
    wire.behaviour.latency_s = 0.05  # every call is in flight while the others reserve
    frontier = build_frontier(settings, Metrics())
    assert frontier is not None
    try:
        results = await asyncio.gather(*(frontier.decide(t) for t in texts), return_exceptions=True)
        spent = await frontier._budget.spent()
    finally:
        await frontier.aclose()
    paid = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(paid) + len(refused) == 64, [r for r in results if isinstance(r, Exception)]
    assert sum(wire.calls.values()) == len(paid) >= 3
    real = sum(r.cost_usd for r in paid)
    assert spent == pytest.approx(real)  # every reservation was settled to the real cost
    assert spent <= cap + max(estimates), (spent, cap)


async def test_two_workers_share_one_cap(settings) -> None:
    """Two escalators' budgets on one Redis, 64 reservations at once: granted ones fit."""
    clients = [connect_redis(settings.redis) for _ in range(2)]
    budgets = [Budget(1.0, c, settings.redis.key_prefix) for c in clients]
    estimate = 0.3

    async def call(budget: Budget) -> bool:
        try:
            reserved = await budget.reserve(estimate)
        except BudgetExhausted:
            return False
        await asyncio.sleep(0.01)  # the call
        await budget.settle(reserved, estimate / 2)
        return True

    try:
        granted = await asyncio.gather(*(call(budgets[i % 2]) for i in range(64)))
        spent = await budgets[0].spent()
    finally:
        for c in clients:
            await c.aclose()
    # Reservations are granted while the total is under 1.0: 0.3 each, so 4 at most at
    # once; settling at half frees room, so a few more get in, and the total stays
    # within one estimate of the cap.
    assert 4 <= sum(granted) < 64
    assert spent <= 1.0 + estimate


async def test_redis_down_stops_paid_calls(settings) -> None:
    # N escalators counting locally during an outage could spend N caps: a reservation
    # that cannot reach the shared total is refused instead (the post goes to review).
    dead = aioredis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2
    )
    budget = Budget(1.0, dead, settings.redis.key_prefix)
    try:
        refused = 0
        for _ in range(4):
            with pytest.raises(BudgetExhausted, match="cannot be reached"):
                await budget.reserve(0.3)
            refused += 1
    finally:
        await dead.aclose()
    assert refused == 4 and await budget.spent() == 0.0
