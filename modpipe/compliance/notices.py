"""The notice intake: `moderation.notices` in; posts, review items and dead letters out.

A notice is recorded (the ledger's `notice:{post_id}`, whence the statement builder takes
the source type) before anything is published for it. A user's notice sends the post as
received to the posts topic, to be decided like any post; a trusted flagger's goes to the
reviewers first (a review item with reason `notice`). Each batch's outputs and offsets go
in one Kafka transaction. Input is read read_committed.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError, ProducerFenced

from modpipe.compliance.consuming import (
    Batches,
    Idle,
    consumer,
    ensure_compliance_topics,
    next_offsets,
    producer,
    sleep_or_stop,
)
from modpipe.compliance.ledger import Ledger, LedgerUnavailable
from modpipe.compliance.records import parse_notice
from modpipe.core.errors import InvalidRecord, StackError
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Outgoing, ReviewItem, dead_letter, encode, wire_limits
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)


class NoticeIntake:
    """Notices in, posts or review items out; `run(idle_exit=...)` for bounded runs."""

    def __init__(self, settings: Settings, ledger: Ledger, metrics: Metrics) -> None:
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self._stopping = asyncio.Event()
        self._group = f"{settings.statements.group_id}-notices"
        self._consumer = consumer(settings, self._group)
        self._producer = producer(settings, f"{self._group}-intake")

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_exit: float | None = None) -> int:
        """Route notices until stopped (or idle for `idle_exit` seconds); the exit code."""
        await ensure_compliance_topics(self.settings)
        await self._producer.start()
        await self._consumer.start()
        try:
            self._consumer.subscribe([self.settings.topics.notices])
            idle = Idle(idle_exit)
            while not self._stopping.is_set() and not idle.expired:
                batches = await self._consumer.getmany(timeout_ms=500)
                count = sum(len(r) for r in batches.values())
                while batches and not self._stopping.is_set():
                    try:
                        await self._once(batches)
                        break
                    except ProducerFenced:
                        # Another instance took over this transactional id: this one must stop.
                        raise StackError(
                            "fenced by another instance with the same transactional id"
                        ) from None
                    except (LedgerUnavailable, KafkaError) as exc:
                        log.warning("notice batch failed, retrying: %s", exc)
                        await sleep_or_stop(self._stopping, 1.0)
                idle.saw(count)  # after the work: a long batch is not idleness
        finally:
            await self._consumer.stop()
            await self._producer.stop()
        return 0

    async def _once(self, batches: Batches) -> None:
        s = self.settings
        out: list[Outgoing] = []
        routes: list[str] = []
        limit = wire_limits(s.kafka.max_message_bytes).record_bytes
        for records in batches.values():
            for record in records:
                try:
                    notice, post = parse_notice(record.value, limit)
                except InvalidRecord as exc:
                    out.append(dead_letter(Incoming.of(record), exc, s.topics.dlq))
                    routes.append("dlq")
                    continue
                await self.ledger.record_notice(
                    post.post_id,
                    {
                        "notice_id": notice.notice_id,
                        "trusted_flagger": notice.trusted_flagger,
                        "category": notice.category,
                        "received_at": notice.received_at,
                    },
                )
                key = post.post_id.encode()
                if notice.trusted_flagger:
                    item = ReviewItem(
                        post=post.wire(),
                        scores={},
                        model="notice",
                        policy_version=s.policy.version,
                        reason="notice",
                        detail=f"trusted flagger's notice {notice.notice_id}: "
                        f"{notice.category or 'category not specified'}",
                    )
                    out.append(Outgoing(s.topics.review, key, encode(item)))
                    routes.append("review")
                else:
                    out.append(Outgoing(s.topics.posts, key, encode_post(post.wire())))
                    routes.append("posts")
        # One transaction: the routed records and the offsets they answer for.
        async with self._producer.transaction():
            for o in out:
                await self._producer.send(o.topic, o.value, key=o.key)
            await self._producer.send_offsets_to_transaction(next_offsets(batches), self._group)
        for route in routes:
            self.metrics.notices.labels(route).inc()


def encode_post(post: dict[str, object]) -> bytes:
    """The post as received, as the posts topic carries it."""
    import json

    return json.dumps(post, ensure_ascii=False, separators=(",", ":")).encode()
