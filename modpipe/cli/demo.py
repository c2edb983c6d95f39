"""`modpipe demo`: the whole pipeline on generated posts, then a report per tier.

It brings the local stack up if needed, runs the triage worker (and the escalation
worker, when present) in this process, publishes a mix of benign, violating,
borderline, repeated and malformed posts, and waits until every post is accounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from modpipe.cli.produce import publish
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.outcomes import Collector, Outcomes
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

    await stack_up(settings)
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
    # The demo's malformed posts are on purpose and the report counts their dead letters
    # (each on the DLQ with its reason): a warning per dead letter would only bury it.
    logging.getLogger("modpipe.core.dead_letters").setLevel(logging.ERROR)
    code = asyncio.run(run_demo(settings, posts=args.posts, timeout_s=args.timeout))
    print(console_command(settings, args.config))
    return code


def register(sub: Any) -> None:
    s = sub.add_parser("demo", help="the whole pipeline on generated posts, with a report")
    s.add_argument("--posts", type=int, default=3000)
    s.add_argument("--timeout", type=float, default=180.0)
    s.set_defaults(func=cmd_demo)
