"""Reads `moderation.review` into the review store, and commits only what is decided.

The console's own consumer group (`review.group_id`) splits the partitions among console
processes; any process's reviewers can claim any item, since the queue is in Redis.
Each well-formed record is queued (one item per post_id; a repeat of a pending post only
adds its offset to the item); a malformed one is dead-lettered, awaited, and never fatal.
A partition's committed offset never passes the lowest offset whose item still lacks a
published decision, so a restart (or a kill -9) re-reads every undecided record, and
re-queueing it is a no-op for items already in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from modpipe.core.errors import InvalidRecord, ReviewStoreUnavailable
from modpipe.core.kafka import Send, client_options, publish
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, dead_letter, parse_review, wire_limits
from modpipe.core.settings import Settings
from modpipe.review.store import ReviewStore

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, feeder: Feeder) -> None:
        self._feeder = feeder

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Hand over with the offsets as far as decisions allow; the next owner resumes there.
        await self._feeder.commit(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._feeder.ready.set()


def _queued_ms(queued_at: str, fallback_ms: int) -> int:
    try:
        return int(datetime.fromisoformat(queued_at).timestamp() * 1000)
    except ValueError:
        return fallback_ms


class Feeder:
    """The console's consumer of review items."""

    def __init__(
        self, settings: Settings, store: ReviewStore, send: Send, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._send = send
        self._committed: dict[TopicPartition, int] = {}
        self._consumer = AIOKafkaConsumer(
            **client_options(settings.kafka),
            group_id=settings.review.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.kafka.session_timeout_s * 1000),
            max_poll_records=500,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Queue review records until `stopping` is set, committing every commit_interval_s."""
        s = self.settings
        await self._consumer.start()
        try:
            self._consumer.subscribe([s.topics.review], listener=_Rebalance(self))
            last_commit = asyncio.get_running_loop().time()
            while not stopping.is_set():
                try:
                    await self._ingest_all(await self._consumer.getmany(timeout_ms=200))
                    now = asyncio.get_running_loop().time()
                    if now - last_commit >= s.review.commit_interval_s:
                        await self.commit(self._consumer.assignment())
                        last_commit = now
                except (ReviewStoreUnavailable, KafkaError) as exc:
                    log.warning("review feed paused: %s", exc)
                    await asyncio.sleep(1.0)
            with contextlib.suppress(ReviewStoreUnavailable, KafkaError):
                await self.commit(self._consumer.assignment())
        finally:
            await self._consumer.stop()

    async def _ingest_all(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        done: dict[TopicPartition, int] = {}  # per partition: the next offset not yet queued
        try:
            for tp, records in batches.items():
                for record in records:
                    await self._ingest(record)
                    done[tp] = record.offset + 1
        except (ReviewStoreUnavailable, KafkaError):
            # The consumer's position is past the whole batch, and commits follow the
            # position: rewind every partition to its first record not queued, to read it
            # again once Redis or Kafka answers.
            for tp, records in batches.items():
                first = done.get(tp, records[0].offset) if records else None
                if first is not None and first <= records[-1].offset:
                    self._consumer.seek(tp, first)
            raise

    async def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        s = self.settings
        try:
            item, post = parse_review(
                record.value, wire_limits(s.kafka.max_message_bytes).record_bytes
            )
        except InvalidRecord as exc:
            letter = dead_letter(Incoming.of(record), exc, s.topics.dlq)
            await publish(self._send, [letter], s.review.publish_deadline_s)
            self.metrics.dlq.labels(exc.reason).inc()
            return
        assert record.value is not None  # parse_review refuses a null value
        await self.store.ingest(
            record.value.decode(),
            post.post_id,
            item.reason,
            _queued_ms(item.queued_at, record.timestamp),
            record.timestamp,
            record.topic,
            record.partition,
            record.offset,
        )

    async def commit(self, partitions: set[TopicPartition]) -> None:
        """Commit each partition up to its lowest offset still owed a published decision."""
        offsets = {}
        for tp in partitions:
            position = await self._consumer.position(tp)
            offset = await self.store.committable(tp.topic, tp.partition, position)
            if self._committed.get(tp) != offset:
                offsets[tp] = offset
        if offsets:
            # Past these offsets every item's decision is acknowledged by the broker.
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
