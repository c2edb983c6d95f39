"""The `modpipe` command line: parse, configure logging, call one run_* function.

Signal handlers live here and nowhere else: SIGTERM and SIGINT ask a worker for a
graceful stop (finish the batch in hand, publish, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from modpipe.errors import ModpipeError
from modpipe.settings import DEFAULT_CONFIG, Settings, load_settings

log = logging.getLogger("modpipe")


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


async def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from classifiers import build_classifier
    from modpipe.kafka import ensure_pipeline_topics
    from modpipe.metrics import Metrics
    from streams.app import TriageWorker

    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    metrics.serve(settings.metrics.host, settings.metrics.port)
    classifier = build_classifier(settings)
    try:
        worker = TriageWorker(settings, classifier, metrics)
        _on_signals(worker.stop)
        return await worker.run(max_posts=args.max_posts, idle_exit=args.idle_exit)
    finally:
        await classifier.aclose()


async def _escalator(settings: Settings, args: argparse.Namespace) -> int:
    from escalation.frontier import build_frontier
    from escalation.worker import EscalationWorker
    from modpipe.kafka import ensure_pipeline_topics
    from modpipe.metrics import Metrics

    await ensure_pipeline_topics(settings)
    metrics = Metrics()
    if settings.metrics.port:
        metrics.serve(settings.metrics.host, settings.metrics.port + 1)
    frontier = build_frontier(settings, metrics)
    try:
        worker = EscalationWorker(settings, frontier, metrics)
        _on_signals(worker.stop)
        return await worker.run(max_posts=args.max_posts, idle_exit=args.idle_exit)
    finally:
        if frontier is not None:
            await frontier.aclose()


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.stack import stack_down, stack_status, stack_up

    if args.action == "up":
        stack_up(settings)
    elif args.action == "down":
        stack_down(settings)
    states = stack_status(settings)
    for s in states:
        pid = f"pid={s.pid}" if s.pid else "not started by modpipe"
        print(f"{s.service.name:<6} {s.service.address:<16} {s.state:<12} {pid}")
    if args.action == "down":
        return 0
    return 0 if all(s.state == "up" for s in states) else 1


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    return _run(_worker(settings, args))


def cmd_escalator(settings: Settings, args: argparse.Namespace) -> int:
    return _run(_escalator(settings, args))


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.produce import run_produce

    return _run(run_produce(settings, args.file))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.demo import run_demo

    return _run(run_demo(settings, posts=args.posts, timeout_s=args.timeout))


def _bounded(p: argparse.ArgumentParser) -> None:
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


def parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(prog="modpipe", description=__doc__.splitlines()[0])
    p.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="settings file (default: %(default)s)"
    )
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stack", help="local Kafka (KRaft) and Redis on 127.0.0.1")
    s.add_argument("action", choices=["up", "down", "status"])
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser("worker", help="the triage stream processor")
    _bounded(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("escalator", help="the escalation worker (frontier tier)")
    _bounded(s)
    s.set_defaults(func=cmd_escalator)

    s = sub.add_parser("produce", help="publish posts from JSONL (- = stdin)")
    s.add_argument("file")
    s.set_defaults(func=cmd_produce)

    s = sub.add_parser("demo", help="the whole pipeline on generated posts, with a report")
    s.add_argument("--posts", type=int, default=3000)
    s.add_argument("--timeout", type=float, default=180.0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `modpipe` console script."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "stack":  # refused connections while a broker boots are expected
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        settings = load_settings(args.config)
        return int(args.func(settings, args))
    except ModpipeError as exc:
        print(f"modpipe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
