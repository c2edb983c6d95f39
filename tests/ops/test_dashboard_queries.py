"""A real Prometheus scrapes both workers and the review console during a short pipeline
run; then every Grafana panel's query, evaluated by that Prometheus, must return data
(finite values)."""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from pathlib import Path

import pytest
import yaml

from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from modpipe.review.console import Console
from streams.app import TriageWorker
from tests.integration.conftest import local_stack, wait_until
from tests.openai_wire_server import openai_wire_server
from tests.ops.prometheus import DOCKER, free_port, local_config, prometheus

pytestmark = pytest.mark.integration
__all__ = ["local_stack"]  # the session fixture that starts Kafka and Redis

TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage", "screw you"]


def wave(n: int, tag: str) -> list[bytes]:
    """`n` posts with repeats (cache hits), plus two malformed values (DLQ)."""
    posts = [
        json.dumps({"post_id": f"{tag}{i}", "text": f"{TEXTS[i % 4]} {tag}{i % 25}"}).encode()
        for i in range(n)
    ]
    return [*posts, b"broken", b"{}"]


async def scraped_again(prom, jobs: tuple[str, ...], timeout_s: float = 10.0) -> None:
    """Wait until Prometheus has scraped every job twice more than now."""
    start = {job: await asyncio.to_thread(prom.scrapes_of, job) for job in jobs}

    def done() -> bool:
        return all(prom.scrapes_of(job) >= start[job] + 2 for job in jobs)

    await wait_until(done, timeout_s, f"two more scrapes of {jobs}")


async def test_every_dashboard_panel_has_data(make_settings, tmp_path: Path) -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "modpipe.json").read_text())
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url, "deadline_s": 5.0},
            triage={"audit_rate": 0.05},
            review={"group_id": f"test-review-{uuid.uuid4().hex[:10]}", "stats_interval_s": 0.5},
        )
        jobs = ("modpipe-worker", "modpipe-escalator", "modpipe-review")
        ports = {job: free_port() for job in jobs}
        triage_metrics, escalator_metrics, review_metrics = Metrics(), Metrics(), Metrics()
        endpoints = [
            triage_metrics.serve("127.0.0.1", ports["modpipe-worker"]),
            escalator_metrics.serve("127.0.0.1", ports["modpipe-escalator"]),
            review_metrics.serve("127.0.0.1", ports["modpipe-review"]),
        ]
        config = local_config({job: f"127.0.0.1:{p}" for job, p in ports.items()}, 0.5)
        classifier = build_classifier(settings)
        frontier = build_frontier(settings, escalator_metrics)
        triage = TriageWorker(settings, classifier, triage_metrics)
        escalator = EscalationWorker(settings, frontier, escalator_metrics)
        console = Console(settings, review_metrics)
        with prometheus(config, tmp_path / "prometheus") as prom:
            async with Collector(settings, marker="") as collector:
                await console.start()
                runs = [
                    asyncio.create_task(triage.run()),
                    asyncio.create_task(escalator.run()),
                ]
                try:
                    await asyncio.wait_for(triage.ready.wait(), 30)
                    await asyncio.wait_for(escalator.ready.wait(), 30)
                    # Two waves with scrapes between them: rates need a counter that grows
                    # between two samples, not one that appears at its final value.
                    for n, tag in ((150, "a"), (150, "b")):
                        expected = len(collector.outcomes.verdicts) + n
                        await publish(settings.kafka, settings.topics.posts, wave(n, tag))
                        await wait_until(
                            lambda e=expected: len(collector.outcomes.verdicts) >= e,
                            30,
                            f"{expected} verdicts",
                        )
                        await scraped_again(prom, jobs)
                finally:
                    triage.stop()
                    escalator.stop()
                    assert await asyncio.gather(*runs) == [0, 0]
                    await console.stop()
            results = {}
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    series = await asyncio.to_thread(prom.query, target["expr"])
                    values = [float(s["value"][1]) for s in series]
                    results[(panel["title"], target["expr"])] = values
            loaded = {r["name"] for r in await asyncio.to_thread(prom.rules)}
    for endpoint in endpoints:
        assert endpoint is not None
        endpoint.close()
    assert frontier is not None
    await frontier.aclose()
    await classifier.aclose()

    empty = [key for key, values in results.items() if not values]
    assert not empty, f"panels without data: {empty}"
    not_finite = [key for key, values in results.items() if not all(map(math.isfinite, values))]
    assert not not_finite, f"panels with NaN or Inf: {not_finite}"
    assert len(results) >= 14
    escalation_rate = results[next(k for k in results if k[0] == "Escalation rate")]
    assert 0 < escalation_rate[0] < 1
    budget_left = results[next(k for k in results if k[0] == "Frontier budget left today")]
    assert 0 < budget_left[0] < settings.escalation.daily_budget_usd  # the escalator's, not 0
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    # docker/alerts.yml loads in the real server too, every rule of it
    assert len(loaded) == sum(len(g["rules"]) for g in rules["groups"])
