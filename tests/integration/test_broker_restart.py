"""Kafka restarting under both workers: every post still ends with its final verdict.

The test runs its own second stack (Kafka and Redis on free ports, in a home of its own,
as tests/integration/test_stack.py does) and restarts that broker, so the shared one on
127.0.0.1:9092 and everyone's tests on it are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from classifiers import build_classifier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings, load_settings
from modpipe.stack import stack_down, stack_up
from streams.app import TriageWorker
from tests.conftest import CONFIG, MakeSettings
from tests.integration.conftest import Outputs, wait_until

TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]
OUTAGE_S = 2.0  # how long the broker stays down: the workers must notice it is gone


def free_port_pair() -> int:
    """A free port whose successor is free too (the broker's controller listens there)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


@pytest.fixture
async def own_stack(make_settings: MakeSettings, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings for a Kafka and Redis of this test's own, started here and stopped after."""
    shared = load_settings(CONFIG).stack
    jars = shared.home / f"kafka-{shared.kafka_version}"
    (tmp_path / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
    kafka_port, redis_port = free_port_pair(), free_port_pair()
    settings = make_settings(
        kafka={"bootstrap": f"127.0.0.1:{kafka_port}"},
        stack={"home": str(tmp_path), "redis_port": redis_port},
        redis={"url": f"redis://127.0.0.1:{redis_port}/0"},
        triage={"batch_max": 100, "audit_rate": 0.0, "state_dir": str(tmp_path / "faust")},
        escalation={"provider": "none"},
    )
    assert settings.kafka.bootstrap != load_settings(CONFIG).kafka.bootstrap
    await stack_up(settings)
    try:
        yield settings
    finally:
        await asyncio.to_thread(stack_down, settings)


async def restart_kafka(settings: Settings, outage_s: float = OUTAGE_S) -> None:
    """Stop this test's broker and Redis (the store of first outcomes goes away too), wait,
    start them again."""
    await asyncio.to_thread(stack_down, settings)  # bounded: SIGKILL after its timeout
    await asyncio.sleep(outage_s)
    await stack_up(settings)  # bounded: fails after its timeout


def posts(n: int) -> list[bytes]:
    """`n` post values, p0 to p{n-1}, a mix of allows, blocks and escalations."""
    return [
        json.dumps({"post_id": f"p{i}", "text": f"{TEXTS[i % 3]} {i}"}).encode() for i in range(n)
    ]


@contextlib.asynccontextmanager
async def both_workers(settings: Settings) -> AsyncIterator[list[asyncio.Future[int]]]:
    """The triage worker and the escalator running; stopped after, each exiting 0."""
    workers: list[TriageWorker | EscalationWorker] = [
        TriageWorker(settings, build_classifier(settings), Metrics()),
        EscalationWorker(settings, None, Metrics()),
    ]
    tasks = [asyncio.ensure_future(w.run()) for w in workers]
    try:
        yield tasks
    finally:
        for w in workers:
            w.stop()
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    assert codes == [0, 0]


async def all_verdicts(out: Outputs, tasks: list[asyncio.Future[int]], n: int) -> None:
    """Wait for `n` final verdicts (or a worker that exited)."""
    await wait_until(
        lambda: len(out.verdicts) >= n or any(t.done() for t in tasks),
        180,
        f"{n} final verdicts",
    )


async def test_broker_restart_loses_no_post(own_stack: Settings) -> None:
    settings = own_stack
    values = posts(3000)
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.posts, values[:1500])
        async with both_workers(settings) as tasks:
            started = time.monotonic()
            await wait_until(lambda: len(out.verdicts) >= 300, 60, "300 verdicts")
            # The rate the workers ran at before the outage, measured in this run (from
            # their start: on a loaded machine the reader may see 300 verdicts at once).
            rate = len(out.verdicts) / (time.monotonic() - started)
            await restart_kafka(settings)
            await publish(settings.kafka, settings.topics.posts, values[1500:])
            await all_verdicts(out, tasks, 3000)
        await out.settle()
    assert set(out.verdicts) == {f"p{i}" for i in range(3000)}
    assert out.duplicates() == 0  # read_committed: an aborted batch's records never show
    assert rate > 0


async def test_an_outage_longer_than_the_publish_deadline_stops_no_worker(
    own_stack: Settings,
) -> None:
    # Transactions that cannot commit are aborted and sent again once the broker is back:
    # a worker never exits for an outage, and nothing is lost or published twice.
    deadline_s = 3.0
    kafka = own_stack.kafka.model_copy(update={"publish_deadline_s": deadline_s})
    settings = own_stack.model_copy(update={"kafka": kafka})
    values = posts(2000)
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.posts, values[:1000])
        async with both_workers(settings) as tasks:
            await wait_until(lambda: len(out.verdicts) >= 200, 60, "the first verdicts")
            await restart_kafka(settings, outage_s=3 * deadline_s)
            assert not any(t.done() for t in tasks), "a worker exited during the outage"
            await publish(settings.kafka, settings.topics.posts, values[1000:])
            await all_verdicts(out, tasks, 2000)
        await out.settle()
    assert set(out.verdicts) == {f"p{i}" for i in range(2000)}
    assert out.duplicates() == 0
