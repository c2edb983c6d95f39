"""Exactly-once publishing: a partition's outputs and its input offset in one Kafka transaction.

One transactional producer per input partition, its `transactional.id` named after the
partition (`{prefix}.{topic}.{partition}`): whichever worker owns a partition opens that
producer, and opening it fences every earlier holder (KIP-98). A worker paused past its
session (SIGSTOP, a long GC) that wakes up after its partitions moved can then neither
publish nor commit: its transaction is aborted by the coordinator and its next call fails
with ProducerFenced. (KIP-447 would let one producer serve many partitions by fencing on
the consumer group's generation, but aiokafka's TxnOffsetCommit is version 0 and carries
only the group id, so the fencing has to come from the transactional id.)

`commit` runs one transaction per partition: begin, send every record the partition's
messages owe, add the next offset to consume, commit. A reader at `read_committed` sees
all of it or none of it. A transaction that fails for any other reason (a broker away
longer than the deadline) is abandoned by closing its producer and opening a fresh one
under the same id, which aborts it on the coordinator; the caller sends the same records
again. The consumer's own commits are not used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TransactionalIdAuthorizationFailed,
)

from modpipe.core.errors import AccessError, ModpipeError
from modpipe.core.kafka import client_options, producer_options
from modpipe.core.offsets import OffsetTracker
from modpipe.core.records import Outgoing
from modpipe.core.settings import KafkaSettings

log = logging.getLogger(__name__)

_FENCED = (ProducerFenced, InvalidProducerEpoch)


class TransactionFailed(ModpipeError):
    """Some partitions' transactions did not commit: send their records again. Partitions
    in neither `failed` nor `fenced` committed."""

    def __init__(
        self,
        message: str,
        failed: set[TopicPartition],
        fenced: set[TopicPartition] | None = None,
    ) -> None:
        super().__init__(message)
        self.failed = failed
        self.fenced = fenced or set()


class Fenced(ModpipeError):
    """Another worker owns these partitions now; their outputs must be dropped, not retried."""

    def __init__(self, partitions: set[TopicPartition]) -> None:
        super().__init__(f"fenced on {sorted(partitions)}: another worker owns them now")
        self.partitions = partitions


@dataclass(frozen=True, slots=True)
class PartitionOutput:
    """What one input partition owes for the messages being committed, and the offset
    to resume from after them."""

    records: Sequence[Outgoing]
    next_offset: int


class PartitionTransactions:
    """Transactional producers for the input partitions this worker owns."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        prefix: str,
        *,
        max_request_size: int,
        linger_ms: int = 5,
    ) -> None:
        self._kafka = kafka
        self._group_id = group_id
        self._prefix = prefix
        self._options = {
            **client_options(kafka),
            **producer_options(kafka, max_request_size=max_request_size, linger_ms=linger_ms),
        }
        self._deadline_s = kafka.publish_deadline_s
        self._owned: set[TopicPartition] = set()  # assigned, and not fenced since
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}

    def transactional_id(self, tp: TopicPartition) -> str:
        """The id every owner of `tp` uses, so a new owner fences the old one."""
        return f"{self._prefix}.{tp.topic}.{tp.partition}"

    async def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """Take `partitions` over: open their producers, fencing every earlier holder.

        Call it before reading the partitions' committed offsets, so that no earlier holder
        can commit after they were read.
        """
        new = [tp for tp in partitions if tp not in self._owned]
        self._owned.update(new)
        await asyncio.gather(*(self._open(tp) for tp in new))

    async def take_over(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        """`assign` for a plain aiokafka consumer: the partitions paused meanwhile (nothing
        fetched from an older position), then positioned at what their owners committed."""
        if not partitions:
            return
        consumer.pause(*partitions)
        try:
            await self.assign(partitions)
            for tp in partitions:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, committed)
        finally:
            consumer.resume(*partitions)

    async def revoke(self, partitions: Iterable[TopicPartition]) -> None:
        """Give `partitions` up: close their producers (an open transaction is aborted)."""
        gone = list(partitions)
        self._owned.difference_update(gone)
        await asyncio.gather(*(self._close(tp) for tp in gone))

    def owned(self) -> set[TopicPartition]:
        """The partitions this worker took over and was not fenced from since."""
        return set(self._owned)

    async def close(self) -> None:
        """Close every producer."""
        await self.revoke(list(self._owned | set(self._producers)))

    async def commit(self, outputs: Mapping[TopicPartition, PartitionOutput]) -> None:
        """One transaction per partition, all at once.

        Raises TransactionFailed naming the partitions to send again (the others committed
        or were fenced), or Fenced for partitions another worker owns now (drop their
        outputs; the others committed).
        """
        results = await asyncio.gather(
            *(self._commit_one(tp, out) for tp, out in outputs.items()), return_exceptions=True
        )
        fenced: set[TopicPartition] = set()
        failed: dict[TopicPartition, BaseException] = {}
        for tp, result in zip(outputs, results, strict=True):
            if isinstance(result, Fenced):
                fenced |= result.partitions
            elif isinstance(result, Exception):
                failed[tp] = result
            elif isinstance(result, BaseException):
                raise result  # a cancellation
        if failed:
            raise TransactionFailed(
                f"transactions failed on {sorted(failed)}: {next(iter(failed.values()))!r}",
                failed=set(failed),
                fenced=fenced,
            )
        if fenced:
            raise Fenced(fenced)

    async def commit_tracked(
        self, tracker: OffsetTracker, positions: Mapping[TopicPartition, int]
    ) -> None:
        """Commit `positions` with the records `tracker` holds owed below them. Partitions
        fenced meanwhile are forgotten (their next owner decides their posts); those that
        failed stay for the next call."""
        outputs = {tp: PartitionOutput(tracker.owed(tp, p), p) for tp, p in positions.items()}
        lost: set[TopicPartition] = set()
        failed: set[TopicPartition] = set()
        try:
            await self.commit(outputs)
        except Fenced as exc:
            lost = exc.partitions
        except TransactionFailed as exc:
            lost, failed = exc.fenced, exc.failed
            log.warning("commit failed (%s); will send again", exc)
        if lost:
            log.warning("dropping outputs of fenced partitions %s", sorted(lost))
            tracker.forget(lost)
        tracker.mark_committed(
            {tp: p for tp, p in positions.items() if tp not in lost and tp not in failed}
        )

    async def _commit_one(self, tp: TopicPartition, out: PartitionOutput) -> None:
        if tp not in self._owned:
            raise Fenced({tp})
        try:
            producer = self._producers.get(tp) or await self._open(tp)
            await asyncio.wait_for(self._transact(producer, tp, out), self._deadline_s)
        except _FENCED:
            log.warning("fenced partition=%s: another worker owns it now", tp)
            self._owned.discard(tp)  # only a new assignment makes it ours again
            await self._close(tp)
            raise Fenced({tp}) from None
        except (KafkaError, TimeoutError, OSError) as exc:
            # The producer's state is unknown: the next one under the same id aborts what
            # this one left open (opened by the next commit, once the broker answers).
            log.warning("transaction failed partition=%s: %r; it will be sent again", tp, exc)
            await self._close(tp)
            raise TransactionFailed(f"partition {tp}: {exc!r}", failed={tp}) from exc
        except BaseException:
            await self._close(tp)  # cancelled mid-transaction: never reuse that producer
            raise

    async def _transact(
        self, producer: AIOKafkaProducer, tp: TopicPartition, out: PartitionOutput
    ) -> None:
        await producer.begin_transaction()
        futures = [
            await producer.send(r.topic, r.value, key=r.key, timestamp_ms=_ms(r.timestamp_s))
            for r in out.records
        ]
        await asyncio.gather(*futures)
        await producer.send_offsets_to_transaction({tp: out.next_offset}, self._group_id)
        await producer.commit_transaction()

    async def _open(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(**self._options, transactional_id=self.transactional_id(tp))
        try:
            # InitProducerId: fences the id's earlier holders and aborts what they left open.
            await asyncio.wait_for(producer.start(), self._deadline_s)
        except TransactionalIdAuthorizationFailed as exc:
            await _quietly(producer.stop())
            raise AccessError(
                f"Kafka refused transactional id {self.transactional_id(tp)!r}: {exc} "
                "(an ACL on TransactionalId is missing)"
            ) from None
        except BaseException:
            await _quietly(producer.stop())
            raise
        self._producers[tp] = producer
        return producer

    async def _close(self, tp: TopicPartition) -> None:
        producer = self._producers.pop(tp, None)
        if producer is not None:
            await _quietly(producer.stop())


def _ms(timestamp_s: float | None) -> int | None:
    return None if timestamp_s is None else int(timestamp_s * 1000)


async def _quietly(awaitable: Any) -> None:
    try:
        await asyncio.wait_for(awaitable, 10.0)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.debug("ignored while closing a producer: %r", exc)


class TransactionalPublisher:
    """One transactional producer for records that answer no input offset (a reviewer's
    verdict and label): all of them or none, each call one transaction."""

    def __init__(
        self, kafka: KafkaSettings, transactional_id: str, *, max_request_size: int
    ) -> None:
        self._options = {
            **client_options(kafka),
            **producer_options(kafka, max_request_size=max_request_size, linger_ms=2),
            "transactional_id": transactional_id,
        }
        self._deadline_s = kafka.publish_deadline_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, records: Sequence[Outgoing]) -> None:
        """Publish `records` in one transaction; TransactionFailed if it did not commit."""
        async with self._lock:
            try:
                if self._producer is None:
                    producer = AIOKafkaProducer(**self._options)
                    self._producer = producer
                    await asyncio.wait_for(producer.start(), self._deadline_s)
                await asyncio.wait_for(self._transact(self._producer, records), self._deadline_s)
            except (KafkaError, TimeoutError, OSError) as exc:
                await self.stop()  # the next one under the same id aborts what this left open
                raise TransactionFailed(f"not published: {exc!r}", failed=set()) from exc

    async def _transact(self, producer: AIOKafkaProducer, records: Sequence[Outgoing]) -> None:
        await producer.begin_transaction()
        futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
        await asyncio.gather(*futures)
        await producer.commit_transaction()

    async def stop(self) -> None:
        """Close the producer (an open transaction is aborted)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quietly(producer.stop())
