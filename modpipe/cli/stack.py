"""`modpipe stack up|down|status`: the local Kafka and Redis on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.settings import Settings
from modpipe.stack import stack_down, stack_status, stack_up, status_report


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "up":
        with progress_bars() as progress:
            asyncio.run(
                stack_up(
                    settings, brokers=args.brokers, secure=args.secure or None, progress=progress
                )
            )
    elif args.action == "down":
        stack_down(settings)
    if args.json:
        report = asyncio.run(status_report(settings))
        print(json.dumps(report, indent=2))
        states = [s["state"] for s in report["services"]]
    else:
        found = asyncio.run(stack_status(settings))
        for s in found:
            pid = f"pid={s.pid}" if s.pid else "not started by modpipe"
            print(f"{s.service.name:<8} {s.service.address:<16} {s.state:<12} {pid}")
            for address, protocol in s.service.listeners[1:]:
                print(f"{'':<8} {address:<16} {protocol}")
        states = [s.state for s in found]
    if args.action == "down":
        return 0
    return 0 if all(state == "up" for state in states) else 1


def register(sub: Any) -> None:
    s = sub.add_parser("stack", help="local Kafka (KRaft) and Redis on 127.0.0.1")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument(
        "--secure",
        action="store_true",
        help="up: add a SASL_SSL listener (SCRAM user, ACLs, local CA) and Redis auth + TLS",
    )
    s.add_argument(
        "--brokers",
        type=int,
        choices=[1, 3],
        default=None,
        help="up: one broker, or a three-broker cluster (replication 3, min.insync.replicas 2)",
    )
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(func=cmd_stack)
