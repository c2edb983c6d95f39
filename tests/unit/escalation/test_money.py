"""The money path with fakes at our own seams: every attempt reserved and settled at its
bill, deterministic failures final and out of the breaker's count, single flight that
re-reads the cache under the lock and never calls without it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from escalation.budget import Budget
from escalation.frontier import FrontierTier
from escalation.providers import ProviderVerdict
from modpipe.core import resilience
from modpipe.core.errors import (
    BudgetExhausted,
    InvalidOutput,
    ProviderError,
    ProviderUnavailable,
)
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from tests.unit.escalation.fakes import MemoryCache

TIMEOUT_S = 10.0
BILL = 0.0004  # what the fake provider bills for an answer (under its estimate, ~$0.001)


class PaidProvider:
    """A paid provider that plays `script` (an outcome per call, then `then`)."""

    name = "paid"
    model = "gpt-4.1-mini"
    paid = True
    fingerprint = "paid-shape"

    def __init__(self, script: list[str], then: str = "ok") -> None:
        self.script = list(script)
        self.then = then
        self.calls = 0
        self.billed = 0.0

    async def decide(self, text: str) -> ProviderVerdict:
        self.calls += 1
        outcome = self.script.pop(0) if self.script else self.then
        if outcome == "ok":
            self.billed += BILL
            return ProviderVerdict("allow", [], {}, "fine", 100, 10, BILL)
        if outcome in ("invalid", "refusal", "invalid-retryable"):
            self.billed += BILL
            exc = InvalidOutput(outcome, retryable=outcome == "invalid-retryable")
            exc.billed_usd, exc.billed_input_tokens, exc.billed_output_tokens = BILL, 100, 10
            raise exc
        if outcome == "timeout":  # the server may have finished: billed, bill unseen
            self.billed += BILL
            raise ProviderUnavailable("timed out", status="timeout")
        if outcome == "5xx":
            raise ProviderUnavailable("server error 500", status="5xx")
        if outcome == "400":
            raise ProviderError("request rejected (400)")
        raise AssertionError(outcome)

    async def aclose(self) -> None:
        pass


def frontier(
    make_settings: Any,
    provider: PaidProvider,
    budget: Budget,
    metrics: Metrics,
    cache: MemoryCache | None = None,
    **escalation: Any,
) -> FrontierTier:
    settings: Settings = make_settings(
        escalation={"deadline_s": 5.0, "breaker_failures": 3, **escalation}
    )
    return FrontierTier(settings, provider, cache, budget, metrics)  # type: ignore[arg-type]


def cost_metric(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("modpipe_cost_usd_total", {"tier": "frontier"}) or 0


@pytest.mark.parametrize("fault", ["invalid", "refusal"])
async def test_a_billed_failure_is_settled_at_its_bill_and_counted(
    make_settings: Any, fault: str
) -> None:
    provider, budget, metrics = PaidProvider([fault]), Budget(100.0), Metrics()
    tier = frontier(make_settings, provider, budget, metrics)
    with pytest.raises(InvalidOutput):
        await tier.decide("a post")
    assert await budget.spent() == pytest.approx(BILL)  # not $0: the provider billed it
    assert cost_metric(metrics) == pytest.approx(BILL)


async def test_a_timeout_is_settled_at_the_whole_estimate(make_settings: Any) -> None:
    provider, budget, metrics = PaidProvider([], then="timeout"), Budget(100.0), Metrics()
    # The breaker stays out of it: how many attempts fit in the deadline depends on the load.
    tier = frontier(make_settings, provider, budget, metrics, deadline_s=0.5, breaker_failures=1000)
    estimate = tier._estimate_usd("a post")
    with pytest.raises(ProviderUnavailable):
        await tier.decide("a post")
    # Each timed-out attempt may have been billed; we cannot see for how much.
    assert provider.calls >= 1
    assert await budget.spent() == pytest.approx(provider.calls * estimate)


@pytest.mark.parametrize("fault", ["invalid", "refusal", "400"])
async def test_deterministic_failures_are_not_retried_nor_open_the_breaker(
    make_settings: Any, fault: str
) -> None:
    provider, budget = PaidProvider([fault] * 10), Budget(100.0)
    tier = frontier(make_settings, provider, budget, Metrics(), breaker_failures=3)
    for i in range(10):  # a wave of posts the model refuses
        with pytest.raises(ProviderError):
            await tier.decide(f"post {i}")
    assert provider.calls == 10  # once each: asked again, it would answer the same
    assert tier._breaker.state == "closed"
    assert (await tier.decide("a fine post")).tier == "frontier"


async def test_a_reasoning_models_invalid_reply_is_retried_and_each_attempt_billed(
    make_settings: Any,
) -> None:
    provider, budget, metrics = PaidProvider(["invalid-retryable"] * 2), Budget(100.0), Metrics()
    tier = frontier(make_settings, provider, budget, metrics)
    decided = await tier.decide("a post")
    assert decided.tier == "frontier" and provider.calls == 3
    assert await budget.spent() == pytest.approx(3 * BILL)
    assert cost_metric(metrics) == pytest.approx(provider.billed)


async def test_every_retry_reserves_so_the_cap_holds_within_one_estimate(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resilience, "BACKOFF_BASE_S", 0.001)
    provider, metrics = PaidProvider([], then="invalid-retryable"), Metrics()
    probe = frontier(make_settings, provider, Budget(100.0), metrics)
    estimate = probe._estimate_usd("a post")
    budget = Budget(2.5 * estimate)
    tier = frontier(
        make_settings, provider, budget, metrics, deadline_s=30.0, breaker_failures=1000
    )
    with pytest.raises(BudgetExhausted):
        await asyncio.wait_for(tier.decide("a post"), TIMEOUT_S)
    # Granted while under the cap: the reservations before it are what could be spent.
    assert await budget.spent() <= budget.daily_usd + estimate
    assert provider.billed <= budget.daily_usd + estimate and provider.calls > 2


async def test_transient_failures_are_retried_unbilled(make_settings: Any) -> None:
    provider, budget, metrics = PaidProvider(["5xx", "5xx"]), Budget(100.0), Metrics()
    tier = frontier(make_settings, provider, budget, metrics)
    assert (await tier.decide("a post")).tier == "frontier"
    assert provider.calls == 3
    assert await budget.spent() == pytest.approx(BILL)


class RacingCache(MemoryCache):
    """Another worker stores the verdict and unlocks between our miss and our lock."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        self.gets += 1
        if self.gets == 1:
            found = self.verdicts.get(key)
            self.verdicts[key] = {
                "action": "block",
                "categories": ["harassment"],
                "scores": {"harassment": 0.9},
                "model": "other-worker",
            }
            return found
        return await super().get(key)


