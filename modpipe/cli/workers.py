"""`modpipe worker` and `modpipe escalator`: build a worker from settings and run it.

Signal handlers live here and nowhere else: SIGTERM and SIGINT ask a worker for a
graceful stop (finish what is in hand, publish, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from streams.app import TriageWorker


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


async def run_worker(settings: Settings, max_posts: int | None, idle_exit: float | None) -> int:
    """The triage worker until stopped; its exit code."""
    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics.host, settings.metrics.port)
    classifier = build_classifier(settings)
    try:
        worker = TriageWorker(settings, classifier, metrics)
        _on_signals(worker.stop)
        return await worker.run(max_posts=max_posts, idle_exit=idle_exit)
    finally:
        await classifier.aclose()


async def run_escalator(settings: Settings, max_posts: int | None, idle_exit: float | None) -> int:
    """The escalation worker until stopped; its exit code."""
    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics.host, settings.metrics.escalator_port)
    frontier = build_frontier(settings, metrics)
    try:
        worker = EscalationWorker(settings, frontier, metrics)
        _on_signals(worker.stop)
        return await worker.run(max_posts=max_posts, idle_exit=idle_exit)
    finally:
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
