"""Triage throughput, steady-state latency and GPU-tier utilization on the local stack.

`modpipe bench` (modpipe/cli/bench.py) runs this from a source checkout. Every figure is
measured in one run, on the same broker, so they compare with each other even while other
work loads the machine:

- `aiokafka-raw`: consume, parse JSON, produce a small JSON verdict, commit per batch:
  the ceiling for a Python consumer here, and the baseline of `ratio`;
- `faust-minimal`: a bare Faust agent (take_events, parse, send): Faust's own delivery;
- `triage-null`: the triage worker with a constant classifier (`modpipe_posts_per_s`),
  exactly once (the default: a Kafka transaction per batch and input partition);
- `triage-null-at-least-once`: the same with `delivery.guarantee: at_least_once`;
- `triage-<backend>`: the worker with the configured classifier (`cpu_model_posts_per_s`);
- latency: a separate process publishes at `--rate` posts/s for `--seconds`; the worker
  (its own process, configured classifier) decides them; latency is each verdict's Kafka
  timestamp less its post's, over the posts after the first 5 s; the worker's peak RSS;
- gpu_wire: the worker with the vllm-classify backend against the vLLM wire-format test
  server behind a continuous-batching capacity model (bench/capacity.py), beside the same
  worker with one batch in flight.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness import PARTITIONS, Bench, posts, publish_all
from bench.latency import steady_latency
from classifiers import Classification, Classifier, build_classifier
from modpipe.core.errors import ClassifierError
from modpipe.core.kafka import ensure_topics
from modpipe.core.metrics import Metrics
from modpipe.core.progress import Progress, no_progress
from modpipe.core.settings import Settings
from streams.app import TriageWorker


class ConstantClassifier:
    """Scores everything 0: isolates the pipeline from the model."""

    model = "constant"
    kind: Literal["cpu", "gpu"] = "cpu"

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({}, 1) for _ in texts]

    async def aclose(self) -> None:
        return None


async def raw_baseline(bootstrap: str, topic: str, out_topic: str, n: int) -> float:
    """Posts per second for a plain aiokafka consume-transform-produce loop."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=2000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await consumer.start()
    await producer.start()
    done = 0
    started = time.perf_counter()
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            futures = []
            for records in batches.values():
                for r in records:
                    post = json.loads(r.value)
                    verdict = json.dumps({"post_id": post["post_id"], "action": "allow"})
                    futures.append(await producer.send(out_topic, verdict.encode(), key=r.key))
            for f in futures:
                await f
            await consumer.commit()
            done += len(futures)
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def faust_minimal(settings: Settings, n: int) -> float:
    """Posts per second for a bare Faust agent, tuned like the triage worker."""
    from streams.connection import build_app

    app = build_app(settings, settings.triage.state_dir / settings.app_id)
    out = settings.topics.verdicts
    done = asyncio.Event()
    seen: list[float] = []

    async def agent(stream: Any) -> None:
        count = 0
        async for events in stream.take_events(settings.triage.batch_max, within=0.05):
            if not seen:
                seen.append(time.perf_counter())
            futures = []
            for event in events:
                post = json.loads(event.message.value)
                value = json.dumps({"post_id": post["post_id"], "action": "allow"}).encode()
                futures.append(
                    await app.producer.send(out, event.message.key, value, None, None, None)
                )
            await asyncio.gather(*futures)
            count += len(events)
            if count >= n:
                done.set()

    app.agent(
        app.topic(settings.topics.posts, key_type=bytes, value_type=bytes),
        name="minimal",
        concurrency=1,
    )(agent)
    await app.start()
    try:
        await done.wait()
        return n / (time.perf_counter() - seen[0])
    finally:
        await app.stop()


