"""The daily budget for paid frontier calls, shared by every escalator through Redis.

A call reserves its estimated cost before it is made and settles the real cost after.
The reservation is one Redis script (check and add in one step), so concurrent callers
in any number of workers cannot all pass a check before any of them has added: a
reservation is granted only while today's total is under the cap, hence the total ends
at most one call's estimate above it (the last reservation granted), as long as no call
costs more than its estimate.

Every attempt reserves and settles on its own (escalation/frontier.py): a retry is a
second reservation, and a failed attempt the provider billed settles at its bill.

When the shared counter cannot be reached, paid calls stop: `reserve` refuses until Redis
answers again, and the post goes to human review. The alternative, each escalator
spending a share of the cap on a local count, needs every escalator to know how many
there are, which autoscaling changes under it; a wrong share breaks the cap, a refusal
never does. (Settlements that fail keep the whole reservation in the shared total: an
overcount, never an undercount.)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import BudgetExhausted

log = logging.getLogger(__name__)

_TTL_S = 2 * 86400

# KEYS[1] today's total; ARGV: estimate, cap, ttl. Returns {granted 0|1, total as text}.
_RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent >= tonumber(ARGV[2]) then
  return {0, tostring(spent)}
end
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, total}
"""


def _today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


class Reservation(NamedTuple):
    """Dollars reserved on one UTC day; settled against that day, even after midnight."""

    day: str
    usd: float


class Budget:
    """Dollars per UTC day for paid calls, shared by all workers through Redis; without a
    Redis (one process, tests) counted locally. A Redis that fails refuses reservations."""

    def __init__(
        self, daily_usd: float, redis: aioredis.Redis | None = None, key_prefix: str = "modpipe"
    ) -> None:
        self.daily_usd = daily_usd
        self._redis = redis
        self._prefix = key_prefix
        self._local: dict[str, float] = {}  # this process's reservations and settlements
        self._shared = 0.0  # the shared total last seen
        self._reserve = redis.register_script(_RESERVE) if redis is not None else None

    def _key(self, day: str) -> str:
        return f"{self._prefix}:budget:{day}"

    def _count_locally(self, day: str, usd: float) -> float:
        self._local[day] = self._local.get(day, 0.0) + usd
        for old in sorted(self._local)[:-2]:  # bounded: a late settlement may name yesterday
            del self._local[old]
        return self._local[day]

    async def spent(self) -> float:
        """Dollars spent or reserved today: the larger of the shared and the local count."""
        day = _today()
        local = self._local.get(day, 0.0)
        if self._redis is None:
            return local
        try:
            shared = float(await self._redis.get(self._key(day)) or 0.0)
        except RedisError:
            return max(local, self._shared)
        return max(shared, local)

    async def reserve(self, estimate_usd: float) -> Reservation:
        """Reserve `estimate_usd` for a call about to be made; what to settle later.

        Raises BudgetExhausted when today's total has reached the cap, or when the shared
        total cannot be reached.
        """
        day = _today()
        if self._reserve is not None:
            try:
                granted, total = await self._reserve(
                    keys=[self._key(day)], args=[estimate_usd, self.daily_usd, _TTL_S]
                )
            except RedisError as exc:
                log.warning("budget unavailable (Redis: %s); paid calls stop", exc)
                raise BudgetExhausted(
                    f"the shared budget cannot be reached ({exc}); paid calls stop until it can"
                ) from exc
            else:
                self._shared = float(total)
                if not granted:
                    raise self._exhausted()
                self._count_locally(day, estimate_usd)
                return Reservation(day, estimate_usd)
        if max(self._local.get(day, 0.0), self._shared) >= self.daily_usd:
            raise self._exhausted()
        self._count_locally(day, estimate_usd)  # no await since the check: atomic here
        return Reservation(day, estimate_usd)

    async def settle(self, reserved: Reservation, actual_usd: float) -> float:
        """Replace a reservation by what the call cost (0 if it failed); dollars left today."""
        day = reserved.day
        delta = actual_usd - reserved.usd
        spent = self._count_locally(day, delta)
        if self._redis is not None and delta != 0:
            key = self._key(day)
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incrbyfloat(key, delta)
                    pipe.expire(key, _TTL_S)
                    shared, _ = await pipe.execute()
                self._shared = float(shared)
            except RedisError as exc:
                # The shared total keeps the whole reservation: an overcount, never an
                # undercount.
                log.warning("budget settlement not shared (Redis: %s)", exc)
        return self.daily_usd - max(spent, self._shared)

    def _exhausted(self) -> BudgetExhausted:
        return BudgetExhausted(f"daily budget of ${self.daily_usd:.2f} is spent")
