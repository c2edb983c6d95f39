"""FrontierTier's single flight, in one process and across processes through the cache lock,
against in-memory fakes of its own seams (tests/unit/escalation/fakes.py): no Redis, no HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from escalation.cache import cache_key
from escalation.frontier import Decided, FrontierTier
from modpipe.core.errors import ProviderError
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from tests.unit.escalation.fakes import FakeProvider, MemoryCache

TIMEOUT_S = 5.0


def tier(
    settings: Settings, provider: FakeProvider, cache: MemoryCache | None, metrics: Metrics
) -> FrontierTier:
    # The fake provider is unpaid, so the budget is never consulted.
    return FrontierTier(settings, provider, cache, None, metrics)  # type: ignore[arg-type]


def cache_count(metrics: Metrics, result: str) -> float:
    return (
        metrics.registry.get_sample_value("modpipe_cache_requests_total", {"result": result}) or 0
    )


async def gather(*calls: Any) -> list[Any]:
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), TIMEOUT_S)


@pytest.mark.parametrize("with_cache", [False, True])
async def test_identical_posts_in_flight_cost_one_call(
    settings: Settings, with_cache: bool
) -> None:
    provider, metrics = FakeProvider(), Metrics()
    frontier = tier(settings, provider, MemoryCache() if with_cache else None, metrics)
    provider.gate.clear()
    texts = ["same BLOCK text", "SAME  block text", "same BLOCK text\u200b", "same BLOCK text"]
    tasks = [asyncio.create_task(frontier.decide(t)) for t in texts]
    await asyncio.wait_for(provider.entered.wait(), TIMEOUT_S)
    provider.gate.set()
    results: list[Decided] = await gather(*tasks)
    assert provider.calls == ["same BLOCK text"]  # normalised to one key: one call
    assert [r.tier for r in results] == ["frontier", "cache", "cache", "cache"]
    assert [r.cost_usd for r in results] == [0.001, 0.0, 0.0, 0.0]
    assert {(r.action, tuple(r.categories)) for r in results} == {("block", ("harassment",))}
    assert cache_count(metrics, "hit") == 3
    assert frontier._inflight == {}


async def test_different_posts_do_not_share(settings: Settings) -> None:
    provider = FakeProvider()
    frontier = tier(settings, provider, MemoryCache(), Metrics())
    results = await gather(*(frontier.decide(f"text {i}") for i in range(4)))
    assert sorted(provider.calls) == [f"text {i}" for i in range(4)]
    assert {r.tier for r in results} == {"frontier"}


async def test_a_failing_holder_does_not_wedge_its_waiters(settings: Settings) -> None:
    provider, cache = FakeProvider(fail_with=ProviderError("rejected (400)")), MemoryCache()
    frontier = tier(settings, provider, cache, Metrics())
    provider.gate.clear()
    tasks = [asyncio.create_task(frontier.decide("same")) for _ in range(3)]
    await asyncio.wait_for(provider.entered.wait(), TIMEOUT_S)
    provider.gate.set()
    results = await gather(*tasks)
    assert all(isinstance(r, ProviderError) for r in results), results
    assert len(provider.calls) == 1
    assert frontier._inflight == {} and cache.locks == {} and cache.verdicts == {}
    provider.fail_with = None  # the next identical post is decided afresh
    assert (await asyncio.wait_for(frontier.decide("same"), TIMEOUT_S)).tier == "frontier"


async def test_a_cancelled_holder_does_not_cancel_its_waiters(settings: Settings) -> None:
    provider = FakeProvider()
    frontier = tier(settings, provider, MemoryCache(), Metrics())
    provider.gate.clear()
    holder = asyncio.create_task(frontier.decide("same"))
    await asyncio.wait_for(provider.entered.wait(), TIMEOUT_S)
    waiters = [asyncio.create_task(frontier.decide("same")) for _ in range(2)]
    await asyncio.sleep(0)  # one loop turn: the waiters reach the shared future
    holder.cancel()
    provider.gate.set()
    results = await gather(*waiters)
    assert holder.cancelled()
    # One waiter takes over the call, the other shares it.
    assert sorted(r.tier for r in results) == ["cache", "frontier"], results
    assert provider.calls == ["same", "same"]


async def test_a_cancelled_waiter_leaves_the_holder_alone(settings: Settings) -> None:
    provider = FakeProvider()
    frontier = tier(settings, provider, MemoryCache(), Metrics())
    provider.gate.clear()
    holder = asyncio.create_task(frontier.decide("same"))
    await asyncio.wait_for(provider.entered.wait(), TIMEOUT_S)
    waiter = asyncio.create_task(frontier.decide("same"))
    await asyncio.sleep(0)  # one loop turn: the waiter reaches the shared future
    waiter.cancel()
    provider.gate.set()
    (decided,) = await gather(holder)
    assert waiter.cancelled() and decided.tier == "frontier"


async def test_across_workers_the_lock_holder_pays_and_the_other_waits(
    settings: Settings,
) -> None:
    cache = MemoryCache()
    pa, pb = FakeProvider(), FakeProvider()
    a, b = tier(settings, pa, cache, Metrics()), tier(settings, pb, cache, Metrics())
    pa.gate.clear()
    first = asyncio.create_task(a.decide("shared text"))
    await asyncio.wait_for(pa.entered.wait(), TIMEOUT_S)
    key = cache_key(settings.policy.version, pa.name, pa.model, "shared text", pa.fingerprint)
    assert key in cache.locks  # a holds the cross-process lock while it calls
    second = asyncio.create_task(b.decide("shared text"))
    pa.gate.set()
    ra, rb = await gather(first, second)
    assert (ra.tier, rb.tier) == ("frontier", "cache")
    assert pa.calls == ["shared text"] and pb.calls == []
    assert cache.locks == {}, "the holder releases its lock"
    stored = cache.verdicts[key]
    assert "tier" not in stored and "cost_usd" not in stored
    assert stored["action"] == "allow" and stored["model"] == pa.model


async def test_across_workers_a_failing_holder_lets_the_waiter_call(settings: Settings) -> None:
    cache = MemoryCache()
    pa, pb = FakeProvider(fail_with=ProviderError("rejected (400)")), FakeProvider()
    a, b = tier(settings, pa, cache, Metrics()), tier(settings, pb, cache, Metrics())
    pa.gate.clear()
    first = asyncio.create_task(a.decide("shared text"))
    await asyncio.wait_for(pa.entered.wait(), TIMEOUT_S)
    second = asyncio.create_task(b.decide("shared text"))
    pa.gate.set()
    ra, rb = await gather(first, second)
    assert isinstance(ra, ProviderError)
    assert rb.tier == "frontier" and pb.calls == ["shared text"]
    assert cache.locks == {}


async def test_a_cached_verdict_costs_nothing(settings: Settings) -> None:
    cache, metrics = MemoryCache(), Metrics()
    provider = FakeProvider()
    frontier = tier(settings, provider, cache, metrics)
    first = await frontier.decide("hello")
    again = await frontier.decide("HELLO")
    assert (first.tier, again.tier, again.cost_usd) == ("frontier", "cache", 0.0)
    assert provider.calls == ["hello"]
    assert (cache_count(metrics, "miss"), cache_count(metrics, "hit")) == (1, 1)


async def test_the_cache_being_down_costs_calls_not_verdicts(make_settings: Any) -> None:
    settings = make_settings(redis={"breaker_failures": 2, "breaker_cooldown_s": 60})
    cache, metrics, provider = MemoryCache(), Metrics(), FakeProvider()
    cache.down = True
    frontier = tier(settings, provider, cache, metrics)
    results = [await frontier.decide(f"text {i}") for i in range(3)]
    assert [r.tier for r in results] == ["frontier"] * 3
    assert cache_count(metrics, "error") > 0
    assert frontier._redis_breaker.state == "open", "a down cache is skipped, not retried"
