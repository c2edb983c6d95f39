"""The triage worker: a Faust app with one agent that batches posts into the classifier.

Delivery contract: at least once. Faust acks the events of a `take_events()` batch when
the agent asks for the next batch, and acked offsets are committed every
`broker_commit_interval`. The agent asks for the next batch only after every record the
current one owes is published and acknowledged by the broker, so a committed offset
always has its verdict, escalation or dead letter on Kafka. If the batch fails or is
cancelled half way, its messages are marked so that Faust never acks them; they are
consumed again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import faust

from classifiers import Classifier
from modpipe.core.kafka import publish, report_lag
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Outgoing
from modpipe.core.settings import Settings
from streams.triage import Triage

log = logging.getLogger(__name__)


def build_app(settings: Settings, datadir: Path) -> faust.App:
    """The Faust app, tuned for throughput: raw bytes in and out, large fetches."""
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.kafka.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.triage.commit_interval_s,  # what a crash re-processes
        broker_session_timeout=settings.kafka.session_timeout_s,
        # The agent parks a finished batch during shutdown, so waiting for an empty
        # stream buffer would never end; unprocessed events are simply not acked.
        stream_wait_empty=False,
        stream_buffer_maxsize=max(16384, 8 * settings.triage.batch_max),
        broker_max_poll_records=max(2000, settings.triage.batch_max),
        consumer_max_fetch_size=4 * 1024 * 1024,
        producer_linger_ms=5,
        producer_max_request_size=4 * settings.kafka.max_message_bytes,
        logging_config=None,
    )


def _never_ack(events: Sequence[Any]) -> None:
    # Faust's take_events() acks the batch in a `finally`, even when the agent raised.
    # A message already flagged as acked is skipped there, so its offset is never
    # committed and it is delivered again after a restart.
    for event in events:
        event.message.acked = True


class TriageWorker:
    """Runs the triage agent until stopped, `max_posts` are done, or `idle_exit` passes."""

    def __init__(self, settings: Settings, classifier: Classifier, metrics: Metrics) -> None:
        self.settings = settings
        self.triage = Triage(settings, classifier, metrics)
        self.metrics = metrics
        self.processed = 0
        self._max_posts: int | None = None
        self.failure: BaseException | None = None
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._stopping = asyncio.Event()
        self._between_batches = asyncio.Event()
        self._between_batches.set()
        self._last_activity = time.monotonic()
        self.app = build_app(settings, settings.triage.state_dir / settings.app_id)
        topic = self.app.topic(
            settings.topics.posts,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.kafka.partitions,
        )
        self.app.on_partitions_assigned.connect(self._on_assigned)
        # Concurrency 1: faust-streaming #606 loses messages above 1; scale by partitions.
        self.app.agent(topic, name="triage", concurrency=1)(self._agent)

    async def _on_assigned(self, sender: Any, /, *_: Any, signal: Any, **__: Any) -> None:
        # --idle-exit counts from the last assignment: a restart may wait a session
        # timeout for a crashed member's partitions before any post can arrive.
        self._last_activity = time.monotonic()
        self.ready.set()

    def stop(self) -> None:
        """Ask for a graceful stop: finish the batch in hand, publish, commit."""
        self._stopping.set()

    async def _agent(self, stream: faust.StreamT) -> None:
        triage = self.settings.triage
        async for events in cast(faust.Stream, stream).take_events(
            triage.batch_max, within=triage.batch_within_s
        ):
            if self._stopping.is_set():
                _never_ack(events)
                await asyncio.Event().wait()  # parked until the app cancels the agent
            self._between_batches.clear()
            try:
                await self._handle(events)
                # Ack now rather than when take_events() resumes: a graceful stop may
                # cancel the agent before it asks for the next batch, and the commit on
                # stop must include this one. The ack in take_events' finally is then a
                # no-op for messages already acked.
                for event in events:
                    await stream.ack(event)
            except BaseException as exc:
                _never_ack(events)
                if not isinstance(exc, asyncio.CancelledError):
                    log.exception("triage batch failed; stopping without committing it")
                    self.failure = exc
                    self._stopping.set()
                    self._between_batches.set()
                    await asyncio.Event().wait()
                raise
            self._between_batches.set()

    async def _handle(self, events: Sequence[Any]) -> None:
        batch = [
            Incoming(
                key=e.message.key,
                value=e.message.value,
                topic=e.message.topic,
                partition=e.message.partition,
                offset=e.message.offset,
                timestamp_s=e.message.timestamp,
            )
            for e in events
        ]
        result = await self.triage.process(batch)
        await publish(self._send, result.records, self.settings.kafka.publish_deadline_s)
        self.processed += len(batch)
        self._last_activity = time.monotonic()
        max_posts = self._max_posts
        if max_posts is not None and self.processed >= max_posts:
            self._stopping.set()

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
        await self.app.start()
        lag = asyncio.create_task(
            report_lag(
                self.settings.kafka.bootstrap,
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
            try:
                await asyncio.wait_for(self._between_batches.wait(), timeout=shutdown_budget_s)
            except TimeoutError:
                log.warning(
                    "batch still running after %.0fs; it will be consumed again", shutdown_budget_s
                )
            # Faust skips a commit while another is in flight (it only waits for that one),
            # so the commit on stop can miss the last batch. With the agent parked, a
            # second commit after the first cannot be skipped and includes every ack.
            for _ in range(2):
                await self.app.consumer.commit()
        finally:
            lag.cancel()
            await self.app.stop()
        log.info("triage worker stopped processed=%d", self.processed)
        return 1 if self.failure else 0
