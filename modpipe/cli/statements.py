"""`modpipe statements build|submit|worker` and `modpipe notices intake`: DSA compliance.

`build` turns restrictive verdicts into statements of reasons on the statements topic;
`submit` sends what is pending to the EU Transparency Database and exits once nothing is
left (a bounded run for cron, backfills and tests); `worker` keeps sending. `notices
intake` routes users' and trusted flaggers' notices (docs/compliance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from modpipe.core.settings import Settings


def _on_signals(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _ledger(settings: Settings) -> Any:
    from modpipe.compliance.ledger import Ledger
    from modpipe.core.redis_client import connect_redis

    return Ledger(
        connect_redis(settings.redis, timeout_s=max(settings.redis.timeout_s, 2.0)),
        settings.redis.key_prefix,
        max(settings.appeals.window_days, settings.statements.stored_keep_days),
    )


async def run_build(settings: Settings, idle_exit: float | None) -> int:
    """The statement builder until stopped (or idle); its exit code."""
    from modpipe.compliance.builder import StatementBuilder
    from modpipe.core.metrics import Metrics

    ledger = _ledger(settings)
    try:
        builder = StatementBuilder(settings, ledger, Metrics())
        _on_signals(builder.stop)
        return await builder.run(idle_exit=idle_exit)
    finally:
        await ledger.aclose()


async def run_submit(settings: Settings, idle_exit: float | None) -> int:
    """The submitter until stopped (or nothing pending for `idle_exit` s); its exit code."""
    from modpipe.compliance.database import TransparencyDatabase
    from modpipe.compliance.submitter import Submitter
    from modpipe.core.metrics import Metrics

    s = settings.statements
    token = s.token.get_secret_value() if s.token else None
    database = TransparencyDatabase(s.base_url, token, s.timeout_s, s.requests_per_s)
    metrics = Metrics()
    endpoint = metrics.serve(settings.metrics.host, s.port) if idle_exit is None else None
    ledger = _ledger(settings)
    try:
        submitter = Submitter(settings, database, ledger, metrics)
        _on_signals(submitter.stop)
        return await submitter.run(idle_exit=idle_exit)
    finally:
        await ledger.aclose()
        await database.aclose()
        if endpoint is not None:
            endpoint.close()


async def run_notices(settings: Settings, idle_exit: float | None) -> int:
    """The notice intake until stopped (or idle); its exit code."""
    from modpipe.compliance.notices import NoticeIntake
    from modpipe.core.metrics import Metrics

    ledger = _ledger(settings)
    try:
        intake = NoticeIntake(settings, ledger, Metrics())
        _on_signals(intake.stop)
        return await intake.run(idle_exit=idle_exit)
    finally:
        await ledger.aclose()


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_build(settings, args.idle_exit))


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_submit(settings, args.idle_exit))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_submit(settings, None))


def cmd_notices(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_notices(settings, args.idle_exit))


def _idle(p: argparse.ArgumentParser, default: float | None) -> None:
    p.add_argument(
        "--idle-exit",
        type=float,
        default=default,
        metavar="S",
        help="exit 0 once nothing new arrived for S seconds"
        + (f" (default {default})" if default else " (default: run until stopped)"),
    )


def register(sub: Any) -> None:
    st = sub.add_parser("statements", help="statements of reasons (EU DSA Art. 17, 24(5))")
    actions = st.add_subparsers(dest="action", required=True)
    p = actions.add_parser("build", help="build statements from restrictive verdicts")
    _idle(p, None)
    p.set_defaults(func=cmd_build)
    p = actions.add_parser("submit", help="send pending statements to the database, then exit")
    _idle(p, 5.0)
    p.set_defaults(func=cmd_submit)
    p = actions.add_parser("worker", help="keep sending statements to the database")
    p.set_defaults(func=cmd_worker)
    no = sub.add_parser("notices", help="notices from users and trusted flaggers (DSA Art. 16)")
    actions = no.add_subparsers(dest="action", required=True)
    p = actions.add_parser("intake", help="route notices: posts, or review for trusted flaggers")
    _idle(p, None)
    p.set_defaults(func=cmd_notices)
