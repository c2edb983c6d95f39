"""`modpipe demo`: the whole pipeline on generated posts, then a report per tier.

It brings the local stack up if needed, runs the triage worker (and the escalation
worker, when present) in this process, publishes a mix of benign, violating,
borderline, repeated and malformed posts, and waits until every post is accounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import random
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from modpipe.cli.produce import publish
from modpipe.core.kafka import consumer_options, ensure_pipeline_topics, topic_partitions
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

BENIGN = [
    "What a lovely morning at the beach with the kids",
    "Does anyone know a good recipe for banana bread?",
    "Congrats to the team on the launch, well deserved",
    "The library extends its opening hours from Monday",
    "Just finished a 10k run, legs are tired but happy",
    "Looking for recommendations for a quiet cafe downtown",
    "Our garden tomatoes finally turned red this week",
    "Thanks everyone for the birthday wishes",
    "The new bus line makes my commute twenty minutes shorter",
    "Anyone watching the chess final tonight?",
]
VIOLATING = [
    "you are a fucking idiot",
    "shut up you stupid bitch",
    "fuck off and die you worthless piece of shit",
    "what a dumb motherfucker",
    "you suck, go to hell",
]
BORDERLINE = [
    "kill the lights when you leave",
    "your opinion is garbage",
    "screw you",
    "this movie was damn good",
    "I hate mondays",
]
MALFORMED = [
    b"this is not json {run}",
    b'["a", "list", "{run}"]',
    b'{{"text": "no post id {run}"}}',
    b'{{"post_id": 42, "text": "numeric id {run}"}}',
    b'{{"post_id": "{run}-long-' + b"x" * 300 + b'", "text": "id too long"}}',
]


def generate_posts(n: int, run: str, rng: random.Random) -> tuple[list[bytes], set[str]]:
    """`n` values (about 1% malformed, 10% exact repeats of earlier texts) and the ids of the
    well-formed ones."""
    values: list[bytes] = []
    ids: set[str] = set()
    texts: list[str] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.01:
            values.append(
                rng.choice(MALFORMED)
                .replace(b"{run}", run.encode())
                .replace(b"{{", b"{")
                .replace(b"}}", b"}")
            )
            continue
        if roll < 0.11 and texts:
            text = rng.choice(texts)
        else:
            pool = BENIGN if roll < 0.70 else VIOLATING if roll < 0.88 else BORDERLINE
            text = f"{rng.choice(pool)} #{rng.randrange(10_000)}"
            texts.append(text)
        post_id = f"{run}-{i}"
        ids.add(post_id)
        values.append(json.dumps({"post_id": post_id, "text": text, "surface": "demo"}).encode())
    return values, ids


@dataclass
class Outcomes:
    """What the pipeline published about one run's posts, by post_id."""

    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    escalations: dict[str, dict[str, Any]] = field(default_factory=dict)
    review: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def unaccounted(self, ids: set[str], malformed: int) -> int:
        """Posts with no final verdict, plus malformed values with no dead letter."""
        return len(ids - set(self.verdicts)) + max(0, malformed - len(self.dead_letters))


