"""The daily budget for paid frontier calls, shared by every escalator through Redis."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import BudgetExhausted

log = logging.getLogger(__name__)


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
