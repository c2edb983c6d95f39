"""Soak: a steady stream with bad records; workers and the console killed at random; a broker
restart and a Redis restart.

    flock /tmp/modpipe-bench.lock .venv/bin/python -m bench.soak \\
        [--duration 600] [--rate 500] [--bad 0.02] [--kill-every 120] [--seed 1]

Starts a second local stack on its own ports and home (Kafka on --port, default 29092,
Redis on --redis-port; the shared broker on 9092 is never touched), the OpenAI
wire-format test server as the frontier, and `modpipe worker`, `modpipe escalator` and
`modpipe review serve` (the console, on a port of its own) as subprocesses under a
supervisor that restarts them when they exit. A reviewer (a signed-in API client) claims
and decides every review item. For --duration seconds it publishes --rate posts a
second, --bad of them drawn from the bad-input corpus (tests/bad_input_corpus.py),
kill -9s each process at random times (on average every --kill-every seconds), restarts
the broker once and Redis once, at different times (Redis with `SHUTDOWN SAVE`, so it
comes back with its data; --redis-restart wipe restarts it empty, kill kill -9s a Redis
running on an append-only file).

Then it waits for the pipeline to drain and reads every output topic from the beginning
at read_committed, as a downstream service would, and reports: lost posts (no final
verdict) and refused records without a dead letter; duplicate records per topic;
conflicting verdicts (two verdicts of one post with different actions, the later not
naming the earlier, directly or through a chain, in `supersedes`); review items shown to
the reviewer twice, and review items on the topic never decided. Exit 0 only if all of
those are 0 and no process died other than by the planned kills.

A benchmark, not a test: it takes minutes and one machine's whole attention.

The package: `stack` (the second stack and the supervisor), `traffic` (what is sent and
read back), `report` (the verdict); the run itself here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import random
import tempfile
import time
import uuid
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from bench.soak.report import report
from bench.soak.stack import BIG, CONFIG, SoakStack, Supervisor, free_port
from bench.soak.traffic import Ledger, add_reviewer, publish, review_items, tally
from bench.stand_ins import openai_wire_server
from modpipe.cli.progress import progress_bars
from modpipe.core.kafka import (
    ensure_pipeline_topics,
    ensure_topics,
)
from modpipe.core.probes import consumer_lag
from modpipe.core.progress import Progress
from modpipe.core.settings import Settings, load_settings


def soak_settings(
    stack: SoakStack, tag: str, wire_url: str, console_port: int
) -> tuple[Settings, dict[str, str]]:
    names = ("posts", "verdicts", "escalations", "review", "dlq", "labels")
    topics = {k: f"soak-{tag}-{k}" for k in names}
    overrides: dict[str, Any] = {
        "app_id": f"soak-{tag}",
        "kafka": {"bootstrap": stack.bootstrap},
        "redis": {"url": stack.redis_url, "key_prefix": f"soak-{tag}"},
        "topics": topics,
        "escalation": {
            "provider": "chat",
            "base_url": wire_url,
            "group_id": f"soak-{tag}-escalator",
        },
        "metrics": {"port": 0, "escalator_port": 0, "review_port": 0},
        "triage": {"state_dir": str(stack.home / "faust")},
        "review": {"group_id": f"soak-{tag}-review", "port": console_port},
    }
    env = {
        **stack.env,
        "MODPIPE_APP_ID": f"soak-{tag}",
        "MODPIPE_REDIS__KEY_PREFIX": f"soak-{tag}",
        "MODPIPE_ESCALATION__PROVIDER": "chat",
        "MODPIPE_ESCALATION__BASE_URL": wire_url,
        "MODPIPE_ESCALATION__GROUP_ID": f"soak-{tag}-escalator",
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_METRICS__ESCALATOR_PORT": "0",
        "MODPIPE_METRICS__REVIEW_PORT": "0",
        "MODPIPE_REVIEW__GROUP_ID": f"soak-{tag}-review",
        "MODPIPE_REVIEW__PORT": str(console_port),
        "MODPIPE_TRIAGE__STATE_DIR": str(stack.home / "faust"),
        **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    return load_settings(CONFIG, overrides), env


def schedule(rng: random.Random, duration: float, every: float) -> list[float]:
    """Kill times: gaps drawn uniformly between half and one and a half `every`."""
    times: list[float] = []
    at = 0.0
    while True:
        at += rng.uniform(0.5, 1.5) * every
        if at >= duration:
            return times
        times.append(at)


def planned_events(args: argparse.Namespace, procs: list[str]) -> list[tuple[float, str, str]]:
    """(seconds from the start, kill or restart, whom), in order, drawn from --seed."""
    rng = random.Random(args.seed)
    events: list[tuple[float, str, str]] = [
        (at, "kill", name) for name in procs for at in schedule(rng, args.duration, args.kill_every)
    ]
    # A process that starts while the broker is down exits 2 at its start-up check
    # (`modpipe worker` fails fast), which is not what is measured here: no kill from
    # 30 s before a restart (a start takes up to ~20 s here) to 45 s after it.
    restarts = []
    if args.broker_restart:
        restarts.append((rng.uniform(0.25, 0.45) * args.duration, "restart", "broker"))
    if args.redis_restart != "none":
        restarts.append((rng.uniform(0.55, 0.75) * args.duration, "restart", "redis"))
    for at, _, _ in restarts:
        events = [e for e in events if not -30 < e[0] - at < 45]
    return sorted(events + restarts)


async def play(
    events: list[tuple[float, str, str]],
    supervisor: Supervisor,
    stack: SoakStack,
    args: argparse.Namespace,
    publisher: asyncio.Task[float],
    happened: list[tuple[float, str]],
    start: float,
    progress: Progress,
) -> dict[str, asyncio.Task[float]]:
    """Kill and restart on schedule (seconds from `start`) while the publisher runs; the
    outages' tasks."""
    outages: dict[str, asyncio.Task[float]] = {}
    while not publisher.done():
        now = time.monotonic() - start
        progress("soak (seconds of publishing)", int(min(now, args.duration)), int(args.duration))
        while events and events[0][0] <= now:
            at, what, who = events.pop(0)
            print(f"  {at:6.1f}s {what} {who}", flush=True)
            happened.append((time.time(), f"{what} {who} at {at:.1f}s"))
            if what == "kill":
                supervisor.kill(who)
            elif who == "broker":  # a task: the supervisor keeps watching meanwhile
                outages[who] = asyncio.create_task(stack.restart_broker())
            else:
                outages[who] = asyncio.create_task(stack.restart_redis(args.redis_restart))
        supervisor.poll()
        await asyncio.sleep(0.2)
    return outages


