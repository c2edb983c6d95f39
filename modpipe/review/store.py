"""The review queue in Redis: items, queues by reason, leases, decisions and their outbox.

Every state change is one Lua script, so several console processes (and a restarted one)
agree without locks, and time comes from Redis's own clock (`TIME`), not each process's.

An item moves `queued` -> `leased` (one reviewer holds it until its lease runs out) ->
`decided` (the final records are stored, byte for byte, in the same step that ends the
lease) -> `published` (the broker acknowledged them). A decided item sits in the outbox
until it is marked published; any process republishes outbox entries older than
`outbox_retry_s`, always the stored bytes, so a crash between deciding and publishing
repeats the same decision and never makes a different one.

Kafka offsets: each ingested record adds its offset to a per-partition `pending` set; the
offset leaves it when the item's decision is published. The consumer commits no further
than the lowest pending offset. Keys are built inside the scripts from the prefix, so this
needs a single Redis (not Redis Cluster).

Keys under `{redis.key_prefix}:review`: `item:{id}` (hash), `queue:{reason}` (sorted by
queued time), `leases` (sorted by expiry), `held:{user}`, `skipped:{id}`, `refs:{id}`,
`pending:{topic}:{partition}`, `outbox`, `audit` (agree/disagree counts).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, get_args

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.errors import ReviewStoreUnavailable
from modpipe.core.records import ReviewReason
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import RedisSettings
from modpipe.review import scripts

# Appeals (docs/compliance.md) are queued by the appeal intake, not from review records.
REASONS: tuple[str, ...] = (*get_args(ReviewReason), "appeal")


def item_id(post_id: str) -> str:
    """The item's id: one item (and one human decision) per post, safe in a URL."""
    return hashlib.sha256(post_id.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class QueueStats:
    """One reason's queue: waiting items and the oldest one's age."""

    reason: str
    depth: int
    oldest_age_s: float


@dataclass(frozen=True)
class Lease:
    """An item held by a reviewer: the stored record and when the lease runs out (ms)."""

    item_id: str
    lease_until_ms: int
    record: dict[str, Any]
    reason: str
    queued_ms: int
    kafka_ts_ms: int


@dataclass(frozen=True)
class Outcome:
    """What a decide call found: `ok`, `decided` (earlier), `not_held` or `expired`."""

    status: str
    decision: dict[str, Any] | None = None


def connect(settings: RedisSettings, url: str | None = None) -> aioredis.Redis:
    """A Redis client for the console (on `url`, else `settings.url`): modpipe's one way of
    opening Redis, with replies decoded and a little more patience than the cache's."""
    return connect_redis(
        settings, url, timeout_s=max(settings.timeout_s, 2.0), decode_responses=True
    )


class ReviewStore:
    """The console's shared state in Redis; every RedisError becomes ReviewStoreUnavailable."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self.redis = client
        self.prefix = f"{key_prefix}:review"
        self._scripts = {
            name: client.register_script(src)
            for name, src in (
                ("ingest", scripts.INGEST),
                ("claim", scripts.CLAIM),
                ("skip", scripts.SKIP),
                ("decide", scripts.DECIDE),
                ("published", scripts.PUBLISHED),
                ("outbox", scripts.OUTBOX),
                ("stats", scripts.STATS),
            )
        }

    async def _run(self, name: str, *args: Any) -> Any:
        try:
            return await self._scripts[name](args=[self.prefix, *args])
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis {name} failed: {exc}") from exc

    def pending_key(self, topic: str, partition: int) -> str:
        """The sorted set of offsets in `topic`/`partition` still owed a published decision."""
        return f"{self.prefix}:pending:{topic}:{partition}"

    async def ingest(
        self,
        record: str,
        post_id: str,
        reason: str,
        queued_ms: int,
        kafka_ts_ms: int,
        topic: str,
        partition: int,
        offset: int,
    ) -> str:
        """Queue one review record (idempotent per post): `new`, `duplicate` or `done`."""
        return str(
            await self._run(
                "ingest",
                item_id(post_id),
                record,
                reason,
                queued_ms,
                kafka_ts_ms,
                post_id,
                self.pending_key(topic, partition),
                offset,
            )
        )

    async def committable(self, topic: str, partition: int, position: int) -> int:
        """The offset the consumer may commit: its position, or the lowest still owed."""
        try:
            low = await self.redis.zrange(self.pending_key(topic, partition), 0, 0)
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis pending failed: {exc}") from exc
        return min(position, int(str(low[0]))) if low else position

    async def claim(self, user: str, lease_s: float, reasons: Sequence[str]) -> Lease | None:
        """The oldest waiting item (of `reasons`) now held by `user`, or the one they hold."""
        got = await self._run("claim", user, int(lease_s * 1000), 100, *reasons)
        if not got:
            return None
        lease = await self.item(str(got[0]))
        return None if lease is None else replace(lease, lease_until_ms=int(got[1]))

    async def item(self, item_id: str) -> Lease | None:
        """An item's stored record and lease (lease 0 when not leased), or None."""
        try:
            h = await self.redis.hgetall(f"{self.prefix}:item:{item_id}")
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis item failed: {exc}") from exc
        if "record" not in h:  # unknown, or published (the text has left Redis)
            return None
        return Lease(
            item_id=item_id,
            lease_until_ms=int(h.get("lease_until") or 0),
            record=json.loads(h["record"]),
            reason=str(h["reason"]),
            queued_ms=int(h["queued_ms"]),
            kafka_ts_ms=int(h["kafka_ts_ms"]),
        )

    async def earlier_decision(self, item_id: str) -> dict[str, Any] | None:
        """The decision already recorded for an item (published: its verdict), or None."""
        try:
            state, raw = await self.redis.hmget(
                f"{self.prefix}:item:{item_id}", "state", "decision"
            )
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis decision failed: {exc}") from exc
        return json.loads(raw) if state in ("decided", "published") and raw else None

    async def holder(self, item_id: str) -> str | None:
        """Who holds the item now (None when nobody, or when decided)."""
        try:
            h = await self.redis.hmget(f"{self.prefix}:item:{item_id}", "state", "holder")
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis holder failed: {exc}") from exc
        return str(h[1]) if h[0] == "leased" else None

    async def skip(self, user: str, item_id: str) -> bool:
        """Put the item back in its queue, never to be offered to `user` again."""
        return bool(await self._run("skip", user, item_id))

    async def decide(
        self, user: str, item_id: str, decision: dict[str, Any], audit: str, retry_s: float
    ) -> Outcome:
        """Record `decision` if `user` holds the item and its lease runs; see Outcome."""
        got = await self._run(
            "decide", user, item_id, json.dumps(decision), audit, int(retry_s * 1000)
        )
        stored = json.loads(got[1]) if len(got) > 1 and got[1] else None
        return Outcome(str(got[0]), stored)

    async def mark_published(self, item_id: str, verdict: str, keep_s: int) -> bool:
        """The decision's records are acknowledged: release its offsets and its outbox entry.

        The post's text leaves Redis here (the review record and the label go; Kafka keeps
        them): the item keeps only its state and verdict, for `keep_s`, so that a repeated
        review record of a decided post is recognised and refused a second decision.
        """
        kept = json.dumps({"verdict": verdict})
        return bool(await self._run("published", item_id, kept, keep_s))

    async def overdue(self, retry_s: float, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Decisions recorded but not marked published in time, taken for `retry_s` more."""
        ids = await self._run("outbox", int(retry_s * 1000), limit)
        out = []
        for item_id in ids:
            try:
                raw = await self.redis.hget(f"{self.prefix}:item:{item_id}", "decision")
            except RedisError as exc:
                raise ReviewStoreUnavailable(f"redis outbox failed: {exc}") from exc
            if raw:
                out.append((str(item_id), json.loads(raw)))
        return out

    async def stats(self) -> tuple[list[QueueStats], int]:
        """Waiting items per reason with the oldest's age, and how many are leased."""
        got = await self._run("stats", *REASONS)
        now = int(got[0])
        queues = []
        for i, reason in enumerate(REASONS):
            depth, oldest = int(got[2 + 2 * i]), got[3 + 2 * i]
            age = max(0.0, (now - int(float(oldest))) / 1000) if oldest else 0.0
            queues.append(QueueStats(reason, depth, age))
        return queues, int(got[1])

    async def audit_counts(self) -> tuple[int, int]:
        """Audit decisions so far: (agreeing with the automatic verdict, disagreeing)."""
        try:
            h = await self.redis.hgetall(f"{self.prefix}:audit")
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis audit failed: {exc}") from exc
        return int(h.get("agree", 0)), int(h.get("disagree", 0))

    async def leases(self) -> list[tuple[str, str, int]]:
        """Every item held now: (item id, holder, lease end in ms)."""
        try:
            held: list[Any] = await self.redis.zrange(
                f"{self.prefix}:leases", 0, -1, withscores=True
            )
            out = []
            for item_id, until in held:
                holder = await self.redis.hget(f"{self.prefix}:item:{item_id}", "holder")
                out.append((str(item_id), str(holder or ""), int(until)))
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis leases failed: {exc}") from exc
        return out

    # -- appeals (docs/compliance.md) ---------------------------------------------------

    async def ingest_appeal(
        self,
        appeal_item: str,
        record: str,
        post_id: str,
        queued_ms: int,
        kafka_ts_ms: int,
        excluded: list[str],
        where: tuple[str, int, int],
    ) -> str:
        """Queue one appeal (idempotent per appeal id): `new`, `duplicate` or `done`.

        `excluded` (the reviewer of the decision under appeal) never gets it: they go in
        the item's skipped set before the item is queued, so no claim can race them.
        """
        topic, partition, offset = where
        try:
            if excluded:
                await self.redis.sadd(f"{self.prefix}:skipped:{appeal_item}", *excluded)
        except RedisError as exc:
            raise ReviewStoreUnavailable(f"redis appeal failed: {exc}") from exc
        return str(
            await self._run(
                "ingest",
                appeal_item,
                record,
                "appeal",
                queued_ms,
                kafka_ts_ms,
                post_id,
                self.pending_key(topic, partition),
                offset,
            )
        )

    async def aclose(self) -> None:
        await self.redis.aclose()
