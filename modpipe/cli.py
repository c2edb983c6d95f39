"""The `modpipe` command line: parse, configure logging, call one run_* function.

Signal handlers live here and nowhere else: SIGTERM and SIGINT ask a worker for a
graceful stop (finish the batch in hand, publish, commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modpipe.errors import ConfigError, ModpipeError
from modpipe.settings import DEFAULT_CONFIG, Settings, load_settings

log = logging.getLogger("modpipe")


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


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
    return asyncio.run(_worker(settings, args))


def cmd_escalator(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(_escalator(settings, args))


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.produce import run_produce

    return asyncio.run(run_produce(settings, args.file))


def cmd_cost(settings: Settings, args: argparse.Namespace) -> int:
    from escalation.prompt import system_prompt
    from modpipe.cost import CostModel, Workload, estimate_tokens, run_cost

    if (args.tokens_per_day is None) == (args.posts_per_day is None):
        raise ConfigError("give exactly one of --tokens-per-day and --posts-per-day")
    posts = args.posts_per_day or args.tokens_per_day / args.tokens_per_post
    overhead = args.prompt_overhead_tokens
    if overhead is None:  # what escalation/prompt.py really sends, plus the post's wrapper
        overhead = estimate_tokens(system_prompt(settings.policy)) + 10
    workload = Workload(
        posts_per_day=posts,
        tokens_per_post=args.tokens_per_post,
        escalation_rate=args.escalation_rate,
        cache_hit_rate=args.cache_hit_rate,
        frontier_model=args.model or settings.escalation.model,
        prompt_overhead_tokens=overhead,
        output_tokens_per_call=args.output_tokens,
    )
    return run_cost(CostModel(settings.prices), workload, args.json)


def _data(args: argparse.Namespace) -> Any:
    from classifiers.datasets import load_labelled

    return load_labelled(
        args.data, args.text_col, args.label_col, tuple(args.positive), args.group_col
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from classifiers.training import train

    meta = train(_data(args), args.out, settings.policy.cpu_category)
    print(json.dumps(meta, indent=2))
    print(f"use it with: MODPIPE_CLASSIFIER__MODEL_PATH={args.out}")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.evaluation import run_eval

    return run_eval(settings, _data(args), args.png, args.frontier, args.json)


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.evaluation import run_calibrate

    if (args.target_escalation is None) == (args.max_auto_error is None):
        raise ConfigError("give either --target-escalation or --max-auto-error")
    return run_calibrate(
        settings,
        _data(args),
        args.config,
        args.out,
        args.target_escalation,
        args.max_auto_error,
        args.confidence,
    )


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.bench import run_bench

    return asyncio.run(run_bench(settings, args.config, args.posts, args.batch))


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.demo import run_demo

    return asyncio.run(run_demo(settings, posts=args.posts, timeout_s=args.timeout))


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


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="labelled JSONL or CSV")
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument(
        "--positive",
        action="append",
        default=None,
        help="a label value meaning violating (repeatable; default 1, true)",
    )
    p.add_argument("--group-col", help="report per-group quality (e.g. functionality)")


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

    s = sub.add_parser("cost", help="monthly cost of frontier-only, small-only and hybrid")
    s.add_argument("--tokens-per-day", type=float)
    s.add_argument("--posts-per-day", type=float)
    s.add_argument(
        "--tokens-per-post",
        type=float,
        default=5.0,
        help="post tokens (default 5: 1B tokens over 200M posts)",
    )
    s.add_argument("--escalation-rate", type=float, default=0.10)
    s.add_argument("--cache-hit-rate", type=float, default=0.0)
    s.add_argument("--model", help="frontier model priced in configs (default escalation.model)")
    s.add_argument(
        "--prompt-overhead-tokens",
        type=float,
        help="tokens sent with every frontier call besides the post "
        "(default: measured from the real prompt)",
    )
    s.add_argument(
        "--output-tokens",
        type=float,
        default=40.0,
        help="frontier output tokens per call (the verdict JSON)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cost)

    s = sub.add_parser("train", help="train the CPU classifier on labelled data")
    _data_args(s)
    s.add_argument("--out", type=Path, required=True, help="model directory to write")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="quality of tier 1 at the configured bands")
    _data_args(s)
    s.add_argument("--frontier", type=Path, help="recorded frontier verdicts (JSONL)")
    s.add_argument("--png", type=Path, default=Path("eval.png"))
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("calibrate", help="choose bands from labelled data")
    _data_args(s)
    s.add_argument("--target-escalation", type=float)
    s.add_argument("--max-auto-error", type=float)
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument("--out", type=Path, required=True, help="settings file to write")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("bench", help="triage throughput beside a raw aiokafka baseline")
    s.add_argument("--posts", type=int, default=30000)
    s.add_argument("--batch", type=int, default=1000, help="triage.batch_max for the runs")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("demo", help="the whole pipeline on generated posts, with a report")
    s.add_argument("--posts", type=int, default=3000)
    s.add_argument("--timeout", type=float, default=180.0)
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `modpipe` console script."""
    args = parser().parse_args(argv)
    if getattr(args, "positive", False) is None:
        args.positive = ["1", "true", "True"]
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
