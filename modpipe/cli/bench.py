"""`modpipe bench`: triage throughput, steady-state latency and GPU-tier utilization.

The benchmark itself is bench/triage.py in the source checkout: its GPU-tier figure drives
the vLLM wire-format test server under tests/, which is not part of the installed product.
This command only finds the checkout, runs it, and prints a table or (`--json`) one object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings

CHECKOUT = Path(__file__).resolve().parents[2]


def load_bench() -> ModuleType:
    """bench/triage.py from the source checkout this modpipe runs from."""
    if not (CHECKOUT / "bench" / "triage.py").is_file() or not (CHECKOUT / "tests").is_dir():
        raise ConfigError(
            "modpipe bench runs from a source checkout of modpipe (it needs bench/ and the "
            f"wire-format test servers under tests/), and {CHECKOUT} is not one: "
            "clone the repository and run `make bench` there"
        )
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    import bench.triage

    return bench.triage


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    triage = load_bench()
    with progress_bars() as progress:  # on stderr, and only on a terminal
        report, rows = asyncio.run(
            triage.run(
                settings,
                args.config,
                posts_n=args.posts,
                batch=args.batch,
                rate=args.rate,
                seconds=args.seconds,
                gpu_posts=args.gpu_posts,
                gpu_latency_s=args.gpu_latency_ms / 1000,
                gpu_rate=args.gpu_rate,
                progress=progress,
            )
        )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.posts} posts, 4 partitions, batch_max={args.batch}")
    print(f"{'run':<26} {'posts/s':>10} {'vs raw':>8}")
    for name, rate in rows:
        print(f"{name:<26} {rate:>10,.0f} {rate / rows[0][1]:>7.2f}x")
    gpu = report["gpu_wire"]
    print(
        f"gpu-wire: {gpu['modpipe_posts_per_s']:,} of {gpu['capacity_posts_per_s']:,.0f} posts/s "
        f"capacity ({gpu['utilization']:.0%}; one batch in flight: "
        f"{gpu['one_batch_in_flight_posts_per_s']:,})"
    )
    for rate_s, p in report["latency_ms"].items():
        print(f"latency at {rate_s} posts/s (ms): p50 {p['p50']}, p95 {p['p95']}, p99 {p['p99']}")
    print(f"worker peak RSS: {report['worker_peak_rss_mb']} MB")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "bench", help="triage throughput, latency and GPU utilization (source checkout)"
    )
    s.add_argument("--posts", type=int, default=30000)
    s.add_argument("--batch", type=int, default=1000, help="triage.batch_max for the runs")
    s.add_argument("--rate", type=float, default=1000.0, help="posts/s for the latency run")
    s.add_argument("--seconds", type=float, default=35.0, help="length of the latency run")
    s.add_argument("--gpu-posts", type=int, default=10000, help="posts for the GPU-tier run")
    s.add_argument("--gpu-latency-ms", type=float, default=50.0, help="fixed latency per request")
    s.add_argument("--gpu-rate", type=float, default=2000.0, help="GPU service rate, posts/s")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=cmd_bench)
