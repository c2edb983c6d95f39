"""The Redis verdict cache: repeated content is decided once per policy, provider and model.

Keys are a SHA-256 of (policy version, provider, model, what shaped the verdict, normalized
text): "what shaped the verdict" is the provider's fingerprint, a hash of its prompt,
output schema, thresholds and category mappings, so changing any of them starts a cold
cache. Raw text never reaches Redis; values are the verdict without the post and without
the model's rationale (which may quote it). A lock per key makes concurrent identical
posts across workers cost one call: the holder calls the provider, keeping the lock alive
(`extend`) for as long as the call runs, and the others wait for its cached verdict.
Every Redis failure becomes CacheUnavailable, and callers carry on without the cache.

Two Redis roles: verdicts may be evicted (the cache Redis, `redis.cache_url`, runs
allkeys-lru), while locks and the daily budget live on the state Redis (`redis.url`,
noeviction), so memory pressure from cached verdicts can never drop a lock or the
budget counter. Without `cache_url` both roles share one server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import CacheUnavailable
from modpipe.core.redis_client import check_redis_access, connect_redis
from modpipe.core.settings import RedisSettings
from modpipe.core.text import normalize

_POLL_S = 0.05

# Push the lock's expiry out if we still hold it, or take it back if it expired and
# nobody took it meanwhile (a stalled event loop); 0 once another caller holds it.
_EXTEND = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not holder then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
# Delete the lock only if we still hold it (it may have expired and been taken since).
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


def cache_key(
    policy_version: str, provider: str, model: str, text: str, shaped_by: str = ""
) -> str:
    """The hex digest that names a verdict in the cache; `shaped_by` is the provider's
    fingerprint of everything besides the text that decides its verdict."""
    material = "\x1f".join((policy_version, provider, model, shaped_by, normalize(text)))
    return hashlib.sha256(material.encode()).hexdigest()


class VerdictCache:
    """Verdicts by cache key in Redis, with a short per-key lock for single flight."""

    def __init__(
        self,
        client: aioredis.Redis,
        settings: RedisSettings,
        state: aioredis.Redis | None = None,
    ) -> None:
        self._redis = client  # verdicts: evictable
        self._state = client if state is None else state  # locks: never evicted
        self._prefix = settings.key_prefix
        self._ttl_s = settings.cache_ttl_s
        self._lock_ms = int(settings.lock_ttl_s * 1000)
        self._release = self._state.register_script(_RELEASE)
        self._extend = self._state.register_script(_EXTEND)

    @classmethod
    def connect(cls, settings: RedisSettings) -> VerdictCache:
        """Verdicts on `settings.cache_url` (else `url`), locks on `url`; short timeouts,
        so an outage degrades fast."""

        state = connect_redis(settings)
        cache = connect_redis(settings, settings.cache_url) if settings.cache_url else state
        return cls(cache, settings, state)

    @property
    def client(self) -> aioredis.Redis:
        """The cache Redis (verdicts; may evict)."""
        return self._redis

    @property
    def state(self) -> aioredis.Redis:
        """The state Redis (locks; shared with the budget; must not evict)."""
        return self._state

    async def check_access(self, settings: RedisSettings) -> None:
        """Raise AccessError if either Redis role refuses our credentials or TLS."""
        await check_redis_access(self._state, settings, settings.url)
        if self._redis is not self._state and settings.cache_url:
            await check_redis_access(self._redis, settings, settings.cache_url)

    async def ping(self) -> None:
        """Raise CacheUnavailable unless both Redis roles answer (readiness)."""
        try:
            await self._state.ping()
            if self._redis is not self._state:
                await self._redis.ping()
        except RedisError as exc:
            raise CacheUnavailable(f"redis ping failed: {exc}") from exc

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached verdict, or None."""
        try:
            raw = await self._redis.get(f"{self._prefix}:verdict:{key}")
        except RedisError as exc:
            raise CacheUnavailable(f"redis get failed: {exc}") from exc
        return json.loads(raw) if raw else None

    async def put(self, key: str, verdict: dict[str, Any]) -> None:
        """Store a verdict for the cache TTL."""
        try:
            await self._redis.set(
                f"{self._prefix}:verdict:{key}", json.dumps(verdict), ex=self._ttl_s
            )
        except RedisError as exc:
            raise CacheUnavailable(f"redis set failed: {exc}") from exc

    async def lock(self, key: str) -> str | None:
        """A token if we now hold the key's lock, None if another caller does."""
        token = uuid.uuid4().hex
        try:
            got = await self._state.set(
                f"{self._prefix}:lock:{key}", token, nx=True, px=self._lock_ms
            )
        except RedisError as exc:
            raise CacheUnavailable(f"redis lock failed: {exc}") from exc
        return token if got else None

    @property
    def lock_ttl_s(self) -> float:
        """How long a lock lives unless its holder extends it."""
        return self._lock_ms / 1000

    async def extend(self, key: str, token: str) -> bool:
        """Give the key's lock a full TTL again; False if we no longer hold it."""
        try:
            extended = await self._extend(
                keys=[f"{self._prefix}:lock:{key}"], args=[token, self._lock_ms]
            )
        except RedisError as exc:
            raise CacheUnavailable(f"redis extend failed: {exc}") from exc
        return bool(extended)

    async def unlock(self, key: str, token: str) -> None:
        """Release the key's lock if we still hold it."""
        try:
            await self._release(keys=[f"{self._prefix}:lock:{key}"], args=[token])
        except RedisError as exc:
            raise CacheUnavailable(f"redis unlock failed: {exc}") from exc

    async def wait(self, key: str, timeout_s: float) -> dict[str, Any] | None:
        """Wait for another caller's verdict: it, or None once its lock is gone or time is up."""
        deadline = time.monotonic() + timeout_s
        lock = f"{self._prefix}:lock:{key}"
        while time.monotonic() < deadline:
            verdict = await self.get(key)
            if verdict is not None:
                return verdict
            try:
                if not await self._state.exists(lock):
                    return await self.get(key)
            except RedisError as exc:
                raise CacheUnavailable(f"redis exists failed: {exc}") from exc
            await asyncio.sleep(_POLL_S)
        return None

    async def aclose(self) -> None:
        await self._redis.aclose()
        if self._state is not self._redis:
            await self._state.aclose()
