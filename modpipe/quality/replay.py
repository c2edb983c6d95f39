"""The pipeline replayed in-process on a batch of posts: both workers, on real Kafka and
Redis, until every post has its outputs, and the reviewers' audit labels published from
known labels. What `modpipe flywheel` runs each round (modpipe/quality/flywheel.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka.errors import KafkaError

from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.core.errors import StackError
from modpipe.core.kafka import (
    build_producer,
    consumer_options,
    ensure_pipeline_topics,
    ensure_topics,
    publish,
    topic_partitions,
)
from modpipe.core.metrics import Metrics
from modpipe.core.records import Label, Outgoing, encode, wire_limits
from modpipe.core.settings import Settings
from modpipe.quality.dataset import read_topics
from streams.app import TriageWorker


async def publish_records(settings: Settings, records: list[Outgoing]) -> None:
    producer = build_producer(
        settings.kafka,
        max_request_size=wire_limits(settings.kafka.max_message_bytes).request_bytes,
    )
    try:
        await producer.start()

        async def send(r: Outgoing) -> Any:
            return await producer.send(r.topic, r.value, key=r.key)

        await publish(send, records, settings.kafka.publish_deadline_s)
    except KafkaError as exc:
        raise StackError(f"cannot publish to Kafka at {settings.kafka.bootstrap}: {exc}") from exc
    finally:
        await producer.stop()


async def _count(settings: Settings, topic: str) -> int:
    """The committed records in `topic` now (not its end offsets: transactions put their
    commit markers between the records)."""
    from aiokafka import AIOKafkaConsumer

    parts = await topic_partitions(settings.kafka, [topic])
    consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        count = 0
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            count += sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
        return count
    finally:
        await consumer.stop()


async def run_pipeline(settings: Settings, posts: list[tuple[str, str]], timeout_s: float) -> None:
    """Both workers on `posts` until every post has its outputs on Kafka."""
    await ensure_pipeline_topics(settings)
    await ensure_topics(settings.kafka, [settings.topics.labels], settings.kafka.partitions)
    metrics = Metrics()
    classifier = build_classifier(settings)
    frontier = build_frontier(settings, metrics)
    triage = TriageWorker(settings, classifier, metrics)
    escalator = EscalationWorker(settings, frontier, metrics)
    triaged = asyncio.create_task(triage.run(max_posts=len(posts)))
    escalating = asyncio.create_task(escalator.run())
    deadline = time.monotonic() + timeout_s
    try:
        values = [
            Outgoing(
                settings.topics.posts,
                pid.encode(),
                json.dumps({"post_id": pid, "text": text, "surface": "flywheel"}).encode(),
            )
            for pid, text in posts
        ]
        await publish_records(settings, values)
        await asyncio.wait_for(asyncio.shield(triaged), max(1.0, deadline - time.monotonic()))
        if triaged.result() != 0:
            raise StackError("the triage worker failed during the replay (see the log)")
        escalated = await _count(settings, settings.topics.escalations)
        while escalator.processed < escalated:
            if escalating.done() or time.monotonic() > deadline:
                raise StackError(
                    f"the escalator decided {escalator.processed} of {escalated} posts "
                    f"within {timeout_s:.0f}s"
                )
            await asyncio.sleep(0.1)
    except TimeoutError as exc:
        raise StackError(
            f"the triage worker did not finish {len(posts)} posts in {timeout_s:.0f}s"
        ) from exc
    finally:
        triage.stop()
        escalator.stop()  # finishes the posts in flight, publishes, commits
        await asyncio.gather(triaged, escalating, return_exceptions=True)
        await classifier.aclose()
        if frontier is not None:
            await frontier.aclose()
    if escalating.result() != 0:
        raise StackError("the escalation worker failed during the replay (see the log)")


async def review_audits(settings: Settings, truth: dict[str, int], category: str) -> int:
    """Reviewers' labels for every audit item, from the known labels, on the labels topic."""
    review = (await read_topics(settings.kafka, [settings.topics.review]))[settings.topics.review]
    labels = []
    for _, item in review:
        post = item.get("post", {})
        if item.get("reason") != "audit" or post.get("post_id") not in truth:
            continue
        block = truth[post["post_id"]] == 1
        label = Label(
            post=post,
            action="block" if block else "allow",
            categories=[category] if block else [],
            reviewer="flywheel-replay",
            reason="audit",
        )
        labels.append(Outgoing(settings.topics.labels, post["post_id"].encode(), encode(label)))
    await publish_records(settings, labels)
    return len(labels)
