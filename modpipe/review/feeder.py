"""Reads `moderation.review` into the review store, and commits only what is stored and decided.

The console's own consumer group (`review.group_id`) splits the partitions among console
processes; any process's reviewers can claim any item, since the queue is in Redis.
Each well-formed record is queued (one item per post_id; a repeat of a pending post only
adds its offset to the item); a malformed one is dead-lettered, and never fatal.
A partition's committed offset passes neither a record not yet stored (OffsetTracker)
nor one whose item still lacks a published decision (the store), so a restart (or a
kill -9) re-reads every such record, and re-queueing it is a no-op for items already in
Redis. A revocation waits for the batch in hand before it commits.

Exactly once (`delivery.guarantee`), a partition's offsets commit through a producer that
fences the partition's earlier owners, and a dead letter is published in a transaction of
its own, unless a read before a crash published it already (checked on Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from modpipe.core.dead_letters import dead_letter
from modpipe.core.errors import InvalidRecord, ReviewStoreUnavailable
from modpipe.core.kafka import Send, consumer_options, publish
from modpipe.core.metrics import Metrics
from modpipe.core.offsets import OffsetTracker
from modpipe.core.probes import holds
from modpipe.core.records import Incoming, parse_review, wire_limits
from modpipe.core.settings import Settings
from modpipe.core.transactions import (
    PartitionTransactions,
    TransactionalPublisher,
    TransactionFailed,
)
from modpipe.review.store import ReviewStore

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, feeder: Feeder) -> None:
        self._feeder = feeder

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Hand over with the offsets as far as storage and decisions allow; the next owner
        # resumes there.
        await self._feeder.hand_over(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._feeder.take_over(assigned)
        self._feeder.ready.set()


def _queued_ms(queued_at: str, fallback_ms: int) -> int:
    try:
        return int(datetime.fromisoformat(queued_at).timestamp() * 1000)
    except ValueError:
        return fallback_ms


class Feeder:
    """The console's consumer of review items."""

    def __init__(
        self,
        settings: Settings,
        store: ReviewStore,
        send: Send,
        metrics: Metrics,
        letters: TransactionalPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._send = send  # at least once: dead letters go out through the console's producer
        self._letters = letters  # exactly once: each dead letter in a transaction of its own
        self.offsets = OffsetTracker()
        self._batch = asyncio.Lock()  # held while a fetched batch is being stored
        limits = wire_limits(settings.kafka.max_message_bytes)
        self._txns = (
            PartitionTransactions(
                settings.kafka,
                settings.review.group_id,
                settings.review.group_id,
                max_request_size=limits.request_bytes,
                linger_ms=2,
            )
            if settings.delivery.guarantee == "exactly_once"
            else None
        )
        self._consumer = AIOKafkaConsumer(
            **consumer_options(settings.kafka, settings.review.group_id),
            auto_offset_reset="earliest",
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
                        await self.commit()
                        last_commit = now
                except (ReviewStoreUnavailable, KafkaError) as exc:
                    log.warning("review feed paused: %s", exc)
                    await asyncio.sleep(1.0)
            with contextlib.suppress(ReviewStoreUnavailable, KafkaError):
                await self.commit()
        finally:
            await self._consumer.stop()
            if self._txns is not None:
                await self._txns.close()

    async def take_over(self, assigned: set[TopicPartition]) -> None:
        """Exactly once: fence the partitions' earlier owners, then read where they committed."""
        if self._txns is None or not assigned:
            return
        await self._txns.take_over(self._consumer, assigned)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Wait for the batch in hand, commit what may be, and let the partitions go."""
        async with self._batch:
            with contextlib.suppress(ReviewStoreUnavailable, KafkaError):
                await self._commit(revoked)
            self.offsets.forget(revoked)
            if self._txns is not None:
                await self._txns.revoke(revoked)

    async def _ingest_all(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        async with self._batch:
            for tp, records in batches.items():
                for record in records:
                    self.offsets.started(tp, record.offset)
            unstored = {tp: records[0].offset for tp, records in batches.items() if records}
            try:
                for tp, records in batches.items():
                    for record in records:
                        await self._ingest(record)
                        self.offsets.finished(tp, record.offset)
                        unstored[tp] = record.offset + 1
            except (ReviewStoreUnavailable, KafkaError):
                # The consumer's position is past the whole batch: rewind every partition
                # to its first record not stored, to read it again once Redis or Kafka
                # answers (the tracker holds the commit below it meanwhile).
                for tp, first in unstored.items():
                    if first <= batches[tp][-1].offset:
                        self._consumer.seek(tp, first)
                raise

    async def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """Store `record`'s item, or dead-letter a malformed one."""
        s = self.settings
        try:
            item, post = parse_review(
                record.value, wire_limits(s.kafka.max_message_bytes).record_bytes
            )
        except InvalidRecord as exc:
            await self._dead_letter(record, exc)
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

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: InvalidRecord) -> None:
        # A dead letter cannot wait for the offset commit: that waits for reviewers'
        # decisions on the items before it. Exactly once, it is published alone, unless
        # a read before a crash published it already (the record is read again until the
        # offset passes it).
        s = self.settings
        letter = dead_letter(Incoming.of(record), exc, s.topics.dlq)
        if self._letters is None:
            await publish(self._send, [letter], s.review.publish_deadline_s)
        else:
            where = f'"topic":{json.dumps(record.topic)},"partition":{record.partition},'
            needle = f'{where}"offset":{record.offset},'.encode()
            if await holds(s.kafka, s.topics.dlq, letter.key, needle, record.timestamp):
                return
            try:
                await self._letters.publish([letter])
            except TransactionFailed as exc_:
                raise KafkaError(str(exc_)) from exc_  # stored nothing: read it again later
        self.metrics.dlq.labels(exc.reason).inc()

    async def commit(self) -> None:
        """Commit every partition as far as storage and decisions allow."""
        async with self._batch:
            await self._commit(self._consumer.assignment())

    async def _commit(self, partitions: set[TopicPartition]) -> None:
        # Past these offsets every record is stored and every item's decision published.
        stored = self.offsets.committable()
        positions = {}
        for tp, position in stored.items():
            if tp in partitions:
                final = await self.store.committable(tp.topic, tp.partition, position)
                if final != self.offsets.last_committed(tp):
                    positions[tp] = final
        if not positions:
            return
        if self._txns is None:
            await self._consumer.commit(positions)
            self.offsets.mark_committed(positions)
            return
        await self._txns.commit_tracked(self.offsets, positions)
