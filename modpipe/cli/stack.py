"""`modpipe stack up|down|status`: the local Kafka and Redis on 127.0.0.1."""

from __future__ import annotations

import argparse
from typing import Any

from modpipe.core.settings import Settings
from modpipe.stack import stack_down, stack_status, stack_up


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
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


def register(sub: Any) -> None:
    s = sub.add_parser("stack", help="local Kafka (KRaft) and Redis on 127.0.0.1")
    s.add_argument("action", choices=["up", "down", "status"])
    s.set_defaults(func=cmd_stack)
