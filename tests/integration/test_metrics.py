"""Both workers' /metrics after a run: the counters add up to what was published."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from streams.app import TriageWorker
from tests.integration.conftest import wait_until
from tests.openai_wire_server import openai_wire_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    out: dict[str, dict[tuple, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(samples: dict[tuple, float], **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in samples.items() if want <= set(k))


@pytest.mark.integration
async def test_counters_add_up_after_a_run(make_settings) -> None:
    texts = ["have a nice day", "you are a fucking idiot", "your opinion is garbage", "screw you"]
    values = [
        json.dumps({"post_id": f"p{i}", "text": f"{texts[i % 4]} {i % 50}"}).encode()
        for i in range(400)
    ] + [b"broken", b"{}"]
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url, "deadline_s": 5.0},
            triage={"audit_rate": 0.0},
        )
        triage_port, escalator_port = free_port(), free_port()
        triage_metrics, escalator_metrics = Metrics(), Metrics()
        triage_metrics.serve("127.0.0.1", triage_port)
        escalator_metrics.serve("127.0.0.1", escalator_port)
        classifier = build_classifier(settings)
        frontier = build_frontier(settings, escalator_metrics)
        async with Collector(settings, marker="") as collector:
            await publish(settings.kafka, settings.topics.posts, values)
            await asyncio.gather(
                TriageWorker(settings, classifier, triage_metrics).run(idle_exit=3.0),
                EscalationWorker(settings, frontier, escalator_metrics).run(idle_exit=5.0),
            )
            await wait_until(lambda: len(collector.outcomes.verdicts) >= 400, 20, "400 verdicts")
        assert frontier is not None
        await frontier.aclose()

    tri, esc = scrape(triage_port), scrape(escalator_port)
    posts_in = total(tri["modpipe_posts_total"])
    decided = total(tri["modpipe_decisions_total"])
    escalated = total(tri["modpipe_posts_total"], outcome="escalated")
    dlq = total(tri["modpipe_dlq_total"])
    assert posts_in == 402
    assert decided + escalated + dlq == posts_in
    assert dlq == 2 and escalated > 0
    assert total(esc["modpipe_posts_total"]) == escalated
    assert total(esc["modpipe_decisions_total"]) == escalated

    # Each verdict carries its post's share of every tier: the shares add up to the
    # dollars counted per tier, and the frontier's part is what tier 2 added on top.
    finals = {pid: v[-1] for pid, v in collector.outcomes.verdicts.items()}
    small = total(tri["modpipe_cost_usd_total"], tier="small")
    frontier = total(esc["modpipe_cost_usd_total"], tier="frontier")
    assert small > 0 and frontier > 0
    assert small + frontier == pytest.approx(sum(v["cost_usd"] for v in finals.values()))
    tier2_added = sum(
        finals[pid]["cost_usd"] - e["cost_usd"] for pid, e in collector.outcomes.escalations.items()
    )
    assert frontier == pytest.approx(tier2_added)
    assert total(esc["modpipe_cache_requests_total"], result="hit") > 0
    assert total(esc["modpipe_provider_requests_total"], status="ok") == sum(wire.calls.values())
    assert total(tri["modpipe_batch_size_count"]) > 0
    assert total(tri["modpipe_stage_seconds_count"], stage="classify") > 0
    assert total(esc["modpipe_stage_seconds_count"], stage="end_to_end") == escalated
    assert 0 < total(esc["modpipe_budget_remaining_usd"]) < settings.escalation.daily_budget_usd
