"""Deciding one escalated post: cache, single flight, provider, retries, breaker, budget.

Identical posts in flight in this process share one call (an asyncio future per cache
key); across processes a Redis lock does the same. The holder re-reads the cache once it
has the lock (another worker may have stored the verdict and unlocked in between), keeps
the lock alive for as long as its call runs, and stores the verdict before unlocking; a
waiter calls the provider only after taking the lock itself. A verdict served to anyone
but the caller who paid for it has tier `cache` and costs nothing.

Money: every attempt reserves its estimate and settles at what the provider billed for
it: a verdict's usage, the usage a refusal or a schema-breaking reply carried, the whole
estimate for a timeout (the server may have finished; we cannot know), nothing for a
refused connection, a 429 or a 5xx. The frontier cost metric counts the same settled
amounts. Deterministic failures (a refusal, a schema-breaking reply at temperature 0, a
400) are final: not retried, and the breaker reads them as what they are, a provider that
answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
class _Final:
    """An attempt's failure that asking again would not change (returned, not raised, so
    that retry() neither retries it nor counts it against the provider's health)."""

    error: ProviderError


def _deterministic(exc: ProviderError) -> bool:
    # The provider answered, and would answer the same: a 400, a refusal, an invalid reply
    # at temperature 0. Budget and breaker refusals are decided here, not by the provider.
    return not exc.retryable and not isinstance(exc, BudgetExhausted | CircuitOpen)


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
            self._settings.policy.version,
            self._provider.name,
            self._provider.model,
            text,
            getattr(self._provider, "fingerprint", ""),
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
        # A waiter waits at most as long as a holder may take (its deadline and a last
        # attempt's timeout), then gives up: it never calls without the lock.
        esc = self._settings.escalation
        give_up = time.monotonic() + esc.deadline_s + esc.timeout_s + cache.lock_ttl_s
        while True:
            token = await self._redis(cache.lock, key)
            if token is _UNAVAILABLE:
                # No Redis, no lock to take: a paid provider's budget lives there too and
                # refuses (paid calls stop); a free one is called.
                return await self._call(text)
            if isinstance(token, str):
                return await self._holding(cache, key, token, text)
            left = give_up - time.monotonic()
            if left <= 0:
                raise ProviderUnavailable(
                    "another escalator held this text's lock past its deadline", "timeout"
                )
            waited = await self._redis(cache.wait, key, left)
            if waited is _UNAVAILABLE:
                return await self._call(text)
            decided = _from_cache(waited)
            if decided is not None:
                self._metrics.cache.labels("hit").inc()
                return decided
            # The lock went without a verdict (its holder failed): take it and decide.

    async def _holding(self, cache: VerdictCache, key: str, token: str, text: str) -> Decided:
        """Decide `text` under the lock `token`, kept alive until the verdict is stored."""
        done = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lock(cache, key, token, done))
        try:
            # Another worker may have stored the verdict and unlocked since our miss.
            again = _from_cache(await self._redis(cache.get, key))
            if again is not None:
                self._metrics.cache.labels("hit").inc()
                return again
            decided = await self._call(text)
            stored = {
                k: v
                for k, v in asdict(decided).items()
                if k not in ("tier", "cost_usd", "rationale")  # the rationale may quote the post
            }
            await self._redis(cache.put, key, stored)
            return decided
        finally:
            # Stopped, never cancelled: a redis-py command cancelled mid-flight can hang.
            done.set()
            await asyncio.shield(keeper)  # a second cancel leaves it to finish on its own
            await self._redis(cache.unlock, key, token)

    async def _keep_lock(
        self, cache: VerdictCache, key: str, token: str, done: asyncio.Event
    ) -> None:
        """Extend the lock every quarter of its TTL until `done`, so a call of any length
        holds it."""
        every_s = cache.lock_ttl_s / 4
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), every_s)
            if done.is_set():
                return
            try:
                if not await cache.extend(key, token):
                    log.warning("lost the single-flight lock key=%s during a call", key[:16])
                    return
            except CacheUnavailable as exc:
                log.warning("could not extend the single-flight lock key=%s: %s", key[:16], exc)

    def _estimate_usd(self, text: str) -> float:
        # An upper bound, reserved before each attempt: byte-level BPE tokenizers never
        # make more tokens than the UTF-8 bytes they read (dense scripts and emoji come
        # close; English is ~4 bytes a token), plus per-message framing and a full reply.
        size = sum(len(m["content"].encode()) for m in prompt.messages(self._settings.policy, text))
        return self._cost.frontier_usd(self._provider.model, size + 16, MAX_OUTPUT_TOKENS)

    async def _settle(self, reserved: Reservation | None, usd: float, tokens: int = 0) -> None:
        """Settle one attempt at `usd`, and count it: the cost metric is what we paid."""
        if reserved is not None:
            remaining = await self._budget.settle(reserved, usd)
            self._metrics.budget_remaining.set(max(0.0, remaining))
        if tokens:
            self._metrics.tokens.labels("frontier").inc(tokens)
        if usd:
            self._metrics.cost.labels("frontier").inc(usd)

    async def _call(self, text: str) -> Decided:
        provider = self._provider
        requests = self._metrics.provider_requests
        estimate = self._estimate_usd(text) if provider.paid else 0.0
        pending: list[Reservation] = []

        def failed(exc: ProviderError) -> None:
            requests.labels(provider.name, status_of(exc)).inc()
            log.info("provider=%s attempt failed: %s", provider.name, exc)

        if provider.paid:
            try:
                pending.append(await self._budget.reserve(estimate))
            except BudgetExhausted as exc:
                failed(exc)
                raise

        async def attempt() -> ProviderVerdict | _Final:
            if provider.paid and not pending:  # a retry: a reservation of its own
                try:
                    pending.append(await self._budget.reserve(estimate))
                except BudgetExhausted as exc:
                    failed(exc)
                    return _Final(exc)
            reserved = pending.pop() if pending else None
            try:
                verdict = await provider.decide(text)
            except ProviderError as exc:
                await self._settle(reserved, *_billed(exc, estimate))
                if _deterministic(exc):
                    failed(exc)
                    return _Final(exc)
                raise
            except BaseException:
                # Cancelled or crashed mid-call: the server may have finished and billed.
                await asyncio.shield(self._settle(reserved, estimate))
                raise
            await self._settle(
                reserved, verdict.cost_usd, verdict.input_tokens + verdict.output_tokens
            )
            requests.labels(provider.name, "ok").inc()
            return verdict

        deadline = time.monotonic() + self._settings.escalation.deadline_s
        try:
            outcome = await retry(attempt, deadline, self._breaker, on_error=failed)
        finally:
            for unused in pending:  # reserved, but the breaker let no call out
                await self._budget.settle(unused, 0.0)
        if isinstance(outcome, _Final):
            raise outcome.error
        return Decided(
            action=outcome.action,
            categories=outcome.categories,
            scores=outcome.scores,
            model=provider.model,
            tier="frontier",
            cost_usd=outcome.cost_usd,
            rationale=outcome.rationale,
        )


def _billed(exc: ProviderError, estimate_usd: float) -> tuple[float, int]:
    """What a failed attempt cost, and its tokens: its bill when the provider sent one;
    the whole estimate for a timeout (the server may have finished); else nothing (the
    request was refused before any work: connection, 429, 5xx, 400)."""
    if exc.billed_usd or exc.billed_input_tokens or exc.billed_output_tokens:
        return exc.billed_usd, exc.billed_input_tokens + exc.billed_output_tokens
    if isinstance(exc, ProviderUnavailable) and exc.status == "timeout":
        return estimate_usd, 0
    return 0.0, 0


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
