"""The compliance workers' Kafka clients and run loop: read_committed consumers that
commit by hand, a transactional producer where a worker's outputs and offsets must go
together, and `BatchWorker`, the loop the builder, the notice intake and the submitter
share (start, read batches until stopped or idle, stop)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import ProducerFenced

from modpipe.core.errors import StackError
from modpipe.core.kafka import client_options, ensure_topics
from modpipe.core.records import wire_limits
from modpipe.core.settings import Settings

FENCED = (
    "another instance took over this worker's transactional id: run one instance of it "
    "(docs/compliance.md)"
)
Batches = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def consumer(settings: Settings, group_id: str, max_records: int = 500) -> AIOKafkaConsumer:
    """A consumer of committed records only (the pipeline writes in transactions)."""
    return AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        session_timeout_ms=int(settings.kafka.session_timeout_s * 1000),
        max_poll_records=max_records,
    )


def producer(settings: Settings, transactional_id: str | None = None) -> AIOKafkaProducer:
    """An idempotent acks=all producer, transactional when `transactional_id` is given."""
    options: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_request_size": wire_limits(settings.kafka.max_message_bytes).request_bytes,
    }
    if transactional_id is not None:
        options["transactional_id"] = transactional_id
    return AIOKafkaProducer(**client_options(settings.kafka), **options)


async def ensure_compliance_topics(settings: Settings) -> None:
    """Create the notices, appeals and statements topics (and the DLQ) if missing."""
    t = settings.topics
    limits = wire_limits(settings.kafka.max_message_bytes)
    records = {"max.message.bytes": str(limits.record_topic_bytes)}
    await ensure_topics(
        settings.kafka,
        [t.notices, t.appeals, t.statements, t.verdicts, t.posts, t.review, t.labels],
        settings.kafka.partitions,
        {t.notices: records, t.appeals: records, t.review: records, t.labels: records},
    )
    await ensure_topics(
        settings.kafka,
        [t.dlq],
        settings.kafka.partitions,
        {t.dlq: {"max.message.bytes": str(limits.dlq_topic_bytes)}},
    )


def next_offsets(batches: Batches) -> dict[TopicPartition, int]:
    """Per partition, the offset after the last record of `batches`."""
    return {tp: records[-1].offset + 1 for tp, records in batches.items() if records}


class Idle:
    """Tracks how long a consumer has read nothing (for bounded runs)."""

    def __init__(self, exit_after_s: float | None) -> None:
        self.exit_after_s = exit_after_s
        self._since = time.monotonic()

    def saw(self, count: int) -> None:
        if count:
            self.reset()

    def reset(self) -> None:
        """Count from now (say, no partitions yet: a restart may wait a session timeout
        for a crashed member's partitions, which is not idleness)."""
        self._since = time.monotonic()

    @property
    def expired(self) -> bool:
        return self.exit_after_s is not None and time.monotonic() - self._since >= self.exit_after_s


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


def records_of(batches: Batches) -> Sequence[ConsumerRecord[bytes, bytes]]:
    """Every record of `batches`, partition by partition."""
    return [r for records in batches.values() for r in records]


def stop_if_fenced(exc: BaseException) -> None:
    """Raise StackError when another instance took over this worker's transactional id:
    this one must stop, not retry."""
    if isinstance(exc, ProducerFenced):
        raise StackError("fenced by another instance with the same transactional id") from None


class BatchWorker:
    """A compliance worker: one topic in, batches handled until stopped or idle.

    Subclasses build `_consumer` and `_producer` and handle each batch in `_handle`;
    `run(idle_exit=...)` gives a bounded run (tests, backfills).
    """

    _consumer: AIOKafkaConsumer
    _producer: AIOKafkaProducer

    def __init__(self, settings: Settings, topic: str, max_records: int | None = None) -> None:
        self.settings = settings
        self._topic = topic
        self._max_records = max_records
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, idle_exit: float | None = None) -> int:
        """Work until stopped (or nothing read for `idle_exit` seconds); the exit code."""
        await ensure_compliance_topics(self.settings)
        await self._producer.start()
        await self._consumer.start()
        try:
            self._consumer.subscribe([self._topic])
            idle = Idle(idle_exit)
            while not self._stopping.is_set() and not idle.expired:
                batches = await self._consumer.getmany(
                    timeout_ms=500, max_records=self._max_records
                )
                count = sum(len(r) for r in batches.values())
                if batches:
                    await self._handle(batches)
                idle.saw(count)  # after the work: a long batch is not idleness
                if not self._consumer.assignment():
                    idle.reset()
                await self._after(batches)
        finally:
            await self._consumer.stop()
            await self._producer.stop()
        return 0

    async def _handle(self, batches: Batches) -> None:
        raise NotImplementedError

    async def _after(self, batches: Batches) -> None:
        """Runs after every fetch, empty or not."""
