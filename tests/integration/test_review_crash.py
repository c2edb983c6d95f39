"""kill -9 of the console loses no item and no decision, and never changes a decision."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict
from typing import Any

import httpx

from modpipe.core.settings import Settings
from modpipe.review.accounts import Session
from modpipe.review.store import ReviewStore, connect
from tests.conftest import MakeSettings
from tests.integration.review_support import (
    PASSWORD,
    add_users,
    committed,
    console_process,
    end_offsets,
    publish_items,
    publish_raw,
    read_topic,
    review_item,
    review_settings,
    running_console,
)

POSTS = 40
REVIEWERS = ("ann", "bob", "cat", "dan")


async def _reviewer(base: str, name: str, answers: dict[str, str], stop: asyncio.Event) -> None:
    """Claim and decide until the console dies or the queue is empty; note each 200."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        try:
            r = await http.post("/api/login", json={"username": name, "password": PASSWORD})
            http.headers["X-CSRF-Token"] = r.json()["csrf_token"]
            while not stop.is_set():
                r = await http.post("/api/claim", json={})
                if r.status_code == 204:
                    await asyncio.sleep(0.1)
                    continue
                item = r.json()
                post_id = item["post"]["post_id"]
                action = "allow" if hash(post_id) % 2 else "block"
                body: dict[str, Any] = {"item_id": item["item_id"], "action": action}
                if action == "block":
                    body["categories"] = ["harassment"]
                r = await http.post("/api/decisions", json=body)
                if r.status_code == 200:
                    answers[post_id] = action
        except httpx.TransportError:
            return  # the console was killed under us


def _check(records: list[tuple[bytes, bytes]]) -> dict[str, set[bytes]]:
    by_post: dict[str, set[bytes]] = defaultdict(set)
    for key, value in records:
        by_post[key.decode()].add(value)
    return by_post


async def _drain(settings: Settings, answers: dict[str, str]) -> None:
    """A second console process finishes the queue; every post decided, offsets at the end."""
    stop = asyncio.Event()
    async with console_process(settings):
        base = f"http://127.0.0.1:{settings.review.port}"
        tasks = [asyncio.create_task(_reviewer(base, n, answers, stop)) for n in REVIEWERS]
        deadline = time.monotonic() + 90
        ends = await end_offsets(settings)
        while await committed(settings) != ends:
            assert time.monotonic() < deadline, (await committed(settings), ends)
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)


async def test_kill_9_mid_decision_loses_nothing_and_duplicates_no_decision(
    make_settings: MakeSettings,
) -> None:
    # Leases and the outbox retry short, so the restarted console finishes quickly.
    settings = review_settings(make_settings, lease_s=2.0, outbox_retry_s=1.0)
    await add_users(settings, *REVIEWERS)
    post_ids = [f"kill-{i}" for i in range(POSTS)]
    await publish_items(settings, post_ids)
    answers: dict[str, str] = {}
    stop = asyncio.Event()
    async with console_process(settings) as proc:
        base = f"http://127.0.0.1:{settings.review.port}"
        tasks = [asyncio.create_task(_reviewer(base, n, answers, stop)) for n in REVIEWERS]
        deadline = time.monotonic() + 60
        while len(answers) < POSTS // 3:
            assert time.monotonic() < deadline, f"only {len(answers)} decisions in 60s"
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # four reviewers mid-request
        proc.wait(timeout=10)
        await asyncio.gather(*tasks)
    decided_before = dict(answers)
    await _drain(settings, answers)

    verdicts = _check(await read_topic(settings, settings.topics.verdicts, 2 * POSTS, 10))
    labels = _check(await read_topic(settings, settings.topics.labels, 2 * POSTS, 10))
    # nothing lost: every post has a human verdict and a label
    assert set(verdicts) == set(labels) == set(post_ids)
    # no double decision: a post's records, however often published, are byte-identical
    assert all(len(v) == 1 for v in verdicts.values()), {
        k: v for k, v in verdicts.items() if len(v) > 1
    }
    assert all(len(v) == 1 for v in labels.values())
    # every decision a reviewer was told about is the one published
    for post_id, action in answers.items():
        verdict = json.loads(next(iter(verdicts[post_id])))
        assert (verdict["action"], verdict["tier"]) == (action, "human")
    assert len(decided_before) >= POSTS // 3
    # Exactly once: a decision whose transaction committed before the kill is recognised on
    # Kafka by the outbox, and not published again.
    published = await read_topic(settings, settings.topics.verdicts, 2 * POSTS, 2)
    assert len(published) == POSTS, f"{len(published) - POSTS} decisions published twice"
    assert len(await read_topic(settings, settings.topics.labels, 2 * POSTS, 2)) == POSTS