class Collector:
    """Reads verdicts, escalations, review items and dead letters from the end of each topic."""

    def __init__(self, settings: Settings, marker: str) -> None:
        t = settings.topics
        self._topics = {
            t.verdicts: "verdict",
            t.escalations: "escalation",
            t.review: "review",
            t.dlq: "dlq",
        }
        self._marker = marker
        self._kafka = settings.kafka
        self._settings = settings
        # Only committed transactions: what a platform's verdict consumer would see.
        self._consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
        self.outcomes = Outcomes()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Pin every partition at its current end, then consume in the background."""
        await ensure_pipeline_topics(self._settings)
        parts = await topic_partitions(self._kafka, self._topics)
        await self._consumer.start()
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:  # resolve positions now, before anything is published
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for m in messages:
                    self._add(self._topics[tp.topic], m.value)

    def _add(self, kind: str, raw: bytes) -> None:
        try:
            value = json.loads(raw)
            post_id = value.get("post_id") or value.get("post", {}).get("post_id", "")
        except (ValueError, AttributeError):
            return  # not ours to judge: whatever was written there by others
        if kind == "dlq":
            if self._marker.encode() in base64.b64decode(value["value_b64"]):
                self.outcomes.dead_letters.append(value)
            return
        if not isinstance(post_id, str) or not post_id.startswith(self._marker):
            return
        if kind == "verdict":
            self.outcomes.verdicts.setdefault(post_id, []).append(value)
        elif kind == "escalation":
            self.outcomes.escalations[post_id] = value
        else:
            self.outcomes.review[post_id] = value

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


def report(outcomes: Outcomes, ids: set[str], malformed: int) -> str:
    """A short text report of one run."""
    finals = [v[-1] for v in outcomes.verdicts.values()]
    by_tier = Counter((v["tier"], v["action"]) for v in finals)
    latencies = sorted(v["latency_ms"] for v in finals)
    escalated = len(outcomes.escalations)
    lines = [
        f"posts published      {len(ids) + malformed} "
        f"({len(ids)} well-formed, {malformed} malformed)",
        f"escalation rate      {escalated / max(1, len(ids)):.1%} ({escalated} to tier 2)",
        "verdicts by tier and action:",
        *(f"  {tier:<9} {action:<6} {n}" for (tier, action), n in sorted(by_tier.items())),
        f"review items         {len(outcomes.review)}",
        f"dead letters         {len(outcomes.dead_letters)}",
        f"duplicate verdicts   {sum(len(v) - 1 for v in outcomes.verdicts.values())}",
    ]
    if latencies:
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        lines.append(f"latency ms           p50 {statistics.median(latencies):.0f}  p99 {p99:.0f}")
    lines.append(f"missing              {outcomes.unaccounted(ids, malformed)}")
    return "\n".join(lines)


async def run_demo(settings: Settings, posts: int = 3000, timeout_s: float = 180.0) -> int:
    """Run the pipeline end to end on `posts` generated posts; 0 only if none is missing."""
    from classifiers import build_classifier
    from escalation.frontier import build_frontier
    from escalation.worker import EscalationWorker
    from modpipe.core.metrics import Metrics
    from modpipe.stack import stack_up
    from streams.app import TriageWorker

    await asyncio.to_thread(stack_up, settings)
    await ensure_pipeline_topics(settings)
    run = f"demo-{uuid.uuid4().hex[:8]}"
    values, ids = generate_posts(posts, run, random.Random(7))
    malformed = len(values) - len(ids)
    collector = Collector(settings, run)
    await collector.start()
    metrics = Metrics()
    classifier = build_classifier(settings)
    frontier = build_frontier(settings, metrics)
    workers = (
        TriageWorker(settings, classifier, metrics),
        EscalationWorker(settings, frontier, metrics),
    )
    tasks = [asyncio.create_task(w.run()) for w in workers]
    provider = frontier.provider.name if frontier else "none (escalations go to human review)"
    try:
        # Latency figures should measure the pipeline, not the workers' start-up.
        ready: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(w.ready.wait() for w in workers))
        )
        await asyncio.wait([ready, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        started = time.monotonic()
        await publish(settings.kafka, settings.topics.posts, values)
        print(f"published {len(values)} posts as {run}; escalation provider: {provider}")
        while time.monotonic() - started < timeout_s and not any(t.done() for t in tasks):
            if collector.outcomes.unaccounted(ids, malformed) == 0:
                break
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.stop()
        for name, outcome in zip(
            ("triage", "escalation"),
            await asyncio.gather(*tasks, return_exceptions=True),
            strict=True,
        ):
            if isinstance(outcome, BaseException):
                log.error("%s worker failed", name, exc_info=outcome)
        await collector.stop()
        await classifier.aclose()
        if frontier is not None:
            await frontier.aclose()
    out = collector.outcomes
    print(report(out, ids, malformed))
    print(f"elapsed              {elapsed:.1f}s")
    return 0 if out.unaccounted(ids, malformed) == 0 else 1


def console_command(settings: Settings, config: Path | None) -> str:
    """The report's last lines: how to open the reviewers' console on the demo's review queue."""
    modpipe = "modpipe" if config is None else f"modpipe --config {config}"
    r = settings.review
    return (
        f"review console       http://{r.host}:{r.port}/ on {settings.topics.review} "
        f"(once: {modpipe} review add-user NAME --role lead, password on stdin)\n"
        f"{modpipe} review serve"
    )


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    code = asyncio.run(run_demo(settings, posts=args.posts, timeout_s=args.timeout))
    print(console_command(settings, args.config))
    return code


def register(sub: Any) -> None:
    s = sub.add_parser("demo", help="the whole pipeline on generated posts, with a report")
    s.add_argument("--posts", type=int, default=3000)
    s.add_argument("--timeout", type=float, default=180.0)
    s.set_defaults(func=cmd_demo)
