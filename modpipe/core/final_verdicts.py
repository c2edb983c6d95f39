"""The first final verdict per post, kept on the state Redis: the final verdict.

A post can come back: a batch aborted by a crash, a zombie fenced mid-batch, a platform
that published the same post twice. Deciding it again could give another answer (a
batch-dependent score near a band edge, a provider that is back after a fallback) and a
frontier call paid twice. So each tier claims the post's first final outcome here before
publishing it, and publishes whatever the claim returns: its own outcome if it was first,
else the recorded one, byte for byte. Claims for a batch are one round trip (a script with
SET NX GET per post). The bytes are those of the verdict record, and for a `review`
outcome the reason and detail its review item is rebuilt from (no post text is stored).

Redis down is degraded, not stopped: a claim then answers None and the caller publishes
its own outcome, which Kafka transactions still keep to one per delivery. A breaker
(`redis.breaker_*`) skips the store while it is down instead of waiting on every batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import CircuitOpen
from modpipe.core.redis_client import connect_redis
from modpipe.core.resilience import CircuitBreaker
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

# KEYS: one per post; ARGV[1]: TTL seconds; ARGV[2..]: each post's outcome, or "" to only
# read. Returns, per post, the outcome recorded before this call, or false.
_CLAIM = """
local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local outcome = ARGV[i + 1]
  if outcome == '' then
    out[i] = redis.call('GET', key)
  else
    out[i] = redis.call('SET', key, outcome, 'NX', 'GET', 'EX', ttl)
  end
end
return out
"""


class Outcome(msgspec.Struct, frozen=True, array_like=True):
    """What a post's first final decision published: the verdict's bytes and, when it went
    to people, the review item's reason and detail."""

    verdict: bytes
    review_reason: str | None = None
    review_detail: str = ""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Outcome).decode


class FinalVerdicts:
    """Claims and reads first final outcomes on the state Redis (`redis.url`)."""

    def __init__(
        self, client: aioredis.Redis, key_prefix: str, ttl_s: int, breaker: CircuitBreaker
    ) -> None:
        self._client = client
        self._prefix = f"{key_prefix}:final:"
        self._ttl = ttl_s
        self._breaker = breaker
        self._claim = client.register_script(_CLAIM)

    @classmethod
    def open(cls, settings: Settings) -> FinalVerdicts:
        """The store on the state Redis (`redis.url`, never evicted) for `settings`."""
        r = settings.redis
        return cls(
            connect_redis(r),
            r.key_prefix,
            settings.delivery.final_verdict_ttl_s,
            CircuitBreaker(r.breaker_failures, r.breaker_cooldown_s),
        )

    async def aclose(self) -> None:
        """Close the Redis connections."""
        await self._client.aclose()

    def _key(self, post_id: str) -> str:
        # Hashed: a post_id is up to 256 characters of anyone's choosing.
        return self._prefix + hashlib.sha256(post_id.encode()).hexdigest()[:40]

    async def claim(self, outcomes: Sequence[tuple[str, Outcome | None]]) -> list[Outcome | None]:
        """Record each (post_id, outcome) unless the post has one (an outcome of None only
        reads); per post, the outcome recorded earlier (publish that instead), or None.

        Redis unreachable: all None, logged once per call.
        """
        if not outcomes:
            return []
        keys = [self._key(post_id) for post_id, _ in outcomes]
        args: list[bytes | int] = [self._ttl]
        args += (b"" if o is None else _encode(o) for _, o in outcomes)
        found = await self._call(self._claim(keys=keys, args=args))
        if found is None:
            return [None] * len(outcomes)
        return [_decode(raw) if raw else None for raw in found]

    async def get(self, post_id: str) -> Outcome | None:
        """The post's recorded outcome, or None (none yet, or Redis unreachable)."""
        raw = await self._call(self._client.get(self._key(post_id)))
        return _decode(raw) if raw else None

    async def _call(self, call: Any) -> Any:
        try:
            self._breaker.before_call()
        except CircuitOpen:
            call.close()  # the coroutine never runs
            return None
        try:
            result = await call
        except RedisError as exc:
            if self._breaker.state == "closed":
                log.warning("final-verdict store unavailable (%r); deciding without it", exc)
            self._breaker.on_failure()
            return None
        self._breaker.on_success()
        return result
