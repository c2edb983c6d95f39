"""Kafka helpers shared by both workers, the commands and the local stack.

One way to publish what a worker owes (`publish`: send everything, wait for every
acknowledgement, retry the failed ones until a deadline), one way to open a client
(`client_options`), topic creation and the consumer-lag probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from prometheus_client import Gauge

from modpipe.core.errors import StackError
from modpipe.core.records import Outgoing
from modpipe.core.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]
"""Hands one record to a producer and returns the future of its acknowledgement."""


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection arguments shared by every aiokafka client modpipe opens."""
    return {"bootstrap_servers": kafka.bootstrap}


async def publish(send: Send, records: Sequence[Outgoing], deadline_s: float) -> None:
    """Send all `records`, then wait for the broker to acknowledge every one.

    Records that fail are sent again with backoff until `deadline_s` has passed (long
    enough to ride out a broker restart); then KafkaError is raised and the caller must
    not commit the offsets these records answer for.
    """
    deadline = time.monotonic() + deadline_s
    pending = list(records)
    delay = 0.2
    while pending:
        futures = [await send(r) for r in pending]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r, res in zip(pending, results, strict=True) if isinstance(res, Exception)]
        if not failed:
            return
        errors = sorted({type(res).__name__ for res in results if isinstance(res, Exception)})
        if time.monotonic() + delay > deadline:
            raise KafkaError(f"could not publish {len(failed)} records: {errors}")
        log.warning("publish failed for %d records (%s); retrying", len(failed), errors)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
        pending = failed


async def kafka_ready(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Return once a metadata request succeeds (an open port is not readiness)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(
        f"Kafka at {bootstrap} did not answer a metadata request in {timeout_s}s: {last}"
    )


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create the missing topics among `names` with `partitions` partitions each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return
        try:
            await admin.create_topics(
                [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
            )
            log.info("created topics %s partitions=%d", missing, partitions)
        except TopicAlreadyExistsError:
            pass  # another worker created them first
        await _wait_for_leaders(admin, missing)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    # A topic is usable once every partition has a leader; clients that fetch offsets
    # before that get NotLeaderForPartition and some give up on the partition.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise StackError(f"topics {names} have no leader after 30s")


async def ensure_pipeline_topics(settings: Settings) -> None:
    """Create every modpipe topic that is missing."""
    t = settings.topics
    names = (t.posts, t.verdicts, t.escalations, t.review, t.dlq)
    await ensure_topics(settings.kafka.bootstrap, names, settings.kafka.partitions)


async def topic_partitions(bootstrap: str, names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics in `names`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]


class LagProbe:
    """An admin client and a consumer kept open to read a group's lag repeatedly."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)

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


async def consumer_lag(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition of `topic`: messages between `group`'s committed offset and the end."""
    async with LagProbe(bootstrap) as probe:
        return await probe.lag(group, topic)


async def report_lag(
    bootstrap: str, group: str, topic: str, gauge: Gauge, interval_s: float = 10.0
) -> None:
    """Set `gauge{group, topic, partition}` every `interval_s` until cancelled."""
    async with LagProbe(bootstrap) as probe:
        while True:
            try:
                for partition, lag in (await probe.lag(group, topic)).items():
                    gauge.labels(group, topic, str(partition)).set(lag)
            except KafkaError as exc:
                log.warning("consumer lag unavailable group=%s: %s", group, exc)
            await asyncio.sleep(interval_s)
