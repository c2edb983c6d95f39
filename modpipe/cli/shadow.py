"""`modpipe shadow --config CANDIDATE.yaml` (a candidate beside production) and
`modpipe shadow report` (its confusion matrices)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from classifiers import build_classifier
from modpipe.core.errors import ConfigError
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings, load_settings
from modpipe.quality.shadow_report import build_report
from streams.shadow import ShadowRunner


def candidate_settings(production: Settings, path: Path) -> Settings:
    """The candidate's settings on production's topics and broker, with its own Redis
    prefix (its rate rules must not count into production's)."""
    return load_settings(
        path,
        {
            "kafka": production.kafka.model_dump(mode="json", exclude={"sasl_password"}),
            "topics": production.topics.model_dump(),
            "app_id": f"{production.shadow.group_id}-candidate",
            "redis": {"key_prefix": f"{production.redis.key_prefix}:shadow"},
            "triage": {"audit_rate": 0.0},
        },
    )


async def run_shadow(production: Settings, args: argparse.Namespace) -> int:
    candidate = candidate_settings(production, args.candidate)
    metrics = Metrics()
    endpoint = metrics.serve(production.metrics.host, args.metrics_port)
    classifier = build_classifier(candidate)
    runner = ShadowRunner(production, candidate, classifier, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stop)
    try:
        code = await runner.run(
            max_posts=args.max_posts, idle_exit=args.idle_exit, since_s=args.since_s
        )
    finally:
        await classifier.aclose()
        if endpoint is not None:
            endpoint.close()
    print(
        f"compared {runner.compared} posts, agreement "
        f"{runner.agreed / runner.compared if runner.compared else 0:.4f}"
    )
    return code


def _print(r: dict[str, Any]) -> None:
    print(f"{r['posts']} posts compared, agreement {r['agreement']:.4f}")
    actions = sorted({m["production"] for m in r["matrix"]} | {m["candidate"] for m in r["matrix"]})
    cells = {(m["production"], m["candidate"]): m["posts"] for m in r["matrix"]}
    print("\nproduction (rows) vs candidate (columns)")
    print(f"{'':>10}" + "".join(f"{a:>10}" for a in actions))
    for p in actions:
        print(f"{p:>10}" + "".join(f"{cells.get((p, c), 0):>10}" for c in actions))
    for title, key in (("by production's action", "by_action"), ("by category", "by_category")):
        print(f"\n{title}")
        for k, v in r[key].items():
            print(f"  {k:<16} {v['posts']:>8} posts  agreement {v['agreement']:.4f}")
    lab = r["labels"]
    print(f"\nagainst reviewers' labels ({lab['labelled']} labelled posts)")
    print(f"  production {lab['production']}  candidate {lab['candidate']}")
    print(
        f"  on disagreements: candidate right {lab['candidate_right']}, "
        f"production right {lab['production_right']}"
    )
    if r["disagreements"]:
        print("\ndisagreements to read")
    for d in r["disagreements"]:
        print(
            f"  {d['post_id']}: production {d['production']['action']} "
            f"candidate {d['candidate']['action']} label {d['label']}"
        )


def cmd_shadow(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "report":
        result = asyncio.run(build_report(settings, args.examples))
        print(json.dumps(result)) if args.json else _print(result)
        return 0
    if args.candidate is None:
        raise ConfigError("modpipe shadow needs --config CANDIDATE.yaml")
    return asyncio.run(run_shadow(settings, args))


def register(sub: Any) -> None:
    s = sub.add_parser("shadow", help="run a candidate beside production, or report on its run")
    s.add_argument("action", nargs="?", choices=("run", "report"), default="run")
    s.add_argument("--config", dest="candidate", type=Path, default=None,
                   help="the candidate's settings file")  # fmt: skip
    s.add_argument("--max-posts", type=int, default=None)
    s.add_argument("--idle-exit", type=float, default=None)
    s.add_argument("--since-s", type=float, default=300.0,
                   help="read production's decisions from this long ago")  # fmt: skip
    s.add_argument("--metrics-port", type=int, default=9467)
    s.add_argument("--examples", type=int, default=10)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_shadow)
