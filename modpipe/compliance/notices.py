"""The notice intake: `moderation.notices` in; posts, review items and dead letters out.

A notice is recorded (the ledger's `notice:{post_id}`, whence the statement builder takes
the source type) before anything is published for it. A user's notice sends the post as
received to the posts topic, to be decided like any post; a trusted flagger's goes to the
reviewers first (a review item with reason `notice`). Each batch's outputs and offsets go
in one Kafka transaction. Input is read read_committed.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from modpipe.compliance.consuming import (
    Batches,
    BatchWorker,
    consumer,
    next_offsets,
    producer,
    sleep_or_stop,
    stop_if_fenced,
)
from modpipe.compliance.ledger import Ledger, LedgerUnavailable
from modpipe.compliance.records import parse_notice
from modpipe.core.dead_letters import dead_letter
from modpipe.core.errors import InvalidRecord
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Outgoing, ReviewItem, encode, wire_limits
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)


class NoticeIntake(BatchWorker):
    """Notices in, posts or review items out; `run(idle_exit=...)` for bounded runs."""

    def __init__(self, settings: Settings, ledger: Ledger, metrics: Metrics) -> None:
        super().__init__(settings, settings.topics.notices)
        self.ledger = ledger
        self.metrics = metrics
        self._group = f"{settings.statements.group_id}-notices"
        self._consumer = consumer(settings, self._group)
        self._producer = producer(settings, f"{self._group}-intake")

    async def _handle(self, batches: Batches) -> None:
        while not self._stopping.is_set():
            try:
                await self._once(batches)
                return
            except (LedgerUnavailable, KafkaError) as exc:
                stop_if_fenced(exc)
                log.warning("notice batch failed, retrying: %s", exc)
                await sleep_or_stop(self._stopping, 1.0)

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
