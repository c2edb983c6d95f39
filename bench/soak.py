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
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter, defaultdict
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from bench.stand_ins import KINDS, Kind, openai_wire_server, post_id
from modpipe.core.kafka import (
    consumer_options,
    ensure_pipeline_topics,
    ensure_topics,
    topic_partitions,
)
from modpipe.core.probes import consumer_lag
from modpipe.core.records import first_verdict_id
from modpipe.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "default.yaml"
BIG = 4 * 1024 * 1024  # the soak's posts topic takes the corpus's 1.5 MB record
# About 10% borderline (escalated), like the demo's mix.
TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]
WEIGHTS = [0.7, 0.2, 0.1]
POST_KINDS = [k for k in KINDS if k.topic == "posts"]
REVIEWER, PASSWORD = "soak-reviewer", "soak reviewer password"


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

    async def redis_aof(self) -> None:
        """Turn on Redis's append-only file (fsync every second, as deploy/redis.yaml runs
        the state Redis); wait until it is written."""
        client = aioredis.from_url(self.redis_url)
        try:
            await client.config_set("appendonly", "yes")
            while True:
                info = await client.info("persistence")
                busy = info["aof_rewrite_in_progress"] or info.get("aof_rewrite_scheduled")
                if info["aof_enabled"] and not busy:
                    return
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    async def restart_redis(self, mode: str) -> float:
        """Stop the soak's Redis and start it again; the seconds it did not answer.

        `save`: SHUTDOWN SAVE, back with all its data (a restart of a Redis with
        persistence); `wipe`: SHUTDOWN NOSAVE, back empty (the stack's own Redis persists
        nothing); `kill`: kill -9 of a Redis on its append-only file (see `redis_aof`),
        back with what the file holds (up to a second of writes may be missing).
        """
        started = time.monotonic()
        pid_file = self.home / "run" / "redis.pid"
        pid = int(pid_file.read_text())
        if mode == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            client = aioredis.from_url(self.redis_url)
            try:
                await client.shutdown(save=mode == "save", nosave=mode != "save")
            except RedisError as exc:  # redis-py raises when the server is still there
                print(f"  redis shutdown: {exc}; SIGTERM", flush=True)
                os.kill(pid, signal.SIGTERM)
            finally:
                with suppress(Exception):
                    await client.aclose()
        while Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # the workers see Redis gone for a while
        if mode == "kill":  # `stack up` would start it without its append-only file
            home = self.home / "redis"
            with (home / "redis.log").open("ab") as log:
                proc = subprocess.Popen(
                    [
                        shutil.which("redis-server") or "redis-server",
                        str(home / "redis.conf"),
                        "--appendonly",
                        "yes",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            pid_file.write_text(str(proc.pid))
        else:
            await self.up()
        client = aioredis.from_url(self.redis_url)
        try:
            while True:
                with suppress(RedisError, OSError):
                    if await client.ping():
                        break
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        return time.monotonic() - started

    def down(self, keep: bool = False) -> None:
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            self._stack("down")
        if keep:
            print(f"stack home kept (Kafka's and Redis's data): {self.home}", flush=True)
        else:
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
            "console": Proc("console", ["review", "serve"]),
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
        if p.process.poll() is None:
            p.process.send_signal(signal.SIGKILL)
        code = p.process.wait()
        if code != -signal.SIGKILL:  # it had exited by itself before the kill
            p.deaths.append(code)
            print(f"  {p.name} had exited with {code}", flush=True)
        else:
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


class Copy(NamedTuple):
    """One record read from an output topic: where it is and when it was written (ms)."""

    partition: int
    offset: int
    ts_ms: int


class Seen(NamedTuple):
    """One verdict read from the verdicts topic."""

    where: Copy
    crc: int  # of the record's value: copies with the same crc are byte for byte the same
    action: str
    tier: str
    verdict_id: str  # "" when absent (a verdict that does not name itself)
    supersedes: str | None


@dataclass
class Ledger:
    """What was published (acknowledged), what came out (read at read_committed), and
    what the reviewer saw."""

    expect_verdict: set[str] = field(default_factory=set)
    expect_letter: dict[tuple[str, int, int], str] = field(default_factory=dict)
    published: int = 0
    bad: int = 0
    inputs: dict[str, tuple[int, int, float]] = field(default_factory=dict)  # partition, offset, s
    verdicts: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    escalations: dict[str, list[Copy]] = field(default_factory=lambda: defaultdict(list))
    reviews: dict[str, list[Copy]] = field(default_factory=lambda: defaultdict(list))
    labels: dict[str, list[Copy]] = field(default_factory=lambda: defaultdict(list))
    letters: dict[tuple[str, int, int], list[Copy]] = field(
        default_factory=lambda: defaultdict(list)
    )
    human: set[str] = field(default_factory=set)  # posts with a human verdict
    # The reviewer: posts it was shown (claims of a new lease), decided, shown again after.
    claims: Counter[str] = field(default_factory=Counter)
    decided: set[str] = field(default_factory=set)
    shown_again: list[tuple[str, str, float]] = field(default_factory=list)

    def missing(self) -> tuple[int, int]:
        """Posts without a verdict, refused records without a dead letter."""
        return (
            sum(1 for pid in self.expect_verdict if pid not in self.verdicts),
            sum(1 for where in self.expect_letter if where not in self.letters),
        )

    def undecided_reviews(self) -> list[str]:
        """Posts with a review item on the topic and no human verdict (yet)."""
        return [pid for pid in self.reviews if pid not in self.human]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
                ledger.inputs[pid] = (meta.partition, meta.offset, time.monotonic() - started)
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
    """Read every output topic from the beginning at read_committed, until cancelled."""
    t = settings.topics
    topics = [t.verdicts, t.escalations, t.review, t.labels, t.dlq]
    parts = await topic_partitions(settings.kafka, topics)
    consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
    await consumer.start()
    intern = sys.intern
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for m in messages:
                    value = json.loads(m.value)
                    at = Copy(m.partition, m.offset, m.timestamp)
                    if tp.topic == t.verdicts:
                        pid = value["post_id"]
                        first = first_verdict_id(pid)
                        # The first final verdict's id is kept as "=" (less memory).
                        vid = value.get("verdict_id") or ""
                        vid = "=" if vid == first else vid
                        sup = value.get("supersedes")
                        sup = "=" if sup == first else sup
                        tier = intern(value["tier"])
                        crc = zlib.crc32(m.value)
                        seen = Seen(at, crc, intern(value["action"]), tier, vid, sup)
                        ledger.verdicts[pid].append(seen)
                        if tier == "human":
                            ledger.human.add(pid)
                    elif tp.topic == t.escalations:
                        ledger.escalations[value["post"]["post_id"]].append(at)
                    elif tp.topic == t.review:
                        ledger.reviews[value["post"]["post_id"]].append(at)
                    elif tp.topic == t.labels:
                        ledger.labels[value["post"]["post_id"]].append(at)
                    else:
                        where = (value["topic"], value["partition"], value["offset"])
                        ledger.letters[where].append(at)
    finally:
        await consumer.stop()


async def add_reviewer(env: dict[str, str]) -> None:
    """The reviewer's account, made the way an operator makes one."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "modpipe",
        "review",
        "add-user",
        REVIEWER,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate(f"{PASSWORD}\n".encode())
    if proc.returncode != 0:
        raise RuntimeError(f"review add-user failed: {err.decode()[-2000:]}")


def decision(item: dict[str, Any]) -> dict[str, Any]:
    """What the reviewer decides: an audit's proposed verdict, else allow."""
    proposed = item.get("proposed") or {}
    if (
        item.get("reason") == "audit"
        and proposed.get("action") == "block"
        and proposed.get("categories")
    ):
        return {"item_id": item["item_id"], "action": "block", "categories": proposed["categories"]}
    return {"item_id": item["item_id"], "action": "allow"}


async def review_items(url: str, ledger: Ledger, start: float, stop: asyncio.Event) -> None:
    """One reviewer through the console's API: claim, decide, again; until `stop`. A post
    claimed again after its decision was accepted is a review item shown twice."""
    held: str | None = None  # the item this reviewer holds: claiming it again is no new sight
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        signed_in = False
        while not stop.is_set():
            try:
                if not signed_in:
                    r = await http.post(
                        "/api/login", json={"username": REVIEWER, "password": PASSWORD}
                    )
                    if r.status_code != 200:
                        await asyncio.sleep(1.0)
                        continue
                    http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
                    signed_in = True
                r = await http.post("/api/claim", json={})
                if r.status_code in (401, 403):
                    signed_in = False
                    continue
                if r.status_code != 200:  # 204: nothing queued; 503: the store is back soon
                    await asyncio.sleep(0.5)
                    continue
                item = r.json()
                pid = str(item["post"]["post_id"])
                if item["item_id"] != held:
                    ledger.claims[pid] += 1
                    if pid in ledger.decided:
                        ledger.shown_again.append((pid, item["item_id"], time.monotonic() - start))
                held = item["item_id"]
                r = await http.post("/api/decisions", json=decision(item))
                if r.status_code == 200 or (r.status_code == 409 and "already decided" in r.text):
                    ledger.decided.add(pid)
                    held = None
                elif r.status_code in (401, 403):
                    signed_in = False
            except (httpx.TransportError, ValueError, KeyError):
                await asyncio.sleep(0.5)  # the console is restarting


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

        rng = random.Random(args.seed)
        events: list[tuple[float, str, str]] = [
            (at, "kill", name)
            for name in supervisor.procs
            for at in schedule(rng, args.duration, args.kill_every)
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
        events = sorted(events + restarts)
        happened: list[tuple[float, str]] = []  # (wall time, what): evidence for the report
        start = time.monotonic()
        stop_reviewing = asyncio.Event()
        reviewer = asyncio.create_task(
            review_items(f"http://127.0.0.1:{console_port}", ledger, start, stop_reviewing)
        )
        publisher = asyncio.create_task(publish(settings, ledger, args, tag, start + args.duration))
        outages: dict[str, asyncio.Task[float]] = {}
        while not publisher.done():
            now = time.monotonic() - start
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
        # Not yet consumed is not lost: the groups' lag says which it is.
        backlog = {}
        for name, group, topic in (
            ("triage", settings.app_id, t.posts),
            ("escalator", settings.escalation.group_id, t.escalations),
            ("console", settings.review.group_id, t.review),
        ):
            with suppress(KafkaError):
                backlog[name] = sum((await consumer_lag(settings.kafka, group, topic)).values())
        codes = supervisor.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        code = report(args, ledger, supervisor, rate, drain_s, down, codes, backlog, happened)
        return code
    finally:
        if supervisor is not None:
            supervisor.stop(10)
        stack.down(keep=args.keep and code != 0)


def duplicates(copies: dict[Any, list[Copy]]) -> dict[Any, list[Copy]]:
    """The keys seen more than once, with every copy."""
    return {k: v for k, v in copies.items() if len(v) > 1}


def conflicts(seen: list[Seen]) -> list[tuple[Seen, Seen]]:
    """Pairs (earlier, later) of different actions where the later does not name the
    earlier in `supersedes`, directly or through the verdicts it supersedes."""
    ordered = sorted(seen, key=lambda v: v.where.offset)
    replaces = {v.verdict_id: v.supersedes for v in ordered if v.verdict_id}
    out = []
    for j, later in enumerate(ordered):
        for earlier in ordered[:j]:
            if earlier.action == later.action:
                continue
            named, hops = later.supersedes, 0
            while named is not None and named != earlier.verdict_id and hops < 16:
                named, hops = replaces.get(named), hops + 1
            if earlier.verdict_id == "" or named != earlier.verdict_id:
                out.append((earlier, later))
    return out


def verdict_copies(seen: list[Seen]) -> list[list[Seen]]:
    """Groups of verdicts that are copies of one another: the same verdict_id (for the
    first final verdict, `=`), or for verdicts without an id, the same tier and action."""
    groups: dict[tuple[str, str, str], list[Seen]] = defaultdict(list)
    for v in seen:
        key = (v.verdict_id, "", "") if v.verdict_id else ("", v.tier, v.action)
        groups[key].append(v)
    return [g for g in groups.values() if len(g) > 1]


def where_from(ledger: Ledger, pid: str) -> str:
    """Where a post was published: partition, offset, seconds into the run."""
    got = ledger.inputs.get(pid)
    return "?" if got is None else f"posts p{got[0]}@{got[1]}, acked at {got[2]:.1f}s"


def before(happened: list[tuple[float, str]], ts_ms: int, window_s: float = 60.0) -> str:
    """The planned events in the `window_s` before a record's timestamp (else the last)."""
    near = [
        f"{what} ({ts_ms / 1000 - at:.1f}s before)"
        for at, what in happened
        if 0 <= ts_ms / 1000 - at <= window_s
    ]
    if near:
        return ", ".join(near)
    last = [
        f"{what} ({ts_ms / 1000 - at:.1f}s before)" for at, what in happened if at <= ts_ms / 1000
    ]
    return last[-1] if last else "none"


def report(
    args: argparse.Namespace,
    ledger: Ledger,
    supervisor: Supervisor,
    rate: float,
    drain_s: float,
    down: dict[str, float],
    codes: dict[str, int | None],
    backlog: dict[str, int],
    happened: list[tuple[float, str]],
) -> int:
    lost_posts, lost_letters = ledger.missing()
    undecided = ledger.undecided_reviews()
    dup_verdicts = {pid: g for pid, seen in ledger.verdicts.items() if (g := verdict_copies(seen))}
    dup_topics = {
        "verdicts": sum(len(c) - 1 for g in dup_verdicts.values() for c in g),
        "escalations": sum(len(c) - 1 for c in duplicates(ledger.escalations).values()),
        "review items": sum(len(c) - 1 for c in duplicates(ledger.reviews).values()),
        "labels": sum(len(c) - 1 for c in duplicates(ledger.labels).values()),
        "dead letters": sum(len(c) - 1 for c in duplicates(ledger.letters).values()),
    }
    clashes = {
        pid: c for pid, seen in ledger.verdicts.items() if len(seen) > 1 if (c := conflicts(seen))
    }
    clash_kinds: Counter[str] = Counter(
        f"{e.tier}:{e.action} then {later.tier}:{later.action}"
        for pairs in clashes.values()
        for e, later in pairs
    )
    twice = len(ledger.shown_again)
    kills = {p.name: p.kills for p in supervisor.procs.values()}
    deaths = {p.name: p.deaths for p in supervisor.procs.values()}
    total_dup = sum(dup_topics.values())
    tiers: Counter[str] = Counter(seen[0].tier for seen in ledger.verdicts.values())
    lines = [
        f"duration {args.duration:.0f}s, rate {args.rate}/s (achieved {rate:.0f}/s), "
        f"bad {args.bad:.0%}",
        f"published            {ledger.published} ({ledger.bad} bad records)",
        f"final verdicts       {len(ledger.verdicts)} posts of {len(ledger.expect_verdict)} "
        f"(first verdict by tier {dict(tiers)})",
        f"dead letters         {len(ledger.letters)} of {len(ledger.expect_letter)}",
        f"review items         {len(ledger.reviews)} posts on the topic, "
        f"{len(ledger.decided)} decided by the reviewer, {len(ledger.human)} human verdicts",
        f"lost                 {lost_posts + lost_letters} "
        f"({lost_posts} posts, {lost_letters} refused records); "
        f"review items never decided {len(undecided)}",
        f"duplicates           {total_dup} {dup_topics}",
        f"conflicting verdicts {sum(len(c) for c in clashes.values())} in {len(clashes)} posts "
        f"{dict(clash_kinds)}",
        f"review items twice   {twice} (shown to the reviewer again after its decision)",
        f"kills (kill -9)      {kills}",
        f"unplanned deaths     {deaths}",
        "restarts             "
        + ", ".join(f"{who} down {s:.1f}s" for who, s in down.items())
        + f" (redis: {args.redis_restart})",
        f"drained in           {drain_s:.1f}s after publishing stopped "
        f"(group lag at the end: {backlog}; a transaction's commit marker is 1 per partition)",
        f"final stop codes     {codes}",
        f"tracebacks in logs   {supervisor.tracebacks()}",
    ]
    print("\n".join(lines), flush=True)
    evidence(ledger, dup_verdicts, clashes, undecided, happened, lost_posts)
    died = any(deaths.values())
    bad = lost_posts + lost_letters + len(undecided) + total_dup + len(clashes) + twice
    return 0 if bad == 0 and not died else 1


def evidence(
    ledger: Ledger,
    dup_verdicts: dict[str, list[list[Seen]]],
    clashes: dict[str, list[tuple[Seen, Seen]]],
    undecided: list[str],
    happened: list[tuple[float, str]],
    lost_posts: int,
    most: int = 10,
) -> None:
    """Examples of whatever went wrong: post ids, partition/offset of each copy, the last
    planned event before the second copy was written."""
    out: list[str] = []
    for pid, groups in list(dup_verdicts.items())[:most]:
        for g in groups:
            copies = ", ".join(
                f"p{v.where.partition}@{v.where.offset} {v.tier}:{v.action} "
                f"crc={v.crc:08x} ts={v.where.ts_ms}"
                for v in g
            )
            out.append(
                f"  duplicate verdict {pid!r} (input {where_from(ledger, pid)}): {copies}; "
                f"before the 2nd: {before(happened, g[1].where.ts_ms)}"
            )
    per_topic: tuple[tuple[str, dict[Any, list[Copy]]], ...] = (
        ("escalation", ledger.escalations),
        ("review item", ledger.reviews),
        ("label", ledger.labels),
        ("dead letter", ledger.letters),
    )
    for name, records in per_topic:
        for key, cs in list(duplicates(records).items())[:most]:
            where = ", ".join(f"p{c.partition}@{c.offset}" for c in cs)
            out.append(
                f"  duplicate {name} {key!r}: {where}; "
                f"before the 2nd: {before(happened, cs[1].ts_ms)}"
            )
    for pid, pairs in list(clashes.items())[:most]:
        for e, later in pairs:
            out.append(
                f"  conflict {pid!r}: p{e.where.partition}@{e.where.offset} "
                f"{e.tier}:{e.action} id={e.verdict_id or '-'} then "
                f"p{later.where.partition}@{later.where.offset} {later.tier}:{later.action} "
                f"id={later.verdict_id or '-'} supersedes={later.supersedes} "
                f"(input {where_from(ledger, pid)}); "
                f"before the later: {before(happened, later.where.ts_ms)}"
            )
    for pid, item, at in ledger.shown_again[:most]:
        out.append(f"  review item shown again {pid!r} (item {item}) at {at:.1f}s")
    for pid in undecided[:most]:
        where = ", ".join(f"p{c.partition}@{c.offset}" for c in ledger.reviews[pid])
        out.append(f"  review item never decided {pid!r}: {where}")
    if lost_posts:
        lost = [pid for pid in ledger.expect_verdict if pid not in ledger.verdicts][:most]
        out.append(f"  lost posts (first {len(lost)}): {lost}")
    if out:
        print("evidence:\n" + "\n".join(out), flush=True)
    print("events: " + "; ".join(what for _, what in happened), flush=True)


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
