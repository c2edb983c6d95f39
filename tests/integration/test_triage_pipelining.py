"""Several batches in flight on the real broker: published and acked in offset order only.

The invariant behind every test here: a committed offset never passes a post whose
verdict, escalation or dead letter is not on Kafka, whatever order the batches in flight
finish in, and whether the worker is killed, fails a batch, or stops cleanly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.capacity import Capacity, capacity_limited_vllm
from classifiers import Classification
from modpipe.cli.produce import publish
from modpipe.core.errors import ClassifierError
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from modpipe.core.settings import Settings
from streams.app import TriageWorker
from tests.integration.conftest import wait_until


def posts(n: int) -> list[bytes]:
    return [json.dumps({"post_id": f"p{i}", "text": f"post {i}"}).encode() for i in range(n)]


def accounted(c: Collector) -> set[str]:
    return set(c.outcomes.verdicts) | set(c.outcomes.escalations)


async def committed_posts(settings: Settings) -> set[str]:
    """The post_ids below the group's committed offset in every partition of the posts topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        topic = settings.topics.posts
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        committed = {tp: await consumer.committed(tp) or 0 for tp in parts}
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ids: set[str] = set()
        for tp in parts:
            while await consumer.position(tp) < committed[tp]:
                for r in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                    if r.offset < committed[tp]:
                        ids.add(json.loads(r.value)["post_id"])
        return ids
    finally:
        await consumer.stop()


class OutOfOrder:
    """Answers batches after a random delay, so later batches often finish first."""

    model = "out-of-order"
    kind: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, explode_on: int | None = None, gate: asyncio.Event | None = None) -> None:
        self.gate = gate  # from the sixth batch on, each waits for it
        self.calls = 0
        self.running = 0
        self.most_running = 0
        self.explode_on = explode_on
        self._rng = random.Random(7)

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        self.calls += 1
        call = self.calls
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self._rng.uniform(0.0, 0.15))
            if self.gate is not None and call > 5:
                await self.gate.wait()
            if call == self.explode_on:
                raise RuntimeError("bug in the classifier")
            return [Classification({"harassment": 0.0}, 1) for _ in texts]
        finally:
            self.running -= 1

    async def aclose(self) -> None:
        pass


