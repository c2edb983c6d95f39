"""`modpipe escalator`: consume escalations, decide each on the frontier tier, publish.

Up to `escalation.max_in_flight` posts are decided at once, so one slow call never blocks
a partition; a partition's offset is committed only up to its first post not yet decided.

`delivery.guarantee: exactly_once` (the default): a decided post's records wait in the
OffsetTracker until its offset is committable, then go out in one Kafka transaction per
partition with that offset (modpipe/core/transactions.py), through a producer that fences
the partition's earlier owners. A kill, a zombie or an outage leaves the post to be
decided again, and its first final outcome, claimed on Redis before publishing
(modpipe/core/final_verdicts.py), is what it gets again: the provider is not asked twice
and a review item is never followed by a different verdict. `at_least_once`: each
post's records are published as soon as it is decided, and its offset committed after.

Not Faust: per-message commits with out-of-order completion need direct control of
offsets, which Faust agents do not give above concurrency 1 (faust-streaming #606).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from escalation.frontier import Decided, FrontierTier
from modpipe.core.dead_letters import dead_letter, readable_error
from modpipe.core.errors import BudgetExhausted, InvalidRecord, ProviderError
from modpipe.core.final_verdicts import FinalVerdicts, Outcome
from modpipe.core.kafka import build_producer, consumer_options, publish
from modpipe.core.metrics import Metrics
from modpipe.core.offsets import OffsetTracker
from modpipe.core.outputs import fallback_verdict, review_then_verdict
from modpipe.core.probes import report_lag
from modpipe.core.records import (
    Escalation,
    Incoming,
    Outgoing,
    Post,
    ReviewItem,
    ReviewReason,
    Verdict,
    encode,
    first_verdict_id,
    parse_escalation,
    wire_limits,
)
from modpipe.core.settings import Settings
from modpipe.core.transactions import (
    PartitionTransactions,
)

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: EscalationWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Finish and commit what we hold before another worker takes it over.
        await self._worker.drain()
        self._worker.offsets.forget(set(revoked))
        if self._worker.txns is not None:
            await self._worker.txns.revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        worker = self._worker
        if worker.txns is not None and assigned:
            # Fence the partitions' earlier owners first, then read where they committed:
            # nothing an earlier owner still had in flight can commit after that read.
            await worker.txns.take_over(worker.consumer, assigned)
        worker.last_input = time.monotonic()  # --idle-exit counts from here
        worker.ready.set()


class EscalationWorker:
    """Consumes escalations and publishes one final verdict per post."""

    def __init__(self, settings: Settings, frontier: FrontierTier | None, metrics: Metrics) -> None:
        self.settings = settings
        self.frontier = frontier
        self.metrics = metrics
        self.offsets = OffsetTracker()
        self._limits = wire_limits(settings.kafka.max_message_bytes)
        self._final = FinalVerdicts.open(settings)
        self.txns = (
            PartitionTransactions(
                settings.kafka,
                settings.escalation.group_id,
                settings.escalation.group_id,
                max_request_size=self._limits.request_bytes,
                linger_ms=2,
            )
            if settings.delivery.guarantee == "exactly_once"
            else None
        )
        self.processed = 0
        self.failure: BaseException | None = None
        self._slots = asyncio.Semaphore(settings.escalation.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._committing = asyncio.Lock()
        self.last_input = time.monotonic()
        self.ready = asyncio.Event()  # set once partitions are assigned
        self._consumer: AIOKafkaConsumer | None = None
        self._producer = (
            None
            if self.txns is not None
            else build_producer(
                settings.kafka, max_request_size=self._limits.request_bytes, linger_ms=2
            )
        )

    def stop(self) -> None:
        """Graceful stop: take no new posts, finish those in flight, commit."""
        self._stopping.set()

    async def run(
        self,
        *,
        max_posts: int | None = None,
        idle_exit: float | None = None,
        shutdown_budget_s: float = 30.0,
    ) -> int:
        """Run until stopped, `max_posts` started, or `idle_exit` seconds without input."""
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            **consumer_options(s.kafka, s.escalation.group_id),
            auto_offset_reset="earliest",
            max_poll_records=s.escalation.max_in_flight,
        )
        if self._producer is not None:
            await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe([s.topics.escalations], listener=_Rebalance(self))
        log.info(
            "escalator started group=%s provider=%s",
            s.escalation.group_id,
            self.frontier.provider.name if self.frontier else "none",
        )
        self.last_input = time.monotonic()
        lag = asyncio.create_task(
            report_lag(
                s.kafka,
                s.escalation.group_id,
                s.topics.escalations,
                self.metrics.consumer_lag,
            )
        )
        try:
            await self._consume(max_posts, idle_exit)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout=shutdown_budget_s)
        finally:
            lag.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._commit()
            await self._consumer.stop()
            if self.txns is not None:
                await self.txns.close()
            if self._producer is not None:
                await self._producer.stop()
            await self._final.aclose()
        log.info("escalator stopped processed=%d", self.processed)
        return 1 if self.failure else 0

    async def _consume(self, max_posts: int | None, idle_exit: float | None) -> None:
        """Start a task per escalation read, committing on the interval, until stopped,
        failed, `max_posts` started, or idle for `idle_exit` seconds."""
        assert self._consumer is not None
        last_commit = time.monotonic()
        while not self._stopping.is_set() and self.failure is None:
            batches = await self._consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    await self._start(record)
                    self.last_input = time.monotonic()
            if time.monotonic() - last_commit >= self.settings.escalation.commit_interval_s:
                await self._commit()
                last_commit = time.monotonic()
            if max_posts is not None and self.processed >= max_posts:
                return
            # Idle counts from the first assignment: a restart may wait a session timeout
            # for a crashed member's partitions.
            if (
                idle_exit is not None
                and self.ready.is_set()
                and not self._tasks
                and (time.monotonic() - self.last_input > idle_exit)
            ):
                log.info("idle for %.1fs; stopping", idle_exit)
                return

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The consumer (once `run` started it)."""
        assert self._consumer is not None
        return self._consumer

    async def drain(self) -> None:
        """Wait for every post in flight, then commit."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._commit()

    async def _start(self, record: ConsumerRecord[bytes, bytes]) -> None:
        await self._slots.acquire()  # backpressure: at most max_in_flight posts at once
        tp = TopicPartition(record.topic, record.partition)
        self.offsets.started(tp, record.offset)
        self.processed += 1
        task = asyncio.create_task(self._handle(tp, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            try:
                records = await self._outputs(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # this record alone failed: it goes to the DLQ
                records = [self._dead_letter(record, exc)]
            if self.txns is not None:
                self.offsets.finished(tp, record.offset, records)  # published with its commit
                return
            await self._publish(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broker that stays down: stop, do not commit
            log.exception("escalation failed partition=%d offset=%d", tp.partition, record.offset)
            self.failure = exc
        else:
            self.offsets.finished(tp, record.offset)
        finally:
            self._slots.release()

    async def _outputs(self, record: ConsumerRecord[bytes, bytes]) -> list[Outgoing]:
        escalation, post = parse_escalation(record.value, self._limits.record_bytes)
        first = await self._final.get(post.post_id)
        if first is None:
            outcome = await self._decide(record, escalation, post)
            # Another worker (or a zombie) may have claimed the post meanwhile: theirs wins.
            first = (await self._final.claim([(post.post_id, outcome)]))[0] or outcome
        else:
            log.info("post decided before; publishing its first outcome post_id=%s", post.post_id)
        outputs = self._published(escalation, post, first)
        for out in outputs:
            if len(out.value) > self._limits.record_bytes:
                raise InvalidRecord(
                    f"its {out.topic} record would be {len(out.value)} bytes, "
                    f"over the maximum of {self._limits.record_bytes}",
                    "size",
                )
        return outputs

    def _dead_letter(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> Outgoing:
        msg = Incoming.of(record)
        reason = exc.reason if isinstance(exc, InvalidRecord) else "internal"
        self.metrics.dlq.labels(reason).inc()
        self.metrics.posts.labels("escalator", "dlq").inc()
        return dead_letter(msg, exc, self.settings.topics.dlq)

    async def _decide(
        self, record: ConsumerRecord[bytes, bytes], escalation: Escalation, post: Post
    ) -> Outcome:
        started = time.monotonic()
        if self.frontier is None:
            return self._review(record, escalation, post, "no_provider", "no provider configured")
        try:
            decided = await self.frontier.decide(post.text)
        except ProviderError as exc:
            reason: ReviewReason = (
                "budget" if isinstance(exc, BudgetExhausted) else "provider_failed"
            )
            return self._review(record, escalation, post, reason, str(exc))
        except Exception as exc:  # a bug below the provider: the post is good, a person decides
            detail = readable_error(exc)
            log.error("frontier failed post_id=%s: %s", post.post_id, detail)
            return self._review(record, escalation, post, "provider_failed", detail)
        finally:
            self.metrics.stage_seconds.labels("escalate").observe(time.monotonic() - started)
        return Outcome(encode(self._verdict(record, escalation, post, decided)))

    def _verdict(
        self, record: ConsumerRecord[Any, Any], escalation: Escalation, post: Post, decided: Decided
    ) -> Verdict:
        latency_s = max(0.0, time.time() - record.timestamp / 1000)
        self.metrics.stage_seconds.labels("end_to_end").observe(latency_s)
        self.metrics.decisions.labels(decided.tier, decided.action).inc()
        self.metrics.posts.labels("escalator", "verdict").inc()
        return Verdict(
            post_id=post.post_id,
            action=decided.action,
            categories=decided.categories,
            scores=decided.scores,
            tier=decided.tier,
            model=decided.model,
            policy_version=escalation.policy_version,
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=escalation.cost_usd + decided.cost_usd,
            verdict_id=first_verdict_id(post.post_id),
        )

    def _review(
        self,
        record: ConsumerRecord[Any, Any],
        escalation: Escalation,
        post: Post,
        reason: ReviewReason,
        detail: str,
    ) -> Outcome:
        latency_s = max(0.0, time.time() - record.timestamp / 1000)
        verdict = fallback_verdict(
            post_id=post.post_id,
            scores=escalation.scores,
            model=escalation.model,
            policy_version=escalation.policy_version,
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=escalation.cost_usd,
        )
        self.metrics.stage_seconds.labels("end_to_end").observe(latency_s)
        self.metrics.decisions.labels("fallback", "review").inc()
        self.metrics.review.labels(reason).inc()
        self.metrics.posts.labels("escalator", "review").inc()
        return Outcome(encode(verdict), reason, detail)

    def _published(self, escalation: Escalation, post: Post, outcome: Outcome) -> list[Outgoing]:
        """The records of a post's final outcome: for a review, its item, then the verdict
        (a reviewer has the post before the platform is told)."""
        item = None
        if outcome.review_reason is not None:
            item = ReviewItem(
                post=escalation.post,
                scores=escalation.scores,
                model=escalation.model,
                policy_version=escalation.policy_version,
                reason=cast("ReviewReason", outcome.review_reason),
                detail=outcome.review_detail,
            )
        key = post.post_id.encode()
        return review_then_verdict(self.settings.topics, key, outcome.verdict, item)

    async def _send(self, r: Outgoing) -> Any:
        assert self._producer is not None  # at least once
        return await self._producer.send(r.topic, r.value, key=r.key)

    async def _publish(self, records: list[Outgoing]) -> None:
        # One at a time, in order: a review item is on Kafka before its verdict.
        for record in records:
            await publish(self._send, [record], self.settings.kafka.publish_deadline_s)

    async def _commit(self) -> None:
        # One commit at a time: the loop's timer and a rebalance's drain would otherwise
        # both send the same records owed.
        async with self._committing:
            await self._commit_now()

    async def _commit_now(self) -> None:
        # Commit only positions whose every earlier post has its output on Kafka (exactly
        # once: in the same transaction as the position).
        positions = self.offsets.committable()
        if not positions or self._consumer is None:
            return
        if self.txns is None:
            try:
                await self._consumer.commit(positions)
                self.offsets.mark_committed(positions)
            except (CommitFailedError, KafkaError) as exc:
                log.warning("commit failed (%s); will retry", exc)
            return
        await self.txns.commit_tracked(self.offsets, positions)
