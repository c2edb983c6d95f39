"""`modpipe bench`: triage throughput on the local stack beside a raw aiokafka baseline.

All runs read the same pre-published posts from one topic, each with its own consumer
group, in this process, one after another:
- `aiokafka-raw`: consume, parse JSON, produce a small JSON verdict, commit per batch
  (the ceiling for any Python consumer here);
- `faust-minimal`: a bare Faust agent (take_events, parse, send, raw codecs): Faust's
  own ceiling on this machine;
- `triage-null`: the Faust triage worker with a constant classifier (pipeline overhead);
- `triage-cpu`: the Faust triage worker with the configured classifier (the real thing).
Figures are posts per second and ratios to the baseline from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from classifiers import Classification, Classifier, build_classifier
from modpipe.cli.produce import publish
from modpipe.core.errors import ClassifierError
from modpipe.core.kafka import ensure_topics
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings, deep_merge, load_settings

TEXTS = [
    "have a nice day",
    "you are a fucking idiot",
    "your opinion is garbage",
    "the bus was late again today",
    "what a dumb idea",
]


class ConstantClassifier:
    """Scores everything 0: isolates the pipeline from the model."""

    model = "constant"
    kind: Literal["cpu", "gpu"] = "cpu"

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        return [Classification({}, 1) for _ in texts]

    async def aclose(self) -> None:
        return None


async def raw_baseline(bootstrap: str, topic: str, out_topic: str, n: int) -> float:
    """Seconds for a plain aiokafka loop to consume, transform and produce `n` posts."""
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
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


async def faust_minimal(settings: Settings, n: int) -> float:
    """Seconds for a bare Faust agent, tuned like the triage worker, to pass `n` posts on."""
    from streams.app import build_app

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
        return time.perf_counter() - seen[0]
    finally:
        await app.stop()


async def triage_run(settings: Settings, classifier: Classifier, n: int) -> float:
    """Seconds for the triage worker to finish `n` posts (Faust start-up excluded)."""
    from streams.app import TriageWorker

    worker = TriageWorker(settings, classifier, Metrics())
    first: list[float] = []
    handle = worker.triage.process

    async def timed(batch: Any) -> Any:
        if not first:
            first.append(time.perf_counter())
        return await handle(batch)

    worker.triage.process = timed  # type: ignore[method-assign]
    await worker.run(max_posts=n)
    return time.perf_counter() - first[0]


async def run_bench(base: Settings, config_path: Any, posts: int, batch: int) -> int:
    """Publish `posts` posts once, run each variant over them, print the table."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-{tag}-posts"

    def variant(name: str) -> Settings:
        t = {k: f"bench-{tag}-{name}-{k}" for k in ("verdicts", "escalations", "review", "dlq")}
        return load_settings(
            config_path,
            deep_merge(
                base.model_dump(mode="json", include={"kafka", "triage", "classifier"}),
                {
                    "app_id": f"bench-{tag}-{name}",
                    "topics": {"posts": topic, **t},
                    "triage": {"batch_max": batch, "audit_rate": 0.0},
                    "metrics": {"port": 0},
                },
            ),
        )

    await ensure_topics(base.kafka.bootstrap, [topic], base.kafka.partitions)
    values = [
        json.dumps({"post_id": f"b{i}", "text": f"{TEXTS[i % 5]} {i}"}).encode()
        for i in range(posts)
    ]
    await publish(base.kafka.bootstrap, topic, values)
    rows: list[tuple[str, float]] = []
    raw = await raw_baseline(base.kafka.bootstrap, topic, f"bench-{tag}-raw-out", posts)
    rows.append(("aiokafka-raw", posts / raw))
    rows.append(("faust-minimal", posts / await faust_minimal(variant("minimal"), posts)))
    rows.append(
        ("triage-null", posts / await triage_run(variant("null"), ConstantClassifier(), posts))
    )
    cfg = variant("cpu")
    classifier = build_classifier(cfg)
    try:
        rows.append(
            (f"triage-{cfg.classifier.backend}", posts / await triage_run(cfg, classifier, posts))
        )
    finally:
        await classifier.aclose()
    print(f"{posts} posts, {base.kafka.partitions} partitions, batch_max={batch}")
    print(f"{'run':<16} {'posts/s':>10} {'vs raw':>8}")
    for name, rate in rows:
        print(f"{name:<16} {rate:>10,.0f} {rate / rows[0][1]:>7.2f}x")
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_bench(settings, args.config, args.posts, args.batch))


def register(sub: Any) -> None:
    s = sub.add_parser("bench", help="triage throughput beside a raw aiokafka baseline")
    s.add_argument("--posts", type=int, default=30000)
    s.add_argument("--batch", type=int, default=1000, help="triage.batch_max for the runs")
    s.set_defaults(func=cmd_bench)
