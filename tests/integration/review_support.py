"""Helpers for the review console's tests: items on Kafka, a console in-process or as a
process, signed-in API clients, and reading what the console published."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from modpipe.core.kafka import ensure_topics, topic_partitions
from modpipe.core.metrics import Metrics
from modpipe.core.records import ReviewItem, Verdict, encode
from modpipe.core.settings import Settings
from modpipe.review.accounts import Accounts
from modpipe.review.app import build_app
from modpipe.review.console import Console
from modpipe.review.store import ReviewStore, connect
from tests.conftest import MakeSettings

PASSWORD = "correct horse battery"


def review_settings(make_settings: MakeSettings, partitions: int = 2, **review: Any) -> Settings:
    """Unique topics, group and Redis prefix, with the console's settings overridden."""
    tag = uuid.uuid4().hex[:8]
    # A killed console's partitions move to the next one after the session timeout.
    return make_settings(
        review={"group_id": f"test-review-{tag}", "port": free_port(), **review},
        metrics={"review_port": 0},
        kafka={"partitions": partitions, "session_timeout_s": 6},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def review_item(
    post_id: str, text: str = "hello", reason: str = "no_provider", **extra: Any
) -> bytes:
    """A review record as the escalator or the audit sample writes it."""
    proposed = None
    if reason == "audit":
        proposed = Verdict(
            post_id=post_id,
            action=extra.pop("proposed_action", "allow"),
            categories=[],
            scores={"harassment": 0.1},
            tier="small",
            model="cpu",
            policy_version="test",
            latency_ms=5.0,
            cost_usd=0.0,
        )
    item = ReviewItem(
        post={"post_id": post_id, "text": text, "surface": "test", **extra},
        scores={"harassment": 0.61, "hate": 0.12},
        model="cpu",
        policy_version="test",
        reason=reason,  # type: ignore[arg-type]
        detail="no provider configured" if reason != "audit" else "",
        proposed=proposed,
    )
    return encode(item)


async def publish_raw(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    """Publish (key, value) pairs on the review topic."""
    t = settings.topics
    await ensure_topics(
        settings.kafka, (t.review, t.verdicts, t.labels, t.dlq), settings.kafka.partitions
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topics.review, value, key=key)
    finally:
        await producer.stop()


async def publish_items(settings: Settings, post_ids: list[str], **kwargs: Any) -> None:
    await publish_raw(settings, [(p.encode(), review_item(p, **kwargs)) for p in post_ids])


async def add_users(settings: Settings, *names: str, role: str = "reviewer") -> None:
    store = ReviewStore(
        connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
    )
    try:
        for name in names:
            await Accounts(store, settings.review).add_user(name, PASSWORD, role)  # type: ignore[arg-type]
    finally:
        await store.aclose()


@asynccontextmanager
async def running_console(settings: Settings) -> AsyncIterator[Console]:
    """A console's background work in this process (its app is served by ASGITransport)."""
    console = Console(settings, Metrics())
    await console.start()
    try:
        yield console
    finally:
        await console.stop()


def client(console: Console, base_url: str = "http://console") -> httpx.AsyncClient:
    """An HTTP client that talks to the console's app in-process."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_app(console)), base_url=base_url
    )


async def sign_in(http: httpx.AsyncClient, user: str, password: str = PASSWORD) -> str:
    """Log in through the API; the client keeps the cookie; returns the CSRF token."""
    r = await http.post("/api/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    token: str = r.json()["csrf_token"]
    http.headers["X-CSRF-Token"] = token
    return token


async def claim_when_queued(
    http: httpx.AsyncClient, timeout_s: float = 30.0, **body: Any
) -> dict[str, Any]:
    """Claim, retrying while the feeder has not queued anything yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = await http.post("/api/claim", json=body)
        if r.status_code == 200:
            return r.json()  # type: ignore[no-any-return]
        # 204: nothing queued yet; 503: the store is coming back (it says "retry shortly").
        assert r.status_code in (204, 503), r.text
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing to claim after {timeout_s}s")
        await asyncio.sleep(0.2)


async def read_topic(
    settings: Settings, topic: str, count: int, timeout_s: float = 30.0
) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first `count` records of `topic` (fewer if `timeout_s` passes)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        parts = await topic_partitions(settings.kafka, [topic])
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend((r.key, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


async def committed(settings: Settings) -> dict[int, int]:
    """The console group's committed offset per review partition (-1 when none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=settings.review.group_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        out = {}
        for tp in await topic_partitions(settings.kafka, [settings.topics.review]):
            offset = await consumer.committed(tp)
            out[tp.partition] = -1 if offset is None else offset
        return out
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap, group_id=None, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(
            await topic_partitions(settings.kafka, [settings.topics.review])
        )
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


def env_for(settings: Settings) -> dict[str, str]:
    """Environment that gives a `modpipe review serve` process this test's settings."""
    t, r = settings.topics, settings.review
    env = dict(os.environ)
    env.update(
        {
            "MODPIPE_TOPICS__REVIEW": t.review,
            "MODPIPE_TOPICS__VERDICTS": t.verdicts,
            "MODPIPE_TOPICS__LABELS": t.labels,
            "MODPIPE_TOPICS__DLQ": t.dlq,
            "MODPIPE_TOPICS__APPEALS": t.appeals,
            "MODPIPE_APPEALS__GROUP_ID": settings.appeals.group_id,
            "MODPIPE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
            "MODPIPE_KAFKA__SESSION_TIMEOUT_S": str(settings.kafka.session_timeout_s),
            "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
            "MODPIPE_REVIEW__GROUP_ID": r.group_id,
            "MODPIPE_REVIEW__PORT": str(r.port),
            "MODPIPE_REVIEW__LEASE_S": str(r.lease_s),
            "MODPIPE_REVIEW__OUTBOX_RETRY_S": str(r.outbox_retry_s),
            "MODPIPE_REVIEW__COMMIT_INTERVAL_S": str(r.commit_interval_s),
            "MODPIPE_METRICS__REVIEW_PORT": "0",
        }
    )
    return env


@asynccontextmanager
async def console_process(settings: Settings) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`modpipe review serve` as a process, ready when its port answers; killed at the end."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modpipe", "review", "serve"],
            env=env_for(settings),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await wait_for_port(settings.review.port, proc, log)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)


async def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], log: IO[bytes], timeout_s: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace")
                raise AssertionError(f"console exited with {proc.returncode}: {err[-2000:]}")
            try:
                await http.get(f"http://127.0.0.1:{port}/login", timeout=1.0)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise AssertionError(f"console did not answer on port {port} in {timeout_s}s")


def decode(records: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    return [json.loads(v) for _, v in records]
