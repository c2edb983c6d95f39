"""The triage worker: Faust owns the consumer group; each fetch goes to triage as one batch.

streams/delivery.py hands every fetch from Faust's consumer to `_deliver` as one list
(Faust's own per-message delivery costs more than the triage work). Up to
`triage.max_batches_in_flight` batches are then between the classifier and the broker at
once, so a remote classifier stays busy while the next batch is fetched and the last one
is published. Two stages take them strictly in the order fetched: one publishes a
classified batch, the next finishes it.

`delivery.guarantee: exactly_once` (the default): each batch's records and the next input
offset of each of its partitions commit in one Kafka transaction per partition
(modpipe/core/transactions.py), through a producer that fences every earlier owner of the
partition; a reader at read_committed sees each batch's outputs once or not at all. A
transaction that fails (a broker away longer than `kafka.publish_deadline_s`) is aborted
and the same records are sent again until the broker is back: the worker never exits for
an outage. Faust's own commits see no acks and commit nothing.

`at_least_once`: the records go through Faust's idempotent producer, and the batch is
acked (in offset order, without holes) once the broker acknowledged every record, so
Faust's commit timer never passes an unpublished result; a crash re-decides what was
published after the last commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiokafka import TopicPartition

from classifiers import Classifier
from modpipe.core.final_verdicts import FinalVerdicts
from modpipe.core.kafka import publish
from modpipe.core.metrics import Metrics
from modpipe.core.probes import report_lag
from modpipe.core.records import Outgoing, wire_limits
from modpipe.core.settings import Settings
from modpipe.core.transactions import (
    Fenced,
    PartitionOutput,
    PartitionTransactions,
    TransactionFailed,
)
from streams.connection import build_app, translated
from streams.delivery import Fetched, ack, committed_offsets, install_bulk_delivery, untaken
from streams.triage import BatchResult, Triage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Batch:
    """Fetched messages on their way: classified, then published, then finished."""

    fetched: Fetched
    classified: asyncio.Task[BatchResult]
    epoch: int  # the assignment it was fetched under
    published: asyncio.Task[None] | None = None


class TriageWorker:
    """Runs the triage worker until stopped, `max_posts` are done, or `idle_exit` passes."""

    def __init__(self, settings: Settings, classifier: Classifier, metrics: Metrics) -> None:
        self.settings = settings
        self._final = FinalVerdicts.open(settings)
        self.triage = Triage(settings, classifier, metrics, final=self._final)
        self.metrics = metrics
        self.processed = 0
        self._max_posts: int | None = None
        self.failure: BaseException | None = None
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._stopping = asyncio.Event()
        self._last_activity = time.monotonic()
        # Batches between the classifier and the broker, oldest first: each waits to be
        # published, then to be finished. The slots bound how many are in flight.
        self._to_send: asyncio.Queue[_Batch] = asyncio.Queue()
        self._to_ack: asyncio.Queue[_Batch] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.triage.max_batches_in_flight)
        self._in_flight = 0
        self._drained = asyncio.Event()  # set while no batch is in flight
        self._drained.set()
        # Exactly once: set while no take-over of partitions is under way.
        self._taking_over = asyncio.Event()
        self._taking_over.set()
        # Per partition, the next offset to take: the committed offset read at take-over,
        # then one past each message handed to triage. A message is handed at most once per
        # assignment, even when a seek (Faust's own, on a rebalance) or a fetch made before
        # the take-over brings it a second time.
        self._next: dict[TopicPartition, int] = {}
        self._epoch = 0  # counts the partitions given up: a batch from an older epoch is stale
        limits = wire_limits(settings.kafka.max_message_bytes)
        self._txns = (
            PartitionTransactions(
                settings.kafka,
                settings.app_id,
                settings.app_id,
                max_request_size=limits.request_bytes,
            )
            if settings.delivery.guarantee == "exactly_once"
            else None
        )
        self.app = build_app(settings, settings.triage.state_dir / settings.app_id)
        topic = self.app.topic(
            settings.topics.posts,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.kafka.partitions,
        )
        self.app.topics.add(topic)  # subscribes; delivery bypasses Faust's streams
        install_bulk_delivery(self.app, self._deliver)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_assigned(self, sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # --idle-exit counts from the last assignment: a restart may wait a session
        # timeout for a crashed member's partitions before any post can arrive.
        self._last_activity = time.monotonic()
        if self._txns is not None:
            self._taking_over.clear()
            try:
                assignment = self.app.consumer.assignment()
                assigned = {TopicPartition(tp.topic, tp.partition) for tp in assignment}
                # Fence the partitions' earlier owners first (this waits for a transaction
                # they were committing), then read where they committed: nothing of theirs
                # can commit after that read.
                await self._txns.assign(assigned)
                await self.app.consumer.perform_seek()
                self._next = {
                    TopicPartition(tp.topic, tp.partition): offset
                    for tp, offset in committed_offsets(self.app).items()
                    if offset is not None
                }
            finally:
                self._taking_over.set()
        self.ready.set()

    async def _on_revoked(self, sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # Finish the batches in flight before the partitions move, so their next owner
        # starts after them instead of deciding them again. Bounded: the rebalance must
        # complete within the session timeout.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._drained.wait(), timeout=self.settings.kafka.session_timeout_s / 3
            )
        if self._txns is not None:
            # Batches still in flight now were fetched for an assignment that ends here:
            # even if the same partitions come back, they are read again from the
            # committed offsets, so these must never commit.
            self._epoch += 1
            await self._txns.revoke(self._txns.owned())
        else:
            await self.app.consumer.commit()

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batches in flight, publish, commit."""
        self._stopping.set()

    async def _deliver(self, fetched: Fetched) -> None:
        # Called by the fetch loop with each fetch (at most `batch_max` posts: the poll
        # size): it fetches again once this returns, so waiting for a slot is back-pressure.
        if self._txns is not None:
            # A fetch made before the take-over may hold posts its earlier owner committed,
            # and a seek may bring posts already taken: neither is decided again.
            await self._taking_over.wait()
            fetched = untaken(fetched, self._next)
            if not fetched.posts:
                return
        await self._slots.acquire()
        if self._stopping.is_set():
            # Never published, so consumed again after a restart; parked until the app
            # stops the fetcher.
            self._slots.release()
            await asyncio.Event().wait()
        self._in_flight += 1
        self._drained.clear()
        classified = asyncio.create_task(self.triage.process(fetched.posts))
        self._to_send.put_nowait(_Batch(fetched, classified, self._epoch))

    async def _send_in_order(self) -> None:
        """Publish each batch once it is classified, strictly in the order fetched.

        At least once, the next batch is sent as soon as this one's records are with the
        producer, so waiting for the broker's acknowledgements overlaps with it. Exactly
        once, batches commit one after the other; the batches already classified when a
        commit begins share its transactions (fewer coordinator round trips under load).
        """
        carry: _Batch | None = None
        while True:
            batch = carry or await self._to_send.get()
            carry = None
            result = await batch.classified
            if self._txns is None:
                await self._hand_over(batch, result.records)
                self._to_ack.put_nowait(batch)
                continue
            ready = [(batch, result)]
            while not self._to_send.empty():
                carry = self._to_send.get_nowait()
                if not carry.classified.done():
                    break
                ready.append((carry, carry.classified.result()))
                carry = None
            await self._commit(ready)
            for done, _ in ready:
                done.published = asyncio.create_task(asyncio.sleep(0))
                self._to_ack.put_nowait(done)

    async def _commit(self, ready: list[tuple[_Batch, BatchResult]]) -> None:
        """Commit the batches' transactions; during an outage, again until the broker is back."""
        assert self._txns is not None
        # A batch fetched before its partitions were revoked never commits.
        current = [(b, r) for b, r in ready if b.epoch == self._epoch]
        if len(current) < len(ready):
            log.info("dropping %d batches fetched before a revocation", len(ready) - len(current))
        outputs = _per_partition(current)
        delay = 0.2
        while outputs:
            if any(b.epoch != self._epoch for b, _ in current):
                log.info("dropping batches whose partitions were revoked while committing")
                return
            try:
                await self._txns.commit(outputs)
                return
            except Fenced as exc:
                # Another worker owns these now and decides their posts; the rest committed.
                log.warning("dropping a batch's outputs for fenced partitions %s", exc.partitions)
                return
            except TransactionFailed as exc:
                log.warning("batch not committed (%s); sending it again in %.1fs", exc, delay)
                outputs = {tp: o for tp, o in outputs.items() if tp in exc.failed}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _hand_over(self, batch: _Batch, records: list[Outgoing]) -> None:
        handed = asyncio.Event()
        batch.published = asyncio.create_task(
            publish(
                self._sender(len(records), handed), records, self.settings.kafka.publish_deadline_s
            )
        )
        if records:
            waiting = asyncio.create_task(handed.wait())
            await asyncio.wait({waiting, batch.published}, return_when="FIRST_COMPLETED")
            waiting.cancel()

    async def _ack_in_order(self) -> None:
        """Finish each batch once it is published, in the order fetched. At least once, the
        ack lets Faust commit it: acks without holes, so Faust's commit never passes an
        unpublished result."""
        while True:
            batch = await self._to_ack.get()
            await cast("asyncio.Task[None]", batch.published)
            if self._txns is None:
                ack(self.app, batch.fetched)
            self._slots.release()
            self._in_flight -= 1
            if not self._in_flight:
                self._drained.set()
            self.processed += len(batch.fetched.posts)
            self._last_activity = time.monotonic()
            if self._max_posts is not None and self.processed >= self._max_posts:
                self._stopping.set()

    async def _stage(self, stage: Callable[[], Awaitable[None]]) -> None:
        # A batch that fails stops the worker: neither it nor any later batch is committed.
        try:
            await stage()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            log.exception("triage batch failed; stopping without committing it")
            self.failure = exc
            self._stopping.set()
            raise

    def _sender(self, n: int, handed: asyncio.Event) -> Callable[[Outgoing], Awaitable[Any]]:
        """`_send`, setting `handed` once `n` records are with the producer."""
        remaining = n

        async def send(r: Outgoing) -> Any:
            nonlocal remaining
            future = await self._send(r)
            remaining -= 1
            if not remaining:
                handed.set()
            return future

        return send

    async def _send(self, r: Outgoing) -> Any:
        with translated():
            return await self.app.producer.send(r.topic, r.key, r.value, None, r.timestamp_s, None)

    async def run(
        self,
        *,
        max_posts: int | None = None,
        idle_exit: float | None = None,
        shutdown_budget_s: float = 30.0,
    ) -> int:
        """Run to completion; the exit code is 0 after a clean stop, 1 after a failure."""
        self._max_posts = max_posts
        self._last_activity = time.monotonic()
        stages = {
            asyncio.create_task(self._stage(self._send_in_order)),
            asyncio.create_task(self._stage(self._ack_in_order)),
        }
        await self.app.start()
        lag = asyncio.create_task(
            report_lag(
                self.settings.kafka,
                self.settings.app_id,
                self.settings.topics.posts,
                self.metrics.consumer_lag,
            )
        )
        log.info(
            "triage worker started app_id=%s topic=%s guarantee=%s",
            self.settings.app_id,
            self.settings.topics.posts,
            self.settings.delivery.guarantee,
        )
        try:
            await self._until_stopped(idle_exit)
            await self._drain(stages, shutdown_budget_s)
        finally:
            lag.cancel()
            await self._abandon(stages)
            if self._txns is not None:
                await self._txns.close()
            await self.app.stop()
            await self._final.aclose()
        log.info("triage worker stopped processed=%d", self.processed)
        return 1 if self.failure else 0

    async def _until_stopped(self, idle_exit: float | None) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.2)
            idle_s = time.monotonic() - self._last_activity
            if idle_exit is not None and self.ready.is_set() and idle_s > idle_exit:
                log.info("idle for %.1fs; stopping", idle_exit)
                self._stopping.set()

    async def _drain(self, stages: set[asyncio.Task[None]], shutdown_budget_s: float) -> None:
        """Let the batches in flight finish (unless one failed), so the commit covers them."""
        drained = asyncio.create_task(self._drained.wait())
        done, _ = await asyncio.wait(
            {drained, *stages}, timeout=shutdown_budget_s, return_when="FIRST_COMPLETED"
        )
        if not done:
            log.warning(
                "batches still in flight after %.0fs; they will be consumed again",
                shutdown_budget_s,
            )
        drained.cancel()
        await self._abandon(stages)
        if self._txns is None:
            # Faust skips a commit while another is in flight (it only waits for that
            # one), so the commit on stop can miss the last batch. With nothing left to
            # ack, a second commit after the first cannot be skipped.
            for _ in range(2):
                await self.app.consumer.commit()

    async def _abandon(self, stages: set[asyncio.Task[None]]) -> None:
        """Stop publishing and finishing; batches still in flight are never committed."""
        tasks: list[asyncio.Future[Any]] = list(stages)
        for queue in (self._to_send, self._to_ack):
            while not queue.empty():
                batch = queue.get_nowait()
                tasks += [t for t in (batch.classified, batch.published) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _per_partition(
    batches: list[tuple[_Batch, BatchResult]],
) -> dict[TopicPartition, PartitionOutput]:
    """The batches' records grouped by the input partition of the message that owes them,
    in fetch order, each with the offset after that partition's last message."""
    records: dict[TopicPartition, list[Outgoing]] = {}
    ends: dict[TopicPartition, int] = {}
    for batch, result in batches:
        for owed in result.owed:
            tp = TopicPartition(owed.msg.topic, owed.msg.partition)
            records.setdefault(tp, []).extend(result.records[owed.start : owed.end])
        for ftp, offsets in batch.fetched.offsets.items():
            if offsets:
                tp = TopicPartition(ftp.topic, ftp.partition)
                ends[tp] = max(ends.get(tp, 0), offsets[-1] + 1)
    return {tp: PartitionOutput(records.get(tp, []), end) for tp, end in ends.items()}