async def verdict_order(settings: Settings, n: int) -> list[int]:
    """Post numbers in the order their verdicts sit on the (one-partition) verdicts topic."""
    consumer = AIOKafkaConsumer(
        settings.topics.verdicts,
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    order: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(order) < n:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    order += [int(json.loads(r.value)["post_id"][1:]) for r in records]
    finally:
        await consumer.stop()
    return order


async def test_batches_finishing_out_of_order_are_published_in_order(make_settings) -> None:
    settings = make_settings(
        kafka={"partitions": 1},
        triage={"batch_max": 20, "max_batches_in_flight": 4, "audit_rate": 0.0},
    )
    await ensure_pipeline_topics(settings)  # one partition each: one order to check
    await publish(settings.kafka, settings.topics.posts, posts(400))
    classifier = OutOfOrder()
    worker = TriageWorker(settings, classifier, Metrics())
    assert await worker.run(max_posts=400) == 0

    assert classifier.most_running > 1, "no two batches were ever in flight together"
    assert classifier.most_running <= 4
    assert await verdict_order(settings, 400) == list(range(400))
    assert await committed_posts(settings) == {f"p{i}" for i in range(400)}


async def test_a_failed_batch_with_others_in_flight_commits_only_what_came_before(
    make_settings, settings: Settings, collector: Collector
) -> None:
    settings = make_settings(
        app_id=settings.app_id,
        topics=settings.topics.model_dump(),
        triage={"batch_max": 20, "max_batches_in_flight": 4, "audit_rate": 0.0},
    )
    await publish(settings.kafka, settings.topics.posts, posts(400))
    classifier = OutOfOrder(explode_on=6)
    worker = TriageWorker(settings, classifier, Metrics())
    assert await worker.run(idle_exit=10.0) == 1

    committed = await committed_posts(settings)
    await asyncio.sleep(1.0)  # the collector catches up with what was published
    assert committed <= accounted(collector), "a committed post has no output"
    assert len(committed) < 400

    restarted = TriageWorker(settings, OutOfOrder(), Metrics())
    assert await restarted.run(idle_exit=3.0) == 0
    await wait_until(lambda: len(accounted(collector)) >= 400, 20, "every post after restart")
    assert accounted(collector) == {f"p{i}" for i in range(400)}


async def test_sigkill_with_several_batches_in_flight_loses_nothing(
    settings: Settings, collector: Collector
) -> None:
    gpu = Capacity(latency_s=0.05, posts_per_s=20_000)  # each batch waits on the "GPU"
    async with capacity_limited_vllm(gpu) as url:
        env = {
            **os.environ,
            "MODPIPE_APP_ID": settings.app_id,
            "MODPIPE_METRICS__PORT": "0",
            "MODPIPE_TRIAGE__BATCH_MAX": "50",
            "MODPIPE_TRIAGE__MAX_BATCHES_IN_FLIGHT": "4",
            "MODPIPE_CLASSIFIER__BACKEND": "vllm-classify",
            "MODPIPE_CLASSIFIER__BASE_URL": url,
            "MODPIPE_CLASSIFIER__MAX_IN_FLIGHT": "4",
            "MODPIPE_CLASSIFIER__LABELS": '[null, "harassment", "hate"]',
            **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
        }
        cmd = [sys.executable, "-m", "modpipe", "worker"]
        await publish(settings.kafka, settings.topics.posts, posts(5000))
        proc = subprocess.Popen([*cmd, "--idle-exit", "30"], env=env)
        try:
            await wait_until(lambda: len(accounted(collector)) >= 1000, 60, "the first verdicts")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed_at = len(accounted(collector))
        assert killed_at < 5000, "killed too late to prove anything"
        assert gpu.most_in_flight > 1, "no two batches were ever in flight together"

        committed = await committed_posts(settings)
        await asyncio.sleep(1.0)  # the collector catches up with what was published
        assert committed <= accounted(collector), "a committed post has no output"

        rerun = await asyncio.to_thread(
            subprocess.run, [*cmd, "--idle-exit", "3"], env=env, timeout=120
        )
        assert rerun.returncode == 0
    await wait_until(lambda: len(accounted(collector)) >= 5000, 20, "every post")
    assert accounted(collector) == {f"p{i}" for i in range(5000)}


async def test_a_second_worker_joining_mid_run_loses_nothing(
    make_settings, settings: Settings, collector: Collector
) -> None:
    settings = make_settings(
        app_id=settings.app_id,
        topics=settings.topics.model_dump(),
        triage={"batch_max": 20, "max_batches_in_flight": 4, "audit_rate": 0.0},
    )
    await publish(settings.kafka, settings.topics.posts, posts(3000))
    gate = asyncio.Event()  # holds the first worker's batches until the second has joined
    first = TriageWorker(settings, OutOfOrder(gate=gate), Metrics())
    running = asyncio.create_task(first.run(idle_exit=5.0))
    await wait_until(lambda: len(accounted(collector)) >= 100, 60, "the first verdicts")
    second = TriageWorker(settings, OutOfOrder(), Metrics())
    joined = asyncio.create_task(second.run(idle_exit=5.0))
    await asyncio.wait_for(second.ready.wait(), 60)  # the partitions were rebalanced
    gate.set()
    assert await joined == 0
    assert await running == 0
    await wait_until(lambda: len(accounted(collector)) >= 3000, 20, "every post")
    assert accounted(collector) == {f"p{i}" for i in range(3000)}
    assert second.processed > 0, "the second worker never got a partition"
