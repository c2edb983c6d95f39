"""Escalation throughput against a slow provider, and the calls the cache saves.

    .venv/bin/python -m bench.escalator [--posts 2000] [--latency 0.5] [--in-flight 64]

Runs the escalation worker on the local Kafka and Redis against an OpenAI-compatible
endpoint (the label oracle, modpipe/quality/label_oracle.py) with a fixed latency per
call, on posts of which `--repeat` are copies of earlier texts (case and spacing
changed). The baseline,
in the same run, is the same worker with one call in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
import uuid
from pathlib import Path

from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from modpipe.core.settings import Settings, load_settings
from modpipe.quality.label_oracle import label_oracle

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def escalations(n: int, repeat: float, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    texts: list[str] = []
    out = []
    for i in range(n):
        if texts and rng.random() < repeat:
            text = "  " + rng.choice(texts).upper()
        else:
            text = f"borderline post {i} {rng.randrange(10**6)}"
            texts.append(text)
        out.append(
            json.dumps(
                {
                    "post": {"post_id": f"e{i}", "text": text},
                    "scores": {},
                    "model": "small",
                    "policy_version": "v",
                }
            ).encode()
        )
    return out


async def run(url: str, posts: int, in_flight: int, repeat: float) -> tuple[float, Metrics]:
    tag = uuid.uuid4().hex[:8]
    settings: Settings = load_settings(
        CONFIG,
        {
            "topics": {
                k: f"bench-{tag}-{k}" for k in ("posts", "verdicts", "escalations", "review", "dlq")
            },
            "escalation": {
                "provider": "chat",
                "base_url": url,
                "max_in_flight": in_flight,
                "group_id": f"bench-{tag}",
            },
            "redis": {"key_prefix": f"bench-{tag}"},
            "metrics": {"port": 0, "escalator_port": 0},
        },
    )
    metrics = Metrics()
    async with Collector(settings, marker="") as collector:
        await publish(settings.kafka, settings.topics.escalations, escalations(posts, repeat))
        frontier = build_frontier(settings, metrics)
        started = time.perf_counter()
        worker = EscalationWorker(settings, frontier, metrics)
        task = asyncio.create_task(worker.run())
        while len(collector.outcomes.verdicts) < posts:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        worker.stop()
        await task
        if frontier is not None:
            await frontier.aclose()
    return posts / elapsed, metrics


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--posts", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--repeat", type=float, default=0.3)
    args = p.parse_args()
    async with label_oracle({}, latency_s=args.latency) as server:
        serial, _ = await run(server.url, 20, 1, 0.0)
        server.calls.clear()
        rate, metrics = await run(server.url, args.posts, args.in_flight, args.repeat)
        calls = sum(server.calls.values())
    hits = metrics.cache.labels("hit")._value.get()
    print(f"provider latency {args.latency}s, {args.posts} escalations, {args.repeat:.0%} repeats")
    print(f"  1 in flight:   {serial:8.1f} escalations/s (baseline)")
    print(
        f"  {args.in_flight} in flight: {rate:8.1f} escalations/s ({rate / serial:.1f}x baseline; "
        f"bound without cache {args.in_flight / args.latency:.0f}/s)"
    )
    print(
        f"  provider calls {calls} for {args.posts} posts: {args.posts - calls} saved "
        f"({(args.posts - calls) / args.posts:.1%}); cache hits counted {hits:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
