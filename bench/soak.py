"""Soak: a steady stream with bad records, workers killed at random, a broker restart.

    flock /tmp/modpipe-bench.lock .venv/bin/python -m bench.soak \\
        [--duration 600] [--rate 500] [--bad 0.02] [--kill-every 120] [--seed 1]

Starts a second local stack on its own ports and home (Kafka on --port, default 29092,
Redis on --redis-port; the shared broker on 9092 is never touched), the OpenAI
wire-format test server as the frontier, and `modpipe worker` and `modpipe escalator`
as subprocesses under a supervisor that restarts them when they exit. For --duration
seconds it publishes --rate posts a second, --bad of them drawn from the bad-input
corpus (tests/bad_input_corpus.py), kill -9s each worker at random times (on average
every --kill-every seconds) and restarts the broker once, half way give or take. Then
it waits for the pipeline to drain and accounts for every record: each post needs a
final verdict, each refused record a dead letter. Exit 0 only if nothing is lost and no
worker died other than by the planned kills.

A benchmark, not a test: it takes minutes and one machine's whole attention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from modpipe.core.kafka import (
    consumer_lag,
    ensure_pipeline_topics,
    ensure_topics,
    topic_partitions,
)
from modpipe.core.settings import Settings, load_settings
from tests.bad_input_corpus import KINDS, Kind, post_id
from tests.openai_wire_server import openai_wire_server

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default.yaml"
BIG = 4 * 1024 * 1024  # the soak's posts topic takes the corpus's 1.5 MB record
# About 10% borderline (escalated), like the demo's mix.
TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]
WEIGHTS = [0.7, 0.2, 0.1]
POST_KINDS = [k for k in KINDS if k.topic == "posts"]


class SoakStack:
    """A second Kafka + Redis, on its own ports and in a home of its own."""

    def __init__(self, port: int, redis_port: int) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="modpipe-soak-"))
        shared = load_settings(CONFIG).stack
        jars = shared.home / f"kafka-{shared.kafka_version}"
        (self.home / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
        self.bootstrap = f"127.0.0.1:{port}"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.env = {
            **os.environ,
            "MODPIPE_STACK__HOME": str(self.home),
            "MODPIPE_KAFKA__BOOTSTRAP": self.bootstrap,
            "MODPIPE_STACK__REDIS_PORT": str(redis_port),
            "MODPIPE_REDIS__URL": self.redis_url,
        }

    def _stack(self, action: str) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "modpipe", "stack", action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"stack {action} failed: {out.stderr[-2000:]}")

    async def up(self) -> None:
        await asyncio.to_thread(self._stack, "up")

    async def restart_broker(self) -> float:
        """SIGTERM the soak's broker, wait until it is gone, start it again; the seconds down."""
        started = time.monotonic()
        pid = int((self.home / "run" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the workers see the broker gone for a while
        await self.up()
        return time.monotonic() - started

    def down(self) -> None:
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            self._stack("down")
        shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class Proc:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    deaths: list[int] = field(default_factory=list)  # exit codes of unplanned exits


class Supervisor:
    """Keeps each worker running: restarts it when it exits; counts the unplanned exits."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = {
            "worker": Proc("worker", ["worker"]),
            "escalator": Proc("escalator", ["escalator"]),
        }

    def _start(self, p: Proc) -> None:
        log = (self._logs / f"{p.name}.log").open("ab")
        p.process = subprocess.Popen(
            [sys.executable, "-m", "modpipe", *p.args],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        p.starts += 1

    def start(self) -> None:
        for p in self.procs.values():
            self._start(p)

    def kill(self, name: str) -> None:
        """kill -9, then start it again at once (as a process supervisor would)."""
        p = self.procs[name]
        assert p.process is not None
        p.process.send_signal(signal.SIGKILL)
        p.process.wait()
        p.kills += 1
        self._start(p)

    def poll(self) -> None:
        for p in self.procs.values():
            if p.process is not None and p.process.poll() is not None:
                p.deaths.append(p.process.returncode)
                print(f"  {p.name} exited with {p.process.returncode}; restarting", flush=True)
                self._start(p)

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every worker; their exit codes (None if one had to be killed)."""
        codes: dict[str, int | None] = {}
        for p in self.procs.values():
            if p.process is not None:
                p.process.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            if p.process is None:
                continue
            try:
                codes[p.name] = p.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.process.kill()
                codes[p.name] = None
        return codes

    def tracebacks(self) -> int:
        return sum(
            f.read_text(errors="replace").count("Traceback") for f in self._logs.glob("*.log")
        )


@dataclass
class Ledger:
    """What was published (acknowledged) and what came out."""

    expect_verdict: set[str] = field(default_factory=set)
    expect_letter: dict[tuple[str, int, int], str] = field(default_factory=dict)
    published: int = 0
    bad: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    tiers: dict[str, str] = field(default_factory=dict)
    letters: Counter[tuple[str, int, int]] = field(default_factory=Counter)

    def missing(self) -> tuple[int, int]:
        """Posts without a verdict, refused records without a dead letter."""
        return (
            sum(1 for pid in self.expect_verdict if pid not in self.verdicts),
            sum(1 for where in self.expect_letter if where not in self.letters),
        )


def soak_settings(stack: SoakStack, tag: str, wire_url: str) -> tuple[Settings, dict[str, str]]:
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
        "metrics": {"port": 0, "escalator_port": 0},
        "triage": {"state_dir": str(stack.home / "faust")},
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
        "MODPIPE_TRIAGE__STATE_DIR": str(stack.home / "faust"),
        **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in topics.items()},
    }
    return load_settings(CONFIG, overrides), env


