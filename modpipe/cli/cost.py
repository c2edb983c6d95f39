"""`modpipe cost`: monthly cost of frontier-only, small-only and hybrid for a workload."""

from __future__ import annotations

import argparse
import json
from typing import Any

from escalation.prompt import system_prompt
from modpipe.core.cost import CostModel, Workload, estimate_tokens, projection_report
from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings


def workload_from_args(settings: Settings, args: argparse.Namespace) -> Workload:
    """The workload the cost options describe."""
    if (args.tokens_per_day is None) == (args.posts_per_day is None):
        raise ConfigError("give exactly one of --tokens-per-day and --posts-per-day")
    posts = args.posts_per_day or args.tokens_per_day / args.tokens_per_post
    overhead = args.prompt_overhead_tokens
    if overhead is None:  # what escalation/prompt.py really sends, plus the post's wrapper
        overhead = estimate_tokens(system_prompt(settings.policy)) + 10
    return Workload(
        posts_per_day=posts,
        tokens_per_post=args.tokens_per_post,
        escalation_rate=args.escalation_rate,
        cache_hit_rate=args.cache_hit_rate,
        frontier_model=args.model or settings.escalation.model,
        prompt_overhead_tokens=overhead,
        output_tokens_per_call=args.output_tokens,
    )


def cmd_cost(settings: Settings, args: argparse.Namespace) -> int:
    report = projection_report(CostModel(settings.prices), workload_from_args(settings, args))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("assumptions:")
    for key, value in report["assumptions"].items():
        print(f"  {key:<26} {value}")
    print(f"\n{'architecture':<15} {'monthly USD':>14}   parts")
    for name in ("frontier_only", "small_only", "hybrid"):
        a = report[name]
        parts = ", ".join(f"{k}={v:,.0f}" for k, v in a["parts"].items())
        print(f"{name:<15} {a['monthly_usd']:>14,.0f}   {parts}")
    ratio = report["frontier_only"]["monthly_usd"] / max(report["hybrid"]["monthly_usd"], 1e-9)
    print(f"\nfrontier-only / hybrid = {ratio:.1f}x")
    breakeven = report["break_even_tokens_per_day"]
    if breakeven is None:
        print("hybrid never costs less than frontier-only at these prices")
    else:
        print(f"hybrid is cheaper than frontier-only above {breakeven / 1e6:,.1f}M tokens/day")
    return 0


def workload_args(s: argparse.ArgumentParser) -> None:
    """The options that describe a workload (shared with capacity planning)."""
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


def register(sub: Any) -> None:
    s = sub.add_parser("cost", help="monthly cost of frontier-only, small-only and hybrid")
    workload_args(s)
    s.set_defaults(func=cmd_cost)
