"""`modpipe plan`: partitions, workers, GPUs and Redis memory for a daily load at its peak."""

from __future__ import annotations

import argparse
import json
from typing import Any

from modpipe.cli.cost import workload_args, workload_from_args
from modpipe.core.capacity import Throughputs, plan, plan_report
from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings


def throughputs_from_args(settings: Settings, args: argparse.Namespace) -> Throughputs:
    """The measured capacities the plan divides by."""
    if not 0 < args.utilization <= 1:
        raise ConfigError("--utilization must be in (0, 1]")
    if args.peak_factor < 1:
        raise ConfigError("--peak-factor must be at least 1 (the peak over the daily mean)")
    return Throughputs(
        triage_posts_per_s=args.triage_posts_per_s,
        provider_latency_s=args.provider_latency_s,
        gpu_tokens_per_s=args.gpu_tokens_per_s or settings.prices.small.tokens_per_second,
        cache_entry_bytes=args.cache_entry_bytes,
        utilization=args.utilization,
        partition_headroom=args.partition_headroom,
    )


def cmd_plan(settings: Settings, args: argparse.Namespace) -> int:
    workload = workload_from_args(settings, args)
    t = throughputs_from_args(settings, args)
    p = plan(settings, workload, args.peak_factor, t)
    if args.json:
        print(json.dumps(plan_report(p, t, args.peak_factor), indent=2))
        return 0
    u = f"{t.utilization:.0%}"
    w = workload
    in_flight = settings.escalation.max_in_flight
    headroom = f"x {t.partition_headroom:g} headroom, a multiple of 6 (KEDA max)"
    rows = [
        ("posts/day", f"{p.posts_per_day:,.0f}",
         f"{w.tokens_per_day:,.0f} tokens / {w.tokens_per_post:g} per post"),
        ("posts/s mean, peak", f"{p.mean_posts_per_s:,.0f}, {p.peak_posts_per_s:,.0f}",
         f"/ 86,400 s; x {args.peak_factor:g} peak factor"),
        ("escalations/s at peak", f"{p.peak_escalations_per_s:,.0f}",
         f"x {w.escalation_rate:.0%} escalation rate"),
        ("frontier calls/s at peak", f"{p.peak_frontier_calls_per_s:,.0f}",
         f"x (1 - {w.cache_hit_rate:.0%} cache hits)"),
        ("triage workers at peak", f"{p.triage_workers}",
         f"{p.peak_posts_per_s:,.0f} / ({t.triage_posts_per_s:,.0f} posts/s per worker x {u})"),
        ("escalators at peak", f"{p.escalator_workers}",
         f"{p.peak_frontier_calls_per_s:,.0f} / ({in_flight} in flight / "
         f"{t.provider_latency_s:g} s = {p.escalator_posts_per_s:,.0f}/s x {u})"),
        ("partitions: posts", f"{p.posts_partitions}", f"{p.triage_workers} workers {headroom}"),
        ("partitions: escalations", f"{p.escalations_partitions}",
         f"{p.escalator_workers} escalators {headroom}"),
        ("GPUs (vLLM replicas)", f"{p.gpus}",
         f"{p.peak_tokens_per_s:,.0f} tokens/s at peak / "
         f"({t.gpu_tokens_per_s:,.0f} per GPU x {u})"),
        ("Redis cache (allkeys-lru)", f"{p.cache_redis_gb:,.1f} GB",
         f"{p.cache_entries_per_day:,.0f} new verdicts/day x {p.cache_ttl_days:g} days TTL "
         f"x {t.cache_entry_bytes:g} B"),
        ("Redis state (noeviction)", f"{p.state_redis_mb:,.1f} MB",
         "one lock per call in flight + two budget keys"),
        ("hybrid cost/month", f"${p.hybrid_monthly_usd:,.0f}", "modpipe cost, same workload"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    for name, value, how in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}   {how}")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("plan", help="partitions, workers, GPUs and Redis memory for a load")
    workload_args(s)
    s.add_argument("--peak-factor", type=float, default=3.0, help="peak over the daily mean")
    s.add_argument(
        "--triage-posts-per-s",
        type=float,
        default=12148.0,
        help="one triage worker (modpipe bench --json, cpu_model_posts_per_s: "
        "12,148-12,920 on 2 cores)",
    )
    s.add_argument(
        "--provider-latency-s", type=float, default=1.0, help="one frontier call, end to end"
    )
    s.add_argument(
        "--gpu-tokens-per-s",
        type=float,
        default=None,
        help="one GPU's sustained tokens/s (default prices.small.tokens_per_second)",
    )
    s.add_argument(
        "--cache-entry-bytes",
        type=float,
        default=600.0,
        help="Redis memory per cached verdict (measured: 583 B with key, value and TTL)",
    )
    s.add_argument("--utilization", type=float, default=0.6, help="target load at peak")
    s.add_argument(
        "--partition-headroom",
        type=float,
        default=2.0,
        help="partitions per worker at peak: how far KEDA may scale past the plan",
    )
    s.set_defaults(func=cmd_plan)
