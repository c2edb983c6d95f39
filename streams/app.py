"""The triage worker: Faust owns the consumer group; each fetch goes to triage as one batch.

Delivery contract: at least once. streams/delivery.py hands every fetch from Faust's
consumer to `_deliver` as one list (Faust's own per-message delivery costs more than the
triage work). Up to `triage.max_batches_in_flight` batches are then between the
classifier and the broker at once, so a remote classifier stays busy while the next batch
is fetched and the last one is published. Two stages take them strictly in the order
fetched: one sends a classified batch's records to the producer, the next acks the
batch's messages once the broker has acknowledged every record it owes. Acks so stay in
offset order without holes, and Faust's commit (every `broker_commit_interval`) never
passes an unpublished result. If a batch fails, neither it nor any later batch is acked;
the worker stops, and they are consumed again after a restart. A record that the
producer had to retry may land after a later batch's records; no record is acked early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust

from classifiers import Classifier
from modpipe.core import kafka_compat
from modpipe.core.kafka import publish, report_lag
from modpipe.core.metrics import Metrics
from modpipe.core.records import Outgoing, wire_limits
from modpipe.core.settings import Settings
from streams.connection import broker_credentials, broker_urls, idempotent_producer
from streams.delivery import Fetched, ack, install_bulk_delivery
from streams.triage import BatchResult, Triage

log = logging.getLogger(__name__)


def build_app(settings: Settings, datadir: Path) -> faust.App:
    """The Faust app, tuned for throughput: raw bytes in and out, large fetches."""
    datadir.parent.mkdir(parents=True, exist_ok=True)
    kafka_compat.install()  # Faust's fetcher is aiokafka's: deliver odd header names too
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.kafka),
        broker_credentials=broker_credentials(settings.kafka),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.kafka.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.triage.commit_interval_s,  # what a crash re-processes
        broker_session_timeout=settings.kafka.session_timeout_s,
        # The worker drains its own batches on stop (TriageWorker.run); fetched messages
        # it never took are simply not acked.
        stream_wait_empty=False,
        broker_max_poll_records=settings.triage.batch_max,  # one fetch is at most one batch
        consumer_max_fetch_size=4 * 1024 * 1024,
        producer_linger_ms=5,
        # Any one record triage writes, a dead letter (up to ~1.5 MB) included.
        producer_max_request_size=wire_limits(settings.kafka.max_message_bytes).request_bytes,
        logging_config=None,
    )
    app.producer = idempotent_producer(app)  # every record triage writes is a decision
    return app


@dataclass(slots=True)
class _Batch:
    """Fetched messages on their way: classified, then sent, then acknowledged."""

    fetched: Fetched
    classified: asyncio.Task[BatchResult]
    published: asyncio.Task[None] | None = None


class TriageWorker:
    """Runs the triage worker until stopped, `max_posts` are done, or `idle_exit` passes."""

    def __init__(self, settings: Settings, classifier: Classifier, metrics: Metrics) -> None:
        self.settings = settings
        self.triage = Triage(settings, classifier, metrics)
        self.metrics = metrics
        self.processed = 0
        self._max_posts: int | None = None
        self.failure: BaseException | None = None
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._stopping = asyncio.Event()
        self._last_activity = time.monotonic()
        # Batches between the classifier and the broker, oldest first: each waits to be sent,
        # then to be acknowledged by the broker. The slots bound how many are in flight.
        self._to_send: asyncio.Queue[_Batch] = asyncio.Queue()
        self._to_ack: asyncio.Queue[_Batch] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.triage.max_batches_in_flight)
        self._in_flight = 0
        self._drained = asyncio.Event()  # set while no batch is in flight
        self._drained.set()
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
        self.ready.set()

    async def _on_revoked(self, sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # Finish and commit the batches in flight before the partitions move, so their next
        # owner starts after them instead of deciding them again. Bounded: the rebalance
        # must complete within the session timeout.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._drained.wait(), timeout=self.settings.kafka.session_timeout_s / 3
            )
        await self.app.consumer.commit()

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batches in flight, publish, commit."""
        self._stopping.set()

    async def _deliver(self, fetched: Fetched) -> None:
        # Called by the fetch loop with each fetch (at most `batch_max` posts: the poll
        # size): it fetches again once this returns, so waiting for a slot is back-pressure.
        await self._slots.acquire()
        if self._stopping.is_set():
            # Never acked, so consumed again after a restart; parked until the app stops
            # the fetcher.
            self._slots.release()
            await asyncio.Event().wait()
        self._in_flight += 1
        self._drained.clear()
        classified = asyncio.create_task(self.triage.process(fetched.posts))
        self._to_send.put_nowait(_Batch(fetched, classified))

    async def _send_in_order(self) -> None:
        """Send each batch's records once it is classified, strictly in the order fetched.

        The next batch is sent as soon as this one's records are with the producer, so
        waiting for the broker's acknowledgements overlaps with it.
        """
        deadline_s = self.settings.kafka.publish_deadline_s
        while True:
            batch = await self._to_send.get()
            records = (await batch.classified).records
            handed = asyncio.Event()
            batch.published = asyncio.create_task(
                publish(self._sender(len(records), handed), records, deadline_s)
            )
            if records:
                waiting = asyncio.create_task(handed.wait())
                await asyncio.wait({waiting, batch.published}, return_when="FIRST_COMPLETED")
                waiting.cancel()
            self._to_ack.put_nowait(batch)

    async def _ack_in_order(self) -> None:
        """Ack each batch once the broker has acknowledged all its records, in the order
        fetched: acks without holes, so Faust's commit never passes an unpublished result."""
        while True:
            batch = await self._to_ack.get()
            await cast("asyncio.Task[None]", batch.published)
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
        # A batch that fails stops the worker: neither it nor any later batch is acked.
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
            "triage worker started app_id=%s topic=%s",
            self.settings.app_id,
            self.settings.topics.posts,
        )
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.2)
                if idle_exit is not None and time.monotonic() - self._last_activity > idle_exit:
                    log.info("idle for %.1fs; stopping", idle_exit)
                    self._stopping.set()
            # Let the batches in flight finish (unless one failed), so the commit covers them.
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
            # Faust skips a commit while another is in flight (it only waits for that one),
            # so the commit on stop can miss the last batch. With nothing left to ack, a
            # second commit after the first cannot be skipped and includes every ack.
            for _ in range(2):
                await self.app.consumer.commit()
        finally:
            lag.cancel()
            await self._abandon(stages)
            await self.app.stop()
        log.info("triage worker stopped processed=%d", self.processed)
        return 1 if self.failure else 0

    async def _abandon(self, stages: set[asyncio.Task[None]]) -> None:
        """Stop sending and acking; batches still in flight are never acked."""
        tasks: list[asyncio.Future[Any]] = list(stages)
        for queue in (self._to_send, self._to_ack):
            while not queue.empty():
                batch = queue.get_nowait()
                tasks += [t for t in (batch.classified, batch.published) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
