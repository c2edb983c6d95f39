"""Deciding one escalated post: cache, single flight, provider, retries, breaker, budget.

Identical posts in flight in this process share one call (an asyncio future per cache
key); across processes a short Redis lock does the same. A verdict served to anyone but
the caller who paid for it has tier `cache` and costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, TypeVar

from escalation import prompt
from escalation.budget import Budget, Reservation
from escalation.cache import VerdictCache, cache_key
from escalation.providers import MAX_OUTPUT_TOKENS, Provider, ProviderVerdict
from modpipe.core.cost import CostModel
from modpipe.core.errors import (
    BudgetExhausted,
    CacheUnavailable,
    CircuitOpen,
    InvalidOutput,
    ProviderError,
    ProviderUnavailable,
)
from modpipe.core.metrics import Metrics
from modpipe.core.resilience import CircuitBreaker, retry
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
_UNAVAILABLE = object()


@dataclass(frozen=True, slots=True)
class Decided:
    """A final frontier-tier decision, ready to become a Verdict."""

    action: Literal["allow", "block"]
    categories: list[str]
    scores: dict[str, float]
    model: str
    tier: Literal["frontier", "cache"]
    cost_usd: float
    rationale: str = ""


def status_of(exc: ProviderError) -> str:
    """The `status` label of a failed provider call."""
    if isinstance(exc, ProviderUnavailable):
        return exc.status
    if isinstance(exc, InvalidOutput):
        return "invalid_output"
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, BudgetExhausted):
        return "budget"
    return "rejected"


def _from_cache(value: object) -> Decided | None:
    """A cached verdict as a `cache` decision; None for a miss, an outage or a stale shape."""
    if not isinstance(value, dict):
        return None
    try:
        return Decided(**value, tier="cache", cost_usd=0.0)
    except TypeError:
        log.warning("ignoring a cached verdict of another shape: %s", sorted(value))
        return None


class FrontierTier:
    """Decides escalated posts with a provider, behind the verdict cache."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider,
        cache: VerdictCache | None,
        budget: Budget,
        metrics: Metrics,
    ) -> None:
        self._settings = settings
        self._provider = provider
        self._cache = cache
        self._budget = budget
        self._metrics = metrics
        self._cost = CostModel(settings.prices)
        esc = settings.escalation
        self._breaker = CircuitBreaker(esc.breaker_failures, esc.breaker_cooldown_s)
        # Redis gets a breaker of its own: when it is down, skip it instead of paying a
        # timeout on every post.
        self._redis_breaker = CircuitBreaker(
            settings.redis.breaker_failures, settings.redis.breaker_cooldown_s
        )
        self._inflight: dict[str, asyncio.Future[Decided]] = {}

    @property
    def provider(self) -> Provider:
        return self._provider

    @property
    def cache(self) -> VerdictCache | None:
        """The verdict cache (None without Redis)."""
        return self._cache

    async def check_access(self) -> None:
        """At start: raise AccessError if Redis refuses our password, user or TLS."""
        if self._cache is not None:
            await self._cache.check_access(self._settings.redis)

    async def aclose(self) -> None:
        await self._provider.aclose()
        if self._cache is not None:
            await self._cache.aclose()

    async def decide(self, text: str) -> Decided:
        """The decision on `text`; raises ProviderError when no model could decide."""
        key = cache_key(
            self._settings.policy.version, self._provider.name, self._provider.model, text
        )
        while (shared := self._inflight.get(key)) is not None:
            try:
                decided = await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                continue  # the caller deciding it was cancelled, not this one: take over
            self._metrics.cache.labels("hit").inc()
            return replace(decided, tier="cache", cost_usd=0.0)
        future: asyncio.Future[Decided] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            decided = await self._decide_once(key, text)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]
        future.set_result(decided)
        return decided

    async def _redis(self, op: Callable[..., Awaitable[T]], *args: Any) -> T | object:
        """Run a cache operation; `_UNAVAILABLE` when Redis failed or its breaker is open."""
        try:
            self._redis_breaker.before_call()
            result = await op(*args)
        except CircuitOpen:
            self._metrics.cache.labels("error").inc()
            return _UNAVAILABLE
        except CacheUnavailable as exc:
            self._redis_breaker.on_failure()
            self._metrics.cache.labels("error").inc()
            log.warning("verdict cache unavailable, going on without it: %s", exc)
            return _UNAVAILABLE
        self._redis_breaker.on_success()
        return result

    async def _decide_once(self, key: str, text: str) -> Decided:
        cache = self._cache
        if cache is None:
            return await self._call(text)
        raw = await self._redis(cache.get, key)
        cached = _from_cache(raw)
        if cached is not None:
            self._metrics.cache.labels("hit").inc()
            return cached
        if raw is not _UNAVAILABLE:
            self._metrics.cache.labels("miss").inc()
        token = await self._redis(cache.lock, key)
        if token is None:  # another worker is deciding the same text: wait for its verdict
            waited = _from_cache(
                await self._redis(cache.wait, key, self._settings.redis.lock_ttl_s)
            )
            if waited is not None:
                self._metrics.cache.labels("hit").inc()
                return waited
        try:
            decided = await self._call(text)
            stored = {k: v for k, v in asdict(decided).items() if k not in ("tier", "cost_usd")}
            await self._redis(cache.put, key, stored)
            return decided
        finally:
            if isinstance(token, str):
                await self._redis(cache.unlock, key, token)

    def _estimate_usd(self, text: str) -> float:
        # An upper estimate, reserved before the call: the prompt at 2 characters per
        # token (dense scripts tokenize far worse than English's ~4) and a full reply.
        chars = sum(len(m["content"]) for m in prompt.messages(self._settings.policy, text))
        tokens_in = math.ceil(chars / 2) + 16  # + per-message framing
        return self._cost.frontier_usd(self._provider.model, tokens_in, MAX_OUTPUT_TOKENS)

    async def _call(self, text: str) -> Decided:
        provider = self._provider
        requests = self._metrics.provider_requests

        async def attempt() -> ProviderVerdict:
            verdict = await provider.decide(text)
            requests.labels(provider.name, "ok").inc()
            return verdict

        def failed(exc: ProviderError) -> None:
            requests.labels(provider.name, status_of(exc)).inc()
            log.info("provider=%s attempt failed: %s", provider.name, exc)

        reserved: Reservation | None = None
        if provider.paid:
            try:
                reserved = await self._budget.reserve(self._estimate_usd(text))
            except BudgetExhausted as exc:
                failed(exc)
                raise
        deadline = time.monotonic() + self._settings.escalation.deadline_s
        try:
            verdict = await retry(attempt, deadline, self._breaker, on_error=failed)
        except BaseException:
            if reserved is not None:  # nothing was billed for a call that never answered
                await self._budget.settle(reserved, 0.0)
            raise
        if reserved is not None:
            remaining = await self._budget.settle(reserved, verdict.cost_usd)
            self._metrics.budget_remaining.set(max(0.0, remaining))
        self._metrics.tokens.labels("frontier").inc(verdict.input_tokens + verdict.output_tokens)
        self._metrics.cost.labels("frontier").inc(verdict.cost_usd)
        return Decided(
            action=verdict.action,
            categories=verdict.categories,
            scores=verdict.scores,
            model=provider.model,
            tier="frontier",
            cost_usd=verdict.cost_usd,
            rationale=verdict.rationale,
        )


def build_frontier(settings: Settings, metrics: Metrics) -> FrontierTier | None:
    """The frontier tier from settings, or None when the provider is `none`."""
    from escalation.providers import build_provider

    provider = build_provider(settings)
    if provider is None:
        return None
    cache = VerdictCache.connect(settings.redis)
    # The budget counter lives on the state Redis: an evicted counter would restart at zero.
    budget = Budget(settings.escalation.daily_budget_usd, cache.state, settings.redis.key_prefix)
    metrics.budget_remaining.set(settings.escalation.daily_budget_usd)
    metrics.budget_daily.set(settings.escalation.daily_budget_usd)
    return FrontierTier(settings, provider, cache, budget, metrics)