async def triage_rate(settings: Settings, classifier: Classifier, n: int) -> float:
    """Posts per second for the triage worker over `n` posts, from its first batch."""
    worker = TriageWorker(settings, classifier, Metrics())
    first: list[float] = []
    last: list[float] = []
    handle = worker.triage.process

    async def timed(batch: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return await handle(batch)

    async def watch() -> None:
        while worker.processed < n:
            await asyncio.sleep(0.005)
        last.append(time.perf_counter())

    worker.triage.process = timed  # type: ignore[method-assign]
    watcher = asyncio.create_task(watch())
    try:
        await worker.run(max_posts=n)
    finally:
        watcher.cancel()
    if worker.failure is not None or not last:
        raise RuntimeError(f"the triage worker failed: {worker.failure}")
    return n / (last[0] - first[0])


async def gpu_wire(
    bench: Bench, topic: str, n: int, in_flight: int, latency_s: float, posts_per_s: float
) -> float:
    """Posts per second for the worker on vllm-classify against a capacity-limited server."""
    from bench.capacity import Capacity, capacity_limited_vllm

    capacity = Capacity(latency_s, posts_per_s)
    async with capacity_limited_vllm(capacity) as url:
        settings = bench.variant(
            f"gpu{in_flight}",
            posts_topic=topic,
            classifier={
                "backend": "vllm-classify",
                "base_url": url,
                "labels": [None, "harassment", "hate"],
                "max_in_flight": max(in_flight, 1),
            },
            triage={"batch_max": 256, "max_batches_in_flight": in_flight},
        )
        classifier = build_classifier(settings)
        try:
            return await triage_rate(settings, classifier, n)
        finally:
            await classifier.aclose()


async def _throughputs(
    bench: Bench, topic: str, n: int, done: Callable[[int], None]
) -> list[tuple[str, float]]:
    """Raw aiokafka, a minimal Faust app, triage with the constant classifier under each
    guarantee, then with the configured one: (name, posts/s) rows, in that order."""
    out = f"bench-{bench.tag}-raw-out"
    rows = [("aiokafka-raw", await raw_baseline(bench.bootstrap, topic, out, n))]
    done(2)
    rows.append(("faust-minimal", await faust_minimal(bench.variant("minimal", topic), n)))
    done(3)
    null = await triage_rate(bench.variant("null", topic), ConstantClassifier(), n)
    rows.append(("triage-null", null))
    done(4)
    at_least_once = bench.variant("null-alo", topic, delivery={"guarantee": "at_least_once"})
    null_alo = await triage_rate(at_least_once, ConstantClassifier(), n)
    rows.append(("triage-null-at-least-once", null_alo))
    done(5)
    cfg = bench.variant("model", topic)
    classifier = build_classifier(cfg)
    try:
        rows.append((f"triage-{cfg.classifier.backend}", await triage_rate(cfg, classifier, n)))
    finally:
        await classifier.aclose()
    done(6)
    return rows


async def run(
    base: Settings,
    config_path: Path | None,
    *,
    posts_n: int,
    batch: int,
    rate: float,
    seconds: float,
    gpu_posts: int,
    gpu_latency_s: float,
    gpu_rate: float,
    progress: Progress = no_progress,
) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """Every figure of one run: the JSON report, and the throughput rows for the table."""
    bench = Bench(base, config_path, batch)
    topic = f"bench-{bench.tag}-posts"

    def done(step: int) -> None:
        progress("bench", step, 9)

    await ensure_topics(base.kafka, [topic], PARTITIONS)
    await publish_all(bench.bootstrap, topic, posts(posts_n))
    done(1)
    rows = await _throughputs(bench, topic, posts_n, done)
    raw, _, null, null_alo, model = (posts_per_s for _, posts_per_s in rows)
    gpu = await gpu_wire(bench, topic, gpu_posts, 4, gpu_latency_s, gpu_rate)
    done(7)
    gpu_serial = await gpu_wire(bench, topic, gpu_posts, 1, gpu_latency_s, gpu_rate)
    rows.append(("gpu-wire", gpu))
    rows.append(("gpu-wire-serial", gpu_serial))
    done(8)
    latency, rss = await steady_latency(bench, rate, seconds)
    done(9)
    report = {
        "posts": posts_n,
        "batch_max": batch,
        "baseline_posts_per_s": round(raw),
        "modpipe_posts_per_s": round(null),
        "ratio": round(null / raw, 3),  # the default guarantee, exactly once
        "guarantees": {
            "exactly_once": {"posts_per_s": round(null), "ratio": round(null / raw, 3)},
            "at_least_once": {"posts_per_s": round(null_alo), "ratio": round(null_alo / raw, 3)},
        },
        "cpu_model_posts_per_s": round(model),
        "latency_ms": {str(int(rate)): latency},
        "gpu_wire": {
            "capacity_posts_per_s": gpu_rate,
            "modpipe_posts_per_s": round(gpu),
            "utilization": round(gpu / gpu_rate, 3),
            "one_batch_in_flight_posts_per_s": round(gpu_serial),
        },
        "worker_peak_rss_mb": round(rss, 1),
    }
    return report, rows
