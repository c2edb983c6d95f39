"""Kafka restarting under both workers: every post still ends with its final verdict.

The test stops and restarts the shared local broker; the other tests do not run
concurrently, and it waits for the broker to answer again before it ends. Faust's
consumer needs some seconds after the broker returns to fetch again, hence the long
idle exit."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest

from classifiers import build_classifier
from escalation.worker import EscalationWorker
from modpipe.cli.demo import Collector
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.settings import load_settings
from modpipe.stack import stack_up
from modpipe.stack.services import _recorded_pid, _services
from streams.app import TriageWorker
from tests.conftest import CONFIG
from tests.integration.conftest import wait_until


async def restart_kafka() -> None:
    settings = load_settings(CONFIG)
    kafka = _services(settings)[0]
    pid = _recorded_pid(kafka)
    if pid is None:
        pytest.skip("the broker was not started by modpipe stack up; cannot restart it")
    os.kill(pid, signal.SIGTERM)
    while _recorded_pid(kafka) is not None:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # the workers see the broker gone for a while
    await asyncio.to_thread(stack_up, settings)


async def test_broker_restart_loses_no_post(make_settings) -> None:
    settings = make_settings(
        triage={"batch_max": 100, "audit_rate": 0.0}, escalation={"provider": "none"}
    )
    texts = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]
    values = [
        json.dumps({"post_id": f"p{i}", "text": f"{texts[i % 3]} {i}"}).encode()
        for i in range(3000)
    ]
    async with Collector(settings, marker="") as c:
        await publish(settings.kafka.bootstrap, settings.topics.posts, values[:1500])
        classifier = build_classifier(settings)
        workers = [
            TriageWorker(settings, classifier, Metrics()),
            EscalationWorker(settings, None, Metrics()),
        ]
        tasks = [asyncio.create_task(w.run(idle_exit=30.0)) for w in workers]
        await wait_until(lambda: len(c.outcomes.verdicts) >= 300, 60, "the first verdicts")
        await restart_kafka()
        await publish(settings.kafka.bootstrap, settings.topics.posts, values[1500:])
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 180)
        assert codes == [0, 0]
        await wait_until(lambda: len(c.outcomes.verdicts) >= 3000, 20, "3000 final verdicts")
    assert set(c.outcomes.verdicts) == {f"p{i}" for i in range(3000)}
    duplicates = sum(len(v) - 1 for v in c.outcomes.verdicts.values())
    print(f"duplicate verdicts across the broker restart: {duplicates} of 3000")
