"""What the compliance workers remember in the state Redis (noeviction, persisted).

Keys under `{redis.key_prefix}:dsa`:
- `notice:{post_id}`: the notice that reported a post (its source type for statements),
  kept `appeals.window_days` past the notice;
- `verdicts:{post_id}`: every verdict a post had, by verdict id (what an appeal names and
  what its reviewer sees), kept `appeals.window_days` past the latest;
- `built:{puid}`: a statement already published (a repeated verdict builds no second one);
- `sent:{puid}`: a statement handed to the database with an unknown outcome (a timeout, a
  5xx, a crash): it is looked up (existing-puid) before it is sent again;
- `stored:{puid}`: the database answered 201, or 422 for a duplicate puid, or
  existing-puid found it: never sent again.
Every Redis failure is ReviewStoreUnavailable's sibling, `LedgerUnavailable`, retried by
the workers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import ModpipeError

DAY_S = 86400


class LedgerUnavailable(ModpipeError):
    """The state Redis failed or timed out (the worker waits and retries)."""

    retryable = True


class Ledger:
    """The compliance records in Redis; keys built from `key_prefix`."""

    def __init__(self, client: aioredis.Redis, key_prefix: str, keep_days: float) -> None:
        self.redis = client
        self.prefix = f"{key_prefix}:dsa"
        self.keep_s = int(keep_days * DAY_S)

    async def _do(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise LedgerUnavailable(f"redis {what} failed: {exc}") from exc

    # -- notices and verdicts ---------------------------------------------------------------

    async def record_notice(self, post_id: str, notice: dict[str, Any]) -> None:
        """Remember the notice that reported `post_id` (the first one counts)."""
        key = f"{self.prefix}:notice:{post_id}"
        await self._do("notice", self.redis.set(key, json.dumps(notice), nx=True, ex=self.keep_s))

    async def notice(self, post_id: str) -> dict[str, Any] | None:
        """The notice that reported `post_id`, or None (own initiative)."""
        raw = await self._do("notice", self.redis.get(f"{self.prefix}:notice:{post_id}"))
        return json.loads(raw) if raw else None

    async def record_verdict(self, post_id: str, verdict_id: str, raw: str) -> None:
        """Add a verdict to the post's history."""
        key = f"{self.prefix}:verdicts:{post_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, verdict_id, raw)
            pipe.expire(key, self.keep_s)
            await self._do("verdicts", pipe.execute())

    async def record_verdicts(self, verdicts: list[tuple[str, str, str]]) -> None:
        """Add (post_id, verdict_id, raw) verdicts to their posts' histories, in one trip."""
        if not verdicts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for post_id, verdict_id, raw in verdicts:
                key = f"{self.prefix}:verdicts:{post_id}"
                pipe.hset(key, verdict_id, raw)
                pipe.expire(key, self.keep_s)
            await self._do("verdicts", pipe.execute())

    async def notices(self, post_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The notices that reported any of `post_ids`, by post id, in one trip."""
        if not post_ids:
            return {}
        keys = [f"{self.prefix}:notice:{p}" for p in post_ids]
        got = await self._do("notice", self.redis.mget(keys))
        return {p: json.loads(v) for p, v in zip(post_ids, got, strict=True) if v}

    async def verdicts(self, post_id: str) -> dict[str, dict[str, Any]]:
        """Every verdict the post had, by verdict id."""
        got = await self._do("verdicts", self.redis.hgetall(f"{self.prefix}:verdicts:{post_id}"))
        return {_text(k): json.loads(v) for k, v in got.items()}

    # -- statements -------------------------------------------------------------------------

    async def built(self, puids: Iterable[str]) -> set[str]:
        """The puids among `puids` whose statement was already published."""
        return await self._members("built", list(puids))

    async def mark_built(self, puids: Iterable[str]) -> None:
        await self._mark("built", list(puids))

    async def stored(self, puids: Iterable[str]) -> set[str]:
        """The puids among `puids` the database holds."""
        return await self._members("stored", list(puids))

    async def mark_stored(self, puids: Iterable[str]) -> None:
        await self._mark("stored", list(puids))

    async def sent(self, puids: Iterable[str]) -> set[str]:
        """The puids among `puids` sent before with an unknown outcome."""
        return await self._members("sent", list(puids))

    async def mark_sent(self, puids: Iterable[str]) -> None:
        await self._mark("sent", list(puids))

    async def _members(self, kind: str, puids: list[str]) -> set[str]:
        if not puids:
            return set()
        keys = [f"{self.prefix}:{kind}:{p}" for p in puids]
        got = await self._do(kind, self.redis.mget(keys))
        return {p for p, v in zip(puids, got, strict=True) if v is not None}

    async def _mark(self, kind: str, puids: list[str]) -> None:
        if not puids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in puids:
                pipe.set(f"{self.prefix}:{kind}:{p}", 1, ex=self.keep_s)
            await self._do(kind, pipe.execute())

    async def aclose(self) -> None:
        await self.redis.aclose()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