async def test_the_holder_reads_the_cache_again_after_taking_the_lock(
    make_settings: Any,
) -> None:
    provider, cache = PaidProvider([]), RacingCache()
    tier = frontier(make_settings, provider, Budget(100.0), Metrics(), cache)
    decided = await tier.decide("a post")
    assert (decided.tier, decided.model) == ("cache", "other-worker")
    assert provider.calls == 0 and cache.locks == {}


async def test_a_waiter_never_calls_without_the_lock(make_settings: Any) -> None:
    provider, cache = PaidProvider([]), MemoryCache()
    tier = frontier(
        make_settings, provider, Budget(100.0), Metrics(), cache, timeout_s=0.2, deadline_s=0.2
    )
    cache.locks["x"] = "held-by-another-worker-forever"
    cache.lock_ttl_s = 0.1
    real_lock = cache.lock

    async def lock(key: str) -> str | None:  # every key is held elsewhere
        cache.locks.setdefault(key, "another")
        return await real_lock(key)

    cache.lock = lock  # type: ignore[method-assign]
    with pytest.raises(ProviderUnavailable, match="held this text's lock"):
        await asyncio.wait_for(tier.decide("a post"), TIMEOUT_S)
    assert provider.calls == 0


async def test_no_rationale_reaches_the_cache(make_settings: Any) -> None:
    provider, cache = PaidProvider([]), MemoryCache()
    tier = frontier(make_settings, provider, Budget(100.0), Metrics(), cache)
    await tier.decide("a post that the rationale might quote")
    (stored,) = cache.verdicts.values()
    assert "rationale" not in stored
    assert "quote" not in repr(stored)
