"""Retries with jittered backoff inside a deadline, a circuit breaker, and a daily budget."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.errors import BudgetExhausted, CircuitOpen, ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `cooldown_s` lets one probe through.

    closed --failures--> open --cooldown--> half-open --probe ok--> closed
                                               └──probe fails──> open
    """

    def __init__(self, failures: int, cooldown_s: float) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._cooled_down() else "open"

    def _cooled_down(self) -> bool:
        return self._opened_at is not None and (
            time.monotonic() - self._opened_at >= self._cooldown_s
        )

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go out now."""
        if self._opened_at is None:
            return
        if not self._cooled_down():
            remaining = self._cooldown_s - (time.monotonic() - self._opened_at)
            raise CircuitOpen("provider circuit is open", retry_after=remaining)
        if self._probing:
            raise CircuitOpen("provider circuit is half-open; a probe is in flight", 0.5)
        self._probing = True

    def on_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def on_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self._threshold:
            if self._opened_at is None or self._probing:
                log.warning("circuit opened after %d consecutive failures", self._consecutive)
            self._opened_at = time.monotonic()
        self._probing = False


async def retry(
    call: Callable[[], Awaitable[T]],
    deadline: float,
    breaker: CircuitBreaker,
    on_error: Callable[[ProviderError], None] = lambda exc: None,
    rng: random.Random | None = None,
) -> T:
    """Run `call` until it succeeds, a non-retryable error, or `deadline` (time.monotonic()).

    Between tries: full-jitter exponential backoff, but never less than the server's
    Retry-After or the breaker's remaining cool-down.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            breaker.before_call()
            try:
                result = await call()
            except ProviderError:
                breaker.on_failure()
                raise
            except BaseException:
                breaker.on_failure()  # cancelled or crashed: never leave a probe hanging
                raise
            breaker.on_success()
            return result
        except ProviderError as exc:
            on_error(exc)
            if not exc.retryable:
                raise
            backoff = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
            delay = max(backoff, getattr(exc, "retry_after", None) or 0.0)
            if time.monotonic() + delay >= deadline:
                raise
            await asyncio.sleep(delay)
            attempt += 1


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Budget:
    """Dollars per UTC day for paid calls, shared by all workers through Redis when it
    answers, and counted locally when it does not (so an outage never means unlimited)."""

    def __init__(
        self, daily_usd: float, redis: aioredis.Redis | None = None, key_prefix: str = "modpipe"
    ) -> None:
        self.daily_usd = daily_usd
        self._redis = redis
        self._prefix = key_prefix
        self._local: dict[str, float] = {}

    async def spent(self) -> float:
        """Dollars spent today: the larger of the shared and the local count."""
        day = _today()
        local = self._local.get(day, 0.0)
        if self._redis is None:
            return local
        try:
            shared = float(await self._redis.get(f"{self._prefix}:budget:{day}") or 0.0)
        except RedisError:
            return local
        return max(shared, local)

    async def check(self) -> None:
        """Raise BudgetExhausted if today's budget is spent."""
        if await self.spent() >= self.daily_usd:
            raise BudgetExhausted(f"daily budget of ${self.daily_usd:.2f} is spent")

    async def add(self, usd: float) -> float:
        """Record a call's cost; returns the dollars left today."""
        day = _today()
        self._local = {day: self._local.get(day, 0.0) + usd}  # older days are dropped
        if self._redis is None or usd <= 0:
            return self.daily_usd - await self.spent()
        spent = self._local[day]
        key = f"{self._prefix}:budget:{day}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, usd)
                pipe.expire(key, 2 * 86400)
                shared, _ = await pipe.execute()
            spent = max(spent, float(shared))
        except RedisError as exc:
            log.warning("budget not shared (Redis: %s); counting locally", exc)
        return self.daily_usd - spent