def next_record(
    rng: random.Random, n: int, tag: str, bad: float
) -> tuple[bytes | None, bytes | None, str, Kind | None]:
    """The n-th record: a corpus kind with probability `bad`, else an ordinary post."""
    if rng.random() < bad:
        kind = rng.choice(POST_KINDS)
        pid = post_id(kind, n, tag)
        record = kind.build(pid)
        return record.key, record.value, pid, kind
    pid = f"{tag}-{n}"
    text = rng.choices(TEXTS, WEIGHTS)[0]
    return pid.encode(), json.dumps({"post_id": pid, "text": f"{text} {n}"}).encode(), pid, None


async def publish(
    settings: Settings, ledger: Ledger, args: argparse.Namespace, tag: str, stop_at: float
) -> float:
    """Publish at a fixed rate until `stop_at`; the acknowledged rate. Failed sends are retried."""
    rng = random.Random(args.seed)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
        max_request_size=BIG,
        linger_ms=5,
    )
    await producer.start()
    Sending = tuple[bytes | None, bytes | None, str, Kind | None]
    in_flight: list[tuple[asyncio.Future[Any], Sending]] = []

    def settle() -> list[Sending]:
        """Record what the broker acknowledged; what failed is returned to send again."""
        nonlocal in_flight
        failed, waiting = [], []
        for fut, item in in_flight:
            if not fut.done():
                waiting.append((fut, item))
            elif fut.exception() is not None:
                failed.append(item)
            else:
                meta, (_, _, pid, kind) = fut.result(), item
                ledger.published += 1
                ledger.bad += kind is not None
                if kind is None or kind.outcome == "decided":
                    ledger.expect_verdict.add(pid)
                else:
                    ledger.expect_letter[(meta.topic, meta.partition, meta.offset)] = kind.outcome
        in_flight = waiting
        return failed

    async def send(item: Sending) -> None:
        key, value = item[0], item[1]
        while True:
            try:
                in_flight.append((await producer.send(settings.topics.posts, value, key=key), item))
                return
            except KafkaError:
                await asyncio.sleep(0.5)  # the broker is restarting

    started = time.monotonic()
    sent = 0
    while time.monotonic() < stop_at:
        for item in settle():
            await send(item)  # sent again: the broker is back or retrying
        due = int((time.monotonic() - started) * args.rate)
        while sent < due:
            await send(next_record(rng, sent, tag, args.bad))
            sent += 1
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - started
    acked = ledger.published
    while in_flight:
        for item in settle():
            await send(item)
        await asyncio.sleep(0.05)
    await producer.stop()
    print(
        f"  scheduled {sent} posts in {elapsed:.0f}s, {acked} acknowledged by then; "
        f"the rest took {time.monotonic() - started - elapsed:.0f}s more",
        flush=True,
    )
    return acked / elapsed


async def tally(settings: Settings, ledger: Ledger) -> None:
    """Read verdicts and dead letters from the beginning, until cancelled."""
    t = settings.topics
    parts = await topic_partitions(settings.kafka, [t.verdicts, t.dlq])
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    value = json.loads(m.value)
                    if tp.topic == t.verdicts:
                        ledger.verdicts[value["post_id"]] += 1
                        ledger.tiers.setdefault(value["post_id"], value["tier"])
                    else:
                        ledger.letters[(value["topic"], value["partition"], value["offset"])] += 1
    finally:
        await consumer.stop()


def schedule(rng: random.Random, duration: float, every: float) -> list[float]:
    """Kill times: gaps drawn uniformly between half and one and a half `every`."""
    times: list[float] = []
    at = 0.0
    while True:
        at += rng.uniform(0.5, 1.5) * every
        if at >= duration:
            return times
        times.append(at)