async def backlogs(settings: Settings) -> dict[str, int]:
    """Each group's lag: not yet consumed is not lost."""
    t = settings.topics
    backlog = {}
    for name, group, topic in (
        ("triage", settings.app_id, t.posts),
        ("escalator", settings.escalation.group_id, t.escalations),
        ("console", settings.review.group_id, t.review),
    ):
        with suppress(KafkaError):
            backlog[name] = sum((await consumer_lag(settings.kafka, group, topic)).values())
    return backlog


async def soak(args: argparse.Namespace, frontier_url: str, progress: Progress) -> int:
    tag = uuid.uuid4().hex[:6]
    stack = SoakStack(args.port, args.redis_port)
    supervisor: Supervisor | None = None
    code = 1
    try:
        print(f"soak {tag}: stack in {stack.home} on {stack.bootstrap}", flush=True)
        await stack.up()
        console_port = args.console_port or free_port()
        settings, env = soak_settings(stack, tag, frontier_url, console_port)
        t = settings.topics
        limit = {t.posts: {"max.message.bytes": str(BIG)}}
        await ensure_topics(settings.kafka, [t.posts], settings.kafka.partitions, limit)
        await ensure_pipeline_topics(settings)
        if args.redis_restart == "kill":
            await stack.redis_aof()
        await add_reviewer(env)
        ledger = Ledger()
        reader = asyncio.create_task(tally(settings, ledger))
        logs = Path(tempfile.gettempdir()) / f"modpipe-soak-{tag}-logs"
        print(f"worker logs in {logs}; console on http://127.0.0.1:{console_port}/", flush=True)
        supervisor = Supervisor(env, logs)
        supervisor.start()

        events = planned_events(args, list(supervisor.procs))
        happened: list[tuple[float, str]] = []  # (wall time, what): evidence for the report
        start = time.monotonic()
        stop_reviewing = asyncio.Event()
        reviewer = asyncio.create_task(
            review_items(f"http://127.0.0.1:{console_port}", ledger, start, stop_reviewing)
        )
        publisher = asyncio.create_task(publish(settings, ledger, args, tag, start + args.duration))
        outages = await play(events, supervisor, stack, args, publisher, happened, start, progress)
        rate = publisher.result()
        down = {who: await task for who, task in outages.items()}
        print(f"published {ledger.published} at {rate:.0f}/s; draining", flush=True)

        drain_start = time.monotonic()
        while (
            any(ledger.missing()) or ledger.undecided_reviews()
        ) and time.monotonic() - drain_start < args.drain_s:
            supervisor.poll()
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - drain_start
        await asyncio.sleep(5.0)  # late duplicates still count
        stop_reviewing.set()
        await asyncio.gather(reviewer, return_exceptions=True)
        backlog = await backlogs(settings)
        codes = supervisor.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        code = report(args, ledger, supervisor, rate, drain_s, down, codes, backlog, happened)
        return code
    finally:
        if supervisor is not None:
            supervisor.stop(10)
        stack.down(keep=args.keep and code != 0)


def main() -> int:
    # The soak's own clients and the wire server log every broker outage and every
    # request cut by a kill; the report says what matters.
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("aiokafka", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=500.0, help="posts per second")
    parser.add_argument("--bad", type=float, default=0.02, help="share of bad records")
    parser.add_argument("--kill-every", type=float, default=120.0, help="mean seconds")
    parser.add_argument("--drain-s", type=float, default=300.0, help="most seconds to drain")
    parser.add_argument("--port", type=int, default=29092, help="the soak broker's port")
    parser.add_argument("--redis-port", type=int, default=26379)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker-restart", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--redis-restart",
        choices=("save", "wipe", "kill", "none"),
        default="save",
        help="restart Redis once: with its data (save), empty (wipe), kill -9 of a Redis "
        "on an append-only file (kill), or not at all",
    )
    parser.add_argument("--console-port", type=int, default=0, help="0: a free port")
    parser.add_argument(
        "--keep", action="store_true", help="keep the stack's data when the soak fails"
    )
    args = parser.parse_args()
    # The frontier (the OpenAI wire-format test server) in a process of its own, so that
    # its HTTP work does not slow the publisher and the tally.
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve_frontier, args=(child,), daemon=True
    )
    server.start()
    try:
        with progress_bars() as progress:  # on stderr, and only on a terminal
            return asyncio.run(soak(args, parent.recv(), progress))
    finally:
        server.terminate()
        server.join(10)


def serve_frontier(conn: Connection) -> None:
    """Run the wire-format server until terminated; send its URL through `conn`."""

    async def serve() -> None:
        async with openai_wire_server() as wire:
            conn.send(wire.url)
            await asyncio.Event().wait()

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)  # requests cut by kills
    asyncio.run(serve())
