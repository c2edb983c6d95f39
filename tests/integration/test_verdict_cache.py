"""VerdictCache's lock protocol on the real Redis, and the unit tests' in-memory fake held to
the same contract (so FrontierTier's unit tests exercise the protocol the product uses)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from escalation.cache import VerdictCache
from tests.conftest import MakeSettings
from tests.unit.escalation.fakes import MemoryCache

VERDICT = {"action": "allow", "categories": [], "scores": {}, "model": "m", "rationale": ""}


@pytest.fixture(params=["redis", "memory"])
async def cache(request: pytest.FixtureRequest, make_settings: MakeSettings) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryCache()
        return
    real = VerdictCache.connect(make_settings().redis)
    try:
        yield real
    finally:
        await real.aclose()


async def test_one_holder_at_a_time_and_only_the_holder_unlocks(cache: Any) -> None:
    token = await cache.lock("k")
    assert token is not None
    assert await cache.lock("k") is None
    assert await cache.lock("other") is not None, "locks are per key"
    await cache.unlock("k", "not-the-token")
    assert await cache.lock("k") is None, "a stale token must not release the lock"
    await cache.unlock("k", token)
    assert await cache.lock("k") is not None


async def test_a_waiter_gets_the_holders_verdict(cache: Any) -> None:
    token = await cache.lock("k")
    waiter = asyncio.create_task(cache.wait("k", 10))
    await cache.put("k", VERDICT)
    await cache.unlock("k", token)
    assert await asyncio.wait_for(waiter, 10) == VERDICT
    assert await cache.get("k") == VERDICT


async def test_a_waiter_is_released_when_the_lock_goes_without_a_verdict(cache: Any) -> None:
    token = await cache.lock("k")
    waiter = asyncio.create_task(cache.wait("k", 10))
    await cache.unlock("k", token)  # the holder failed
    assert await asyncio.wait_for(waiter, 10) is None


async def test_a_waiter_gives_up_at_its_timeout(cache: Any) -> None:
    await cache.lock("k")
    assert await asyncio.wait_for(cache.wait("k", 0.2), 10) is None


async def test_a_crashed_holders_lock_expires(make_settings: MakeSettings) -> None:
    cache = VerdictCache.connect(make_settings(redis={"lock_ttl_s": 0.3}).redis)
    try:
        assert await cache.lock("k") is not None  # and never unlocked
        assert await asyncio.wait_for(cache.wait("k", 10), 10) is None
        assert await cache.lock("k") is not None
    finally:
        await cache.aclose()
