"""Reading a topic from outside the worker that writes it: whether it holds one record
(`holds`), and a consumer group's lag, read once or reported to a gauge."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import Gauge

from modpipe.core.kafka import admin_client, client_options, consumer_options, topic_partitions
from modpipe.core.settings import KafkaSettings

log = logging.getLogger(__name__)


async def holds(kafka: KafkaSettings, topic: str, key: bytes, needle: bytes, since_ms: int) -> bool:
    """Whether `topic` holds a committed record keyed `key` whose value contains `needle`,
    written at or after `since_ms`: a scan of the one partition the default partitioner
    gives `key`, from that time to its end. For rare checks (a decision whose publication
    is in doubt after a crash), not for a hot path."""
    partitions = sorted(tp.partition for tp in await topic_partitions(kafka, [topic]))
    tp = TopicPartition(topic, DefaultPartitioner()(key, partitions, partitions))
    consumer = AIOKafkaConsumer(**consumer_options(kafka, None))
    await consumer.start()
    try:
        consumer.assign([tp])
        start = (await consumer.offsets_for_times({tp: since_ms}))[tp]
        if start is None:
            return False  # nothing written since
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start.offset)
        while await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.key == key and record.value is not None and needle in record.value:
                    return True
        return False
    finally:
        await consumer.stop()


class LagProbe:
    """An admin client and a consumer kept open to read a group's lag repeatedly."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._admin = admin_client(kafka)
        self._consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None)

    async def __aenter__(self) -> LagProbe:
        await self._admin.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def lag(self, group: str, topic: str) -> dict[int, int]:
        """Per partition of `topic`: messages between `group`'s committed offset and the end."""
        described = await self._admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
        committed = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await self._consumer.end_offsets(partitions)
        lag = {}
        for tp in partitions:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else 0
            lag[tp.partition] = max(0, ends[tp] - position)
        return lag


async def consumer_lag(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`: messages between `group`'s committed offset and the end."""
    async with LagProbe(kafka) as probe:
        return await probe.lag(group, topic)


async def report_lag(
    kafka: KafkaSettings, group: str, topic: str, gauge: Gauge, interval_s: float = 10.0
) -> None:
    """Set `gauge{group, topic, partition}` every `interval_s` until cancelled.

    Never dies of an error: a frozen gauge would silence the lag alert. A failing probe
    is closed and opened again at the next interval.
    """
    failures = 0
    while True:
        try:
            async with LagProbe(kafka) as probe:
                while True:
                    for partition, lag in (await probe.lag(group, topic)).items():
                        gauge.labels(group, topic, str(partition)).set(lag)
                    failures = 0
                    await asyncio.sleep(interval_s)
        except Exception as exc:  # any failure: log, reopen, go on
            failures += 1
            # A group coordinator still starting (a new cluster, a broker restart) answers
            # with a retriable error: a warning only if it is still so one interval later.
            passing = failures == 1 and getattr(exc, "retriable", False)
            level = logging.INFO if passing else logging.WARNING
            log.log(level, "consumer lag unavailable group=%s: %r", group, exc)
        await asyncio.sleep(interval_s)
