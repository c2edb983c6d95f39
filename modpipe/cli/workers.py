"""`modpipe worker` and `modpipe escalator`: build a worker from settings and run it.

Signal handlers live here and nowhere else: SIGTERM and SIGINT ask a worker for a
graceful stop (finish what is in hand, publish, commit). Each worker's metrics port also
answers /healthz and /readyz, with the readiness checks composed here.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from classifiers import Classifier, build_classifier
from escalation.frontier import FrontierTier, build_frontier
from escalation.worker import EscalationWorker
from modpipe.core.health import Check, Health, when
from modpipe.core.kafka import ensure_pipeline_topics, kafka_ready
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from streams.app import TriageWorker


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _health(settings: Settings, ready: asyncio.Event, **checks: Check) -> Health:
    """Readiness: partitions assigned, Kafka answers a metadata request, and `checks`."""
    health = Health()
    health.add("partitions", when(ready, "no partitions assigned yet"))
    health.add("kafka", lambda: kafka_ready(settings.kafka, timeout_s=1.5))
    for name, check in checks.items():
        health.add(name, check)
    return health


def _classifier_check(classifier: Classifier) -> Check:
    async def check() -> None:  # one tiny batch through the real backend
        [result] = await classifier.classify(["readiness probe"])
        if isinstance(result, Exception):
            raise result

    return check


def _redis_check(frontier: FrontierTier | None) -> Check:
    async def check() -> None:
        if frontier is not None and frontier.cache is not None:
            await frontier.cache.ping()

    return check


async def run_worker(settings: Settings, max_posts: int | None, idle_exit: float | None) -> int:
    """The triage worker until stopped; its exit code."""
    # A broker that is restarting is waited for; wrong credentials or TLS fail at once.
    await kafka_ready(settings.kafka, timeout_s=settings.kafka.start_timeout_s)
    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    metrics.escalation_target.set(settings.routing.expected_escalation_rate)
    classifier = build_classifier(settings)
    endpoint = None
    try:
        worker = TriageWorker(settings, classifier, metrics)
        health = _health(settings, worker.ready, classifier=_classifier_check(classifier))
        endpoint = metrics.serve(settings.metrics.host, settings.metrics.port, health)
        _on_signals(worker.stop)
        return await worker.run(max_posts=max_posts, idle_exit=idle_exit)
    finally:
        if endpoint is not None:
            endpoint.close()
        await classifier.aclose()


async def run_escalator(settings: Settings, max_posts: int | None, idle_exit: float | None) -> int:
    """The escalation worker until stopped; its exit code."""
    # A broker that is restarting is waited for; wrong credentials or TLS fail at once.
    await kafka_ready(settings.kafka, timeout_s=settings.kafka.start_timeout_s)
    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    frontier = build_frontier(settings, metrics)
    endpoint = None
    try:
        if frontier is not None:
            await frontier.check_access()  # a wrong Redis password stops the start
        worker = EscalationWorker(settings, frontier, metrics)
        health = _health(settings, worker.ready, redis=_redis_check(frontier))
        endpoint = metrics.serve(settings.metrics.host, settings.metrics.escalator_port, health)
        _on_signals(worker.stop)
        return await worker.run(max_posts=max_posts, idle_exit=idle_exit)
    finally:
        if endpoint is not None:
            endpoint.close()
        if frontier is not None:
            await frontier.aclose()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_worker(settings, args.max_posts, args.idle_exit))


def cmd_escalator(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_escalator(settings, args.max_posts, args.idle_exit))


def bounded(p: argparse.ArgumentParser) -> None:
    """The bounded-run options every long-running command takes."""
    p.add_argument(
        "--max-posts",
        type=int,
        default=None,
        help="stop after this many posts (whole batches) are done",
    )
    p.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this long without a new post",
    )


def register(sub: Any) -> None:
    s = sub.add_parser("worker", help="the triage stream processor")
    bounded(s)
    s.set_defaults(func=cmd_worker)
    s = sub.add_parser("escalator", help="the escalation worker (frontier tier)")
    bounded(s)
    s.set_defaults(func=cmd_escalator)
