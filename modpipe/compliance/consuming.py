"""The compliance workers' Kafka clients: read_committed consumers that commit by hand,
and a transactional producer where a worker's outputs and offsets must go together."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

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