async def test_a_decision_recorded_but_not_published_is_republished_unchanged(
    make_settings: MakeSettings,
) -> None:
    """The crash window between recording and publishing, made exact: the record is in
    Redis and nothing was published; a fresh console publishes that decision, byte for byte."""
    settings = review_settings(make_settings, outbox_retry_s=0.5)
    await publish_items(settings, ["window-1"])
    async with running_console(settings) as console:
        deadline = time.monotonic() + 30
        ann = Session("ann", "reviewer", "csrf")
        while (lease := await console.desk.claim(ann, None)) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        decision = console.desk._build(lease, "ann", {"action": "allow", "categories": []})
        outcome = await console.store.decide("ann", lease.item_id, decision, "", 3600.0)
        assert outcome.status == "ok"  # recorded; the process "dies" before publishing
    assert await read_topic(settings, settings.topics.verdicts, 1, timeout_s=1) == []
    async with running_console(settings) as console:
        # the entry is overdue only after its retry time: make it due now
        await console.store.redis.zadd(f"{console.store.prefix}:outbox", {lease.item_id: 0})
        verdicts = await read_topic(settings, settings.topics.verdicts, 1, timeout_s=10)
        labels = await read_topic(settings, settings.topics.labels, 1, timeout_s=10)
        # a second attempt at the same item is refused with the stored verdict
        deadline = time.monotonic() + 10
        key = f"{console.store.prefix}:item:{lease.item_id}"
        while await console.store.redis.hget(key, "state") != "published":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        again = await console.store.decide("ann", lease.item_id, {"other": 1}, "", 1.0)
        # once published, the post's text is gone from Redis; the verdict stays a while
        kept = await console.store.redis.hgetall(key)
        ttl = await console.store.redis.ttl(key)
    assert verdicts == [(b"window-1", decision["verdict"].encode())]
    assert labels == [(b"window-1", decision["label"].encode())]
    assert again.status == "decided" and again.decision == {"verdict": decision["verdict"]}
    assert "record" not in kept and "hello" not in str(kept)
    assert 0 < ttl <= settings.review.decided_keep_s


async def test_kill_9_mid_ingest_loses_no_item_and_dead_letters_each_bad_record_once(
    make_settings: MakeSettings,
) -> None:
    # The feeder commits a partition only past records it stored; a malformed record's
    # dead letter and the offset past it commit in one transaction.
    settings = review_settings(make_settings)
    post_ids = [f"ingest-{i}" for i in range(1500)]
    bad = [(f"bad-{i}".encode(), b"not json {") for i in range(40)]
    good = [(p.encode(), review_item(p)) for p in post_ids]
    await publish_raw(settings, good[:750] + bad + good[750:])

    async def depth(store: ReviewStore) -> int:
        queues, leased = await store.stats()
        return sum(q.depth for q in queues) + leased

    store = ReviewStore(
        connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
    )
    try:
        async with console_process(settings) as proc:
            deadline = time.monotonic() + 60
            while await depth(store) < 100:
                assert time.monotonic() < deadline, "the console stored nothing in 60s"
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)  # mid-ingest
            proc.wait(timeout=10)
        stored_at_kill = await depth(store)
        async with running_console(settings):
            deadline = time.monotonic() + 90
            while await depth(store) < len(post_ids):
                assert time.monotonic() < deadline, (await depth(store), len(post_ids))
                await asyncio.sleep(0.2)
            letters = await read_topic(settings, settings.topics.dlq, 2 * len(bad), 5)
    finally:
        await store.aclose()
    print(f"killed with {stored_at_kill} of {len(post_ids)} items stored")
    assert await depth(ReviewStore(connect(settings.redis), settings.redis.key_prefix)) == len(
        post_ids
    )
    assert sorted(k for k, _ in letters) == sorted(k for k, _ in bad)  # each exactly once
