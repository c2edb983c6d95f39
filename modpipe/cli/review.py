"""`modpipe review serve` and `modpipe review add-user`: the reviewers' console.

`serve` runs the web app under uvicorn (which traps SIGINT/SIGTERM for a graceful stop:
the feeder commits what it may, the producer flushes). `add-user` reads the password from
stdin (one line), so it never appears in a process list or a shell history.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import Any

from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings


async def run_serve(settings: Settings) -> int:
    """The console until stopped; its exit code."""
    import uvicorn

    from modpipe.core.health import Health
    from modpipe.core.metrics import Metrics
    from modpipe.review.app import build_app
    from modpipe.review.console import Console

    metrics = Metrics()
    console = Console(settings, metrics)
    health = Health()
    health.add("background_tasks", console.check_tasks)
    endpoint = metrics.serve(settings.metrics.host, settings.metrics.review_port, health)
    config = uvicorn.Config(
        build_app(console),
        host=settings.review.host,
        port=settings.review.port,
        log_level="warning",
        access_log=False,
        # Behind a proxy, X-Forwarded-For from review.trusted_proxies (only) names the
        # client: login limits count per address, and one shared address would be one.
        proxy_headers=bool(settings.review.trusted_proxies),
        forwarded_allow_ips=",".join(settings.review.trusted_proxies) or None,
    )
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        if endpoint is not None:
            endpoint.close()
    return 0 if server.started else 1


async def run_add_user(settings: Settings, name: str, password: str, role: str) -> int:
    """Create or replace one account."""
    from modpipe.review.accounts import Accounts
    from modpipe.review.store import ReviewStore, connect

    store = ReviewStore(
        connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
    )
    try:
        await Accounts(store, settings.review).add_user(name, password, role)  # type: ignore[arg-type]
    finally:
        await store.aclose()
    return 0


async def run_delete_user(settings: Settings, name: str) -> bool:
    """Delete one account and end its sessions; whether it existed."""
    from modpipe.review.accounts import Accounts
    from modpipe.review.store import ReviewStore, connect

    store = ReviewStore(
        connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
    )
    try:
        return await Accounts(store, settings.review).delete_user(name)
    finally:
        await store.aclose()


def cmd_delete_user(settings: Settings, args: argparse.Namespace) -> int:
    if not asyncio.run(run_delete_user(settings, args.name)):
        raise ConfigError(f"no user {args.name!r}")
    print(f"user {args.name} deleted; their sessions ended")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    print(
        f"review console on http://{settings.review.host}:{settings.review.port}/ "
        f"(topic {settings.topics.review}, group {settings.review.group_id})",
        flush=True,
    )
    return asyncio.run(run_serve(settings))


def cmd_add_user(settings: Settings, args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ConfigError("no password on stdin")
    code = asyncio.run(run_add_user(settings, args.name, password, args.role))
    print(f"user {args.name} ({args.role}) saved")
    return code


def register(sub: Any) -> None:
    review = sub.add_parser("review", help="the reviewers' console (web app)")
    actions = review.add_subparsers(dest="action", required=True)
    s = actions.add_parser("serve", help="serve the console on review.host:review.port")
    s.set_defaults(func=cmd_serve)
    s = actions.add_parser(
        "add-user",
        help="create or replace an account (a replaced one's sessions end); password from stdin",
    )
    s.add_argument("name")
    s.add_argument("--role", choices=("reviewer", "lead"), default="reviewer")
    s.set_defaults(func=cmd_add_user)
    s = actions.add_parser("delete-user", help="delete an account and end its sessions")
    s.add_argument("name")
    s.set_defaults(func=cmd_delete_user)
