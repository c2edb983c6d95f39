"""What the soak sends and sees: the posts it publishes (a share from the bad-input corpus),
the ledger of every output record read back, and the reviewer that decides each item."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from bench.soak.stack import BIG
from bench.stand_ins import KINDS, Kind, post_id
from modpipe.core.kafka import (
    consumer_options,
    topic_partitions,
)
from modpipe.core.records import first_verdict_id
from modpipe.core.settings import Settings

# About 10% borderline (escalated), like the demo's mix.
TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]
WEIGHTS = [0.7, 0.2, 0.1]
POST_KINDS = [k for k in KINDS if k.topic == "posts"]
REVIEWER, PASSWORD = "soak-reviewer", "soak reviewer password"


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

    def acknowledged(self, meta: Any, pid: str, kind: Kind | None, at_s: float) -> None:
        """The broker acknowledged post `pid` (a corpus `kind`, or a good post) at `meta`."""
        self.inputs[pid] = (meta.partition, meta.offset, at_s)
        self.published += 1
        self.bad += kind is not None
        if kind is None or kind.outcome == "decided":
            self.expect_verdict.add(pid)
        else:
            self.expect_letter[(meta.topic, meta.partition, meta.offset)] = kind.outcome

    def missing(self) -> tuple[int, int]:
        """Posts without a verdict, refused records without a dead letter."""
        return (
            sum(1 for pid in self.expect_verdict if pid not in self.verdicts),
            sum(1 for where in self.expect_letter if where not in self.letters),
        )

    def undecided_reviews(self) -> list[str]:
        """Posts with a review item on the topic and no human verdict (yet)."""
        return [pid for pid in self.reviews if pid not in self.human]


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


PRODUCER: dict[str, Any] = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}
Sending = tuple[bytes | None, bytes | None, str, Kind | None]  # key, value, post_id, kind


async def publish(
    settings: Settings, ledger: Ledger, args: argparse.Namespace, tag: str, stop_at: float
) -> float:
    """Publish at a fixed rate until `stop_at`; the acknowledged rate. Failed sends are retried."""
    rng = random.Random(args.seed)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, **PRODUCER, max_request_size=BIG
    )
    await producer.start()
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
                ledger.acknowledged(fut.result(), item[2], item[3], time.monotonic() - started)
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
