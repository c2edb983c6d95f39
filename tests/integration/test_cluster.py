"""Broker failures under both workers, on stacks of their own (never the shared broker).

- A three-broker KRaft cluster (replication factor 3, min.insync.replicas 2): the leader
  of the posts partitions, then the leader of the verdicts partitions, is killed with
  SIGKILL mid-run. No post may be lost; duplicates are counted.
- One broker restarted under both workers: the time from the broker answering again to
  both workers consuming again is measured and printed (not asserted: timing on a
  shared 2-core machine is not a pass/fail criterion).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from classifiers import build_classifier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.kafka import client_options, kafka_ready
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings, deep_merge, load_settings
from modpipe.stack import broker_pids, stack_down, stack_up
from streams.app import TriageWorker
from tests.conftest import CONFIG
from tests.integration.conftest import Outputs, wait_until

TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]


def values(start: int, n: int) -> list[bytes]:
    return [
        json.dumps({"post_id": f"p{i}", "text": f"{TEXTS[i % 3]} {i}"}).encode()
        for i in range(start, start + n)
    ]


def private_stack(home: Path, base_port: int, redis_port: int, brokers: int) -> Settings:
    shared = load_settings(CONFIG).stack
    jars = shared.home / f"kafka-{shared.kafka_version}"
    (home / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
    bootstrap = ",".join(f"127.0.0.1:{base_port + 10 * i}" for i in range(brokers))
    return load_settings(
        CONFIG,
        {
            "kafka": {"bootstrap": bootstrap, "replication_factor": min(3, brokers)},
            "stack": {"home": str(home), "redis_port": redis_port, "kafka_heap": "256m"},
        },
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = private_stack(tmp_path_factory.mktemp("cluster"), 21192, 21479, 3)
    try:
        asyncio.run(stack_up(settings, timeout_s=180, brokers=3))
        yield settings
    finally:
        stack_down(settings)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = private_stack(tmp_path_factory.mktemp("single"), 22192, 22479, 1)
    try:
        asyncio.run(stack_up(settings, timeout_s=120))
        yield settings
    finally:
        stack_down(settings)


def on_stack(stack: Settings, make_settings: Any, **overrides: Any) -> Settings:
    """Unique topics and groups (make_settings) on a private stack's brokers."""
    s = make_settings(
        **deep_merge(
            {
                "kafka": {
                    "bootstrap": stack.kafka.bootstrap,
                    "replication_factor": stack.kafka.replication_factor,
                },
                "triage": {"batch_max": 100, "audit_rate": 0.0},
                "escalation": {"provider": "none"},
            },
            overrides,
        )
    )
    return s


async def leader(settings: Settings, topic: str, partition: int = 0) -> int:
    admin = AIOKafkaAdminClient(**client_options(settings.kafka))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return next(p["leader"] for p in described[0]["partitions"] if p["partition"] == partition)


async def kill_leader(stack: Settings, settings: Settings, topic: str) -> int:
    node = await leader(settings, topic)
    pid = broker_pids(stack)[node]
    assert pid is not None, f"broker {node} is not running"
    os.kill(pid, signal.SIGKILL)
    print(f"killed broker {node} (pid {pid}), leader of {topic}[0]")
    return node


def start_workers(settings: Settings) -> tuple[list[Any], list[asyncio.Task[int]]]:
    workers = [
        TriageWorker(settings, build_classifier(settings), Metrics()),
        EscalationWorker(settings, None, Metrics()),
    ]
    return workers, [asyncio.create_task(w.run()) for w in workers]


async def stop_workers(workers: list[Any], tasks: list[asyncio.Task[int]]) -> list[int]:
    for w in workers:
        w.stop()
    return list(await asyncio.wait_for(asyncio.gather(*tasks), 120))


async def test_leader_kills_on_three_brokers_lose_no_post(cluster: Settings, make_settings) -> None:
    settings = on_stack(cluster, make_settings)
    n = 3000
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.posts, values(0, 1000))
        workers, tasks = start_workers(settings)
        try:
            await wait_until(lambda: len(out.verdicts) >= 200, 90, "the first verdicts")
            await kill_leader(cluster, settings, settings.topics.posts)
            await publish(settings.kafka, settings.topics.posts, values(1000, 1000))
            await wait_until(lambda: len(out.verdicts) >= 1200, 120, "verdicts after kill 1")
            await stack_up(cluster, 180)  # the killed broker comes back
            await kill_leader(cluster, settings, settings.topics.verdicts)
            await publish(settings.kafka, settings.topics.posts, values(2000, 1000))
            await wait_until(lambda: len(out.verdicts) >= n, 180, f"{n} verdicts")
        finally:
            codes = await stop_workers(workers, tasks)
            await stack_up(cluster, 180)
        await out.settle()
    assert codes == [0, 0]
    assert set(out.verdicts) == {f"p{i}" for i in range(n)}  # 0 lost
    duplicates = sum(len(v) - 1 for v in out.verdicts.values())
    print(f"duplicate verdicts across two leader kills: {duplicates} of {n}")
    assert duplicates < n


def by_worker(out: Outputs) -> tuple[int, int]:
    """Outputs so far of (triage, escalator): verdict records by tier plus escalations."""
    tiers = [v["tier"] for vs in out.verdicts.values() for v in vs]
    triage = sum(t == "small" for t in tiers) + sum(len(e) for e in out.escalations.values())
    return triage, sum(t == "fallback" for t in tiers)


async def test_recovery_after_broker_restart(single: Settings, make_settings) -> None:
    """Measure: broker answering again -> both workers writing again (printed)."""
    settings = on_stack(single, make_settings, escalation={"provider": "none"})
    n = 6000
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.posts, values(0, n))
        workers, tasks = start_workers(settings)
        try:
            await wait_until(lambda: len(out.verdicts) >= 300, 90, "the first verdicts")
            pid = broker_pids(single)[1]
            assert pid is not None
            os.kill(pid, signal.SIGTERM)  # mid-run: both workers have work in hand
            while broker_pids(single)[1] is not None:
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # the workers see the broker gone for a while
            await stack_up(single, 120)
            await kafka_ready(settings.kafka, 60)
            back = time.monotonic()
            before = by_worker(out)
            await wait_until(lambda: by_worker(out)[0] > before[0], 120, "triage writing")
            triage_s = time.monotonic() - back
            await wait_until(lambda: by_worker(out)[1] > before[1], 120, "escalator writing")
            escalator_s = time.monotonic() - back
            await wait_until(lambda: len(out.verdicts) >= n, 180, f"{n} verdicts")
        finally:
            codes = await stop_workers(workers, tasks)
    assert codes == [0, 0]
    assert set(out.verdicts) == {f"p{i}" for i in range(n)}
    print(
        f"recovery after a broker restart: triage writing again {triage_s:.1f}s, "
        f"escalator {escalator_s:.1f}s after the broker answered a metadata request"
    )
