"""Integration fixtures: the real local Kafka broker and Redis (started if not running)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.core.kafka import consumer_options, ensure_pipeline_topics, topic_partitions
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from modpipe.core.settings import Settings, load_settings
from streams.app import TriageWorker
from tests.conftest import CONFIG


@pytest.fixture(scope="session", autouse=True)
def local_stack() -> None:
    """Kafka and Redis on 127.0.0.1, as `make test` starts them (idempotent)."""
    from modpipe.stack import stack_up

    asyncio.run(stack_up(load_settings(CONFIG)))


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def collector(settings: Settings) -> AsyncIterator[Collector]:
    """Everything published on the test's output topics from now on."""
    await ensure_pipeline_topics(settings)
    c = Collector(settings, marker="")
    await c.start()
    yield c
    await c.stop()


class Worker(Protocol):
    def run(self) -> Awaitable[int]: ...

    def stop(self) -> None: ...


async def run_until(
    worker: Worker, done: Callable[[], bool], what: str, timeout_s: float = 60.0
) -> int:
    """Run `worker` until `done()` (the outputs a test expects are all seen), then stop it
    gracefully; its exit code. A worker that exits by itself first ends the wait too."""
    task = asyncio.ensure_future(worker.run())
    try:
        await wait_until(lambda: done() or task.done(), timeout_s, what)
    finally:
        worker.stop()
        code = await asyncio.wait_for(task, 60)
    return code


def _post_id(value: dict[str, Any]) -> str:
    post = value.get("post")
    return str(value.get("post_id") or (post.get("post_id") if isinstance(post, dict) else ""))


class Outputs:
    """Every record on a test's output topics from now on, duplicates included.

    `settle()` waits until everything published so far has been read, so counts taken
    after a worker stopped are final (a late duplicate cannot arrive after the count).
    """

    def __init__(self, settings: Settings) -> None:
        t = settings.topics
        self._settings = settings
        self._kinds = {t.verdicts: "verdicts", t.escalations: "escalations", t.review: "review"}
        self._dlq = t.dlq
        self.verdicts: dict[str, list[dict[str, Any]]] = {}
        self.escalations: dict[str, list[dict[str, Any]]] = {}
        self.review: dict[str, list[dict[str, Any]]] = {}
        self.dead_letters: list[dict[str, Any]] = []
        self.where: list[tuple[str, int, int, bytes | None]] = []
        # A platform's reader: committed transactions only.
        self._consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
        self._read: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Outputs:
        await ensure_pipeline_topics(self._settings)
        names = {*self._kinds, self._dlq}
        parts = await topic_partitions(self._settings.kafka, names)
        # On a cluster, the broker asked may not know a topic created a moment ago yet.
        deadline = time.monotonic() + 30
        while {tp.topic for tp in parts} != names and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            parts = await topic_partitions(self._settings.kafka, names)
        await self._consumer.start()
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:  # positions fixed now, before anything is published
            self._read[tp] = await self._consumer.position(tp)
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _consume(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for m in messages:
                    self._add(tp.topic, m.value)
                    self.where.append((tp.topic, tp.partition, m.offset, m.key))
            for tp in self._read:  # past transaction markers too, unlike the last offset read
                self._read[tp] = await self._consumer.position(tp)

    def _add(self, topic: str, raw: bytes | None) -> None:
        try:
            value = json.loads(raw or b"")
        except ValueError:
            return  # a test's deliberately bad input (escalations are an input topic too)
        if not isinstance(value, dict):
            return
        if topic == self._dlq:
            self.dead_letters.append(value)
        else:
            getattr(self, self._kinds[topic]).setdefault(_post_id(value), []).append(value)

    def decided(self) -> set[str]:
        """Post ids with a verdict or an escalation (everything triage owes a valid post)."""
        return set(self.verdicts) | set(self.escalations)

    def duplicates(self) -> int:
        """Records beyond the first of their kind for a post: a second verdict, escalation or
        review item. (An escalated post has an escalation and, from tier 2, a verdict.)"""
        kinds = (self.verdicts, self.escalations, self.review)
        return sum(len(records) - 1 for kind in kinds for records in kind.values())

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Return once every record published before this call has been read."""
        ends = await self._consumer.end_offsets(list(self._read))
        await wait_until(
            lambda: all(self._read[tp] >= end for tp, end in ends.items()),
            timeout_s,
            "the output topics read to their end",
        )


@pytest.fixture
async def outputs(settings: Settings) -> AsyncIterator[Outputs]:
    """Every record on the test's output topics from now on, duplicates included."""
    async with Outputs(settings) as o:
        yield o


async def run_both_workers(settings: Settings) -> tuple[TriageWorker, EscalationWorker]:
    """The triage worker, then the escalator, each until its input stays idle; both exit 0."""
    triage = TriageWorker(settings, build_classifier(settings), Metrics())
    assert await asyncio.wait_for(triage.run(idle_exit=4.0), 90) == 0
    metrics = Metrics()
    frontier = build_frontier(settings, metrics)
    assert frontier is not None
    try:
        escalator = EscalationWorker(settings, frontier, metrics)
        assert await asyncio.wait_for(escalator.run(idle_exit=3.0), 60) == 0
    finally:
        await frontier.aclose()
    return triage, escalator