async def soak(args: argparse.Namespace, frontier_url: str) -> int:
    tag = uuid.uuid4().hex[:6]
    stack = SoakStack(args.port, args.redis_port)
    supervisor: Supervisor | None = None
    try:
        print(f"soak {tag}: stack in {stack.home} on {stack.bootstrap}", flush=True)
        await stack.up()
        settings, env = soak_settings(stack, tag, frontier_url)
        t = settings.topics
        limit = {t.posts: {"max.message.bytes": str(BIG)}}
        await ensure_topics(settings.kafka, [t.posts], settings.kafka.partitions, limit)
        await ensure_pipeline_topics(settings)
        ledger = Ledger()
        reader = asyncio.create_task(tally(settings, ledger))
        logs = Path(tempfile.gettempdir()) / f"modpipe-soak-{tag}-logs"
        print(f"worker logs in {logs}", flush=True)
        supervisor = Supervisor(env, logs)
        supervisor.start()

        rng = random.Random(args.seed)
        events = [(at, "kill", "worker") for at in schedule(rng, args.duration, args.kill_every)]
        events += [
            (at, "kill", "escalator") for at in schedule(rng, args.duration, args.kill_every)
        ]
        if args.broker_restart:
            restart_at = rng.uniform(0.35, 0.65) * args.duration
            # A worker that starts while the broker is down exits 2 at its start-up
            # check (`modpipe worker` fails fast), which is not what is measured here:
            # no kill from 30 s before the restart (a start takes up to ~20 s here) to
            # 45 s after it (it is down for ~35 s).
            events = [e for e in events if not -30 < e[0] - restart_at < 45]
            events.append((restart_at, "restart", "broker"))
        events.sort()
        start = time.monotonic()
        publisher = asyncio.create_task(publish(settings, ledger, args, tag, start + args.duration))
        restart: asyncio.Task[float] | None = None
        while not publisher.done():
            now = time.monotonic() - start
            while events and events[0][0] <= now:
                at, what, who = events.pop(0)
                print(f"  {at:6.1f}s {what} {who}", flush=True)
                if what == "kill":
                    supervisor.kill(who)
                else:  # a task: the supervisor keeps watching meanwhile
                    restart = asyncio.create_task(stack.restart_broker())
            supervisor.poll()
            await asyncio.sleep(0.2)
        rate = publisher.result()
        broker_down_s = await restart if restart is not None else 0.0
        print(f"published {ledger.published} at {rate:.0f}/s; draining", flush=True)

        drain_start = time.monotonic()
        while any(ledger.missing()) and time.monotonic() - drain_start < args.drain_s:
            supervisor.poll()
            await asyncio.sleep(0.5)
        drain_s = time.monotonic() - drain_start
        await asyncio.sleep(3.0)  # late duplicates still count
        # Not yet consumed is not lost: the groups' lag says which it is.
        backlog = {
            "triage": sum((await consumer_lag(settings.kafka, settings.app_id, t.posts)).values()),
            "escalator": sum(
                (
                    await consumer_lag(settings.kafka, settings.escalation.group_id, t.escalations)
                ).values()
            ),
        }
        codes = supervisor.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        return report(args, ledger, supervisor, rate, drain_s, broker_down_s, codes, backlog)
    finally:
        if supervisor is not None:
            supervisor.stop(10)
        stack.down()


def report(
    args: argparse.Namespace,
    ledger: Ledger,
    supervisor: Supervisor,
    rate: float,
    drain_s: float,
    broker_down_s: float,
    codes: dict[str, int | None],
    backlog: dict[str, int],
) -> int:
    lost_posts, lost_letters = ledger.missing()
    dup = {pid: n - 1 for pid, n in ledger.verdicts.items() if n > 1}
    dup_by_tier: Counter[str] = Counter()
    for pid, n in dup.items():
        dup_by_tier[ledger.tiers.get(pid, "?")] += n
    dup_letters = sum(n - 1 for n in ledger.letters.values() if n > 1)
    kills = {p.name: p.kills for p in supervisor.procs.values()}
    deaths = {p.name: p.deaths for p in supervisor.procs.values()}
    total_kills = sum(kills.values()) or 1
    total_dup = sum(dup.values()) + dup_letters
    lines = [
        f"duration {args.duration:.0f}s, rate {args.rate}/s (achieved {rate:.0f}/s), "
        f"bad {args.bad:.0%}",
        f"published            {ledger.published} ({ledger.bad} bad records)",
        f"final verdicts       {len(ledger.verdicts)} posts of {len(ledger.expect_verdict)}",
        f"dead letters         {len(ledger.letters)} of {len(ledger.expect_letter)}",
        f"lost                 {lost_posts + lost_letters} "
        f"({lost_posts} posts, {lost_letters} refused records)",
        f"kills (kill -9)      {kills}",
        f"unplanned deaths     {deaths}",
        f"broker restart       down {broker_down_s:.1f}s",
        f"duplicates           {total_dup} ({total_dup / total_kills:.0f} per kill; "
        f"verdicts by tier {dict(dup_by_tier)}, dead letters {dup_letters})",
        f"drained in           {drain_s:.1f}s after publishing stopped "
        f"(uncommitted at the end: {backlog})",
        f"final stop codes     {codes}",
        f"tracebacks in logs   {supervisor.tracebacks()}",
    ]
    print("\n".join(lines), flush=True)
    died = any(deaths.values())
    return 0 if lost_posts + lost_letters == 0 and not died else 1


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
    args = parser.parse_args()
    # The frontier (the OpenAI wire-format test server) in a process of its own, so that
    # its HTTP work does not slow the publisher and the tally.
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve_frontier, args=(child,), daemon=True
    )
    server.start()
    try:
        return asyncio.run(soak(args, parent.recv()))
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


if __name__ == "__main__":
    sys.exit(main())
