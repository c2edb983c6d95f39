"""Queues, leases and decisions on the real Kafka and Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.records import Label, Verdict
from tests.conftest import MakeSettings
from tests.integration.review_support import (
    add_users,
    claim_when_queued,
    client,
    committed,
    decode,
    end_offsets,
    free_port,
    publish_items,
    publish_raw,
    read_topic,
    review_settings,
    running_console,
    sign_in,
)


async def test_two_reviewers_claiming_at_once_get_different_items(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings)
    names = ["ann", "bob", "cat", "dan", "eve"]
    await add_users(settings, *names)
    await publish_items(settings, [f"race-{i}" for i in range(10)])
    async with running_console(settings) as console:
        reviewers = [client(console) for _ in names]
        try:
            for http, name in zip(reviewers, names, strict=True):
                await sign_in(http, name)
            deadline = time.monotonic() + 30
            while (
                sum(q["depth"] for q in (await reviewers[0].get("/api/queues")).json()["queues"])
                < 10
            ):
                assert time.monotonic() < deadline, "the feeder did not queue 10 items"
                await asyncio.sleep(0.2)
            seen: set[str] = set()
            for _ in range(2):  # two rounds of five simultaneous claims
                answers = await asyncio.gather(*(h.post("/api/claim", json={}) for h in reviewers))
                ids = [a.json()["item_id"] for a in answers]
                assert len(set(ids)) == 5 and not seen & set(ids)
                seen |= set(ids)
                await asyncio.gather(
                    *(
                        h.post("/api/decisions", json={"item_id": i, "action": "allow"})
                        for h, i in zip(reviewers, ids, strict=True)
                    )
                )
            answers = await asyncio.gather(*(h.post("/api/claim", json={}) for h in reviewers))
            assert [a.status_code for a in answers] == [204] * 5
        finally:
            for http in reviewers:
                await http.aclose()
    verdicts = decode(await read_topic(settings, settings.topics.verdicts, 11, timeout_s=5))
    assert sorted(v["post_id"] for v in verdicts) == sorted(f"race-{i}" for i in range(10))


async def test_an_expired_lease_returns_the_item(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings, lease_s=1.0)
    await add_users(settings, "ann", "bob")
    await publish_items(settings, ["lease-1"])
    async with running_console(settings) as console, client(console) as ann, client(console) as bob:
        await sign_in(ann, "ann")
        await sign_in(bob, "bob")
        held = await claim_when_queued(ann)
        assert (await bob.post("/api/claim", json={})).status_code == 204
        # within seconds of the 1 s lease running out, bob gets the same item
        again = await claim_when_queued(bob, timeout_s=10.0)
        assert again["item_id"] == held["item_id"]
        # ann's late decision is refused: bob holds it now
        r = await ann.post("/api/decisions", json={"item_id": held["item_id"], "action": "allow"})
        assert r.status_code == 409
        r = await bob.post(
            "/api/decisions",
            json={"item_id": again["item_id"], "action": "block", "categories": ["harassment"]},
        )
        assert r.status_code == 200 and r.json()["published"] is True
        # and a second decision on a decided item is refused too
        r = await bob.post("/api/decisions", json={"item_id": again["item_id"], "action": "allow"})
        assert r.status_code == 409 and r.json()["decision"]["verdict"]["action"] == "block"
    verdicts = decode(await read_topic(settings, settings.topics.verdicts, 2, timeout_s=3))
    assert [(v["post_id"], v["action"], v["reviewer"]) for v in verdicts] == [
        ("lease-1", "block", "bob")
    ]


async def test_a_decision_publishes_the_human_verdict_and_label_then_commits(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings, commit_interval_s=0.2, stats_interval_s=0.2)
    await add_users(settings, "ann")
    await publish_items(settings, ["dec-1"], text="you people are the worst")
    await publish_items(settings, ["dec-1"], text="you people are the worst")  # a duplicate
    await publish_raw(settings, [(b"bad-1", b"not json"), (None, b'{"post": {}}')])
    await publish_items(settings, ["audit-1"], reason="audit", proposed_action="allow")
    async with running_console(settings) as console, client(console) as ann:
        await sign_in(ann, "ann")
        first = await claim_when_queued(ann, reason="no_provider")
        assert first["post"] == {
            "post_id": "dec-1",
            "text": "you people are the worst",
            "surface": "test",
        }
        assert first["scores"] == {"harassment": 0.61, "hate": 0.12}
        assert first["detail"] == "no provider configured"
        assert (await ann.post("/api/claim", json={"reason": "no_provider"})).json()[
            "item_id"
        ] == first["item_id"]  # one claim at a time: the same item again, not a second
        r = await ann.post(
            "/api/decisions",
            json={
                "item_id": first["item_id"],
                "action": "block",
                "categories": ["hate", "harassment"],
                "note": "targets a group",
            },
        )
        assert r.status_code == 200, r.text
        # nothing else waits under no_provider: the duplicate record is the same item
        assert (await ann.post("/api/claim", json={"reason": "no_provider"})).status_code == 204
        audit = await claim_when_queued(ann, reason="audit")
        assert audit["proposed"]["action"] == "allow"
        r = await ann.post(
            "/api/decisions",
            json={"item_id": audit["item_id"], "action": "block", "categories": ["harassment"]},
        )
        assert r.status_code == 200
        bad = await ann.post("/api/decisions", json={"item_id": "x", "action": "block"})
        assert bad.status_code == 400 and "category" in bad.json()["error"]
        # offsets reach the end: every record is decided, duplicated or dead-lettered
        ends = {p: end for p, end in (await end_offsets(settings)).items() if end}

        async def committed_where_read() -> dict[int, int]:  # a partition never read owes none
            return {p: o for p, o in (await committed(settings)).items() if p in ends}

        deadline = time.monotonic() + 20
        while await committed_where_read() != ends:
            assert time.monotonic() < deadline, (await committed_where_read(), ends)
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)  # one gauge refresh
        m = console.metrics
        assert m.review_decisions.labels("block")._value.get() == 2
        assert m.review_audits.labels("disagree")._value.get() == 1
        assert m.tier1_error.labels("estimate")._value.get() == 1.0
        assert m.tier1_error.labels("lower")._value.get() == pytest.approx(0.025)  # 1 of 1
        assert m.review_depth.labels("no_provider")._value.get() == 0
    verdicts = {
        v["post_id"]: v for v in decode(await read_topic(settings, settings.topics.verdicts, 2))
    }
    labels = await read_topic(settings, settings.topics.labels, 2)
    v = Verdict.model_validate(verdicts["dec-1"])
    assert (v.tier, v.action, v.categories, v.reviewer, v.model) == (
        "human",
        "block",
        ["harassment", "hate"],
        "ann",
        "human",
    )
    assert {k for k, _ in labels} == {b"dec-1", b"audit-1"}
    label = Label.model_validate(json.loads(dict(labels)[b"dec-1"]))
    assert label.post["text"] == "you people are the worst"
    assert (label.action, label.source, label.reviewer, label.reason, label.note) == (
        "block",
        "human",
        "ann",
        "no_provider",
        "targets a group",
    )
    assert label.decided_at == v.decided_at
    dead = decode(await read_topic(settings, settings.topics.dlq, 2))
    assert sorted(d["reason"] for d in dead) == ["json", "schema"]


async def test_offsets_wait_for_undecided_items(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings, partitions=1, commit_interval_s=0.2)
    await add_users(settings, "ann")
    for post_id in ("wait-1", "wait-2", "wait-3"):  # queued_at a few ms apart: a clear order
        await publish_items(settings, [post_id])
        await asyncio.sleep(0.01)
    async with running_console(settings) as console, client(console) as ann:
        await sign_in(ann, "ann")
        first = await claim_when_queued(ann)
        assert first["post"]["post_id"] == "wait-1"  # oldest first
        await asyncio.sleep(1.0)  # several commit rounds
        # wait-1 undecided: nothing committed past it
        assert await committed(settings) in ({0: -1}, {0: 0})
        await ann.post("/api/decisions", json={"item_id": first["item_id"], "action": "allow"})
        second = await claim_when_queued(ann)
        await ann.post("/api/decisions", json={"item_id": second["item_id"], "action": "allow"})
        deadline = time.monotonic() + 10
        while await committed(settings) != {0: 2}:  # wait-3 still owed a decision
            assert time.monotonic() < deadline, await committed(settings)
            await asyncio.sleep(0.2)


def _redis_server(port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is required"
    return subprocess.Popen(
        # AOF with fsync on every write: what the console's Redis needs (README)
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ],
        stdout=subprocess.DEVNULL,
    )


async def test_a_redis_outage_pauses_the_feed_and_loses_no_item(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    """Records fetched while Redis is down are read again once it is back, never skipped
    (the consumer's position is past them, and commits follow the position)."""
    port = free_port()
    redis_proc = _redis_server(port, tmp_path)
    settings = review_settings(
        make_settings,
        partitions=1,
        commit_interval_s=0.2,
        redis_url=f"redis://127.0.0.1:{port}/0",
    )
    try:
        await wait_for_redis(port)
        await add_users(settings, "ann")
        await publish_items(settings, ["out-0", "out-1"])
        async with running_console(settings) as console, client(console) as ann:
            await sign_in(ann, "ann")
            for _ in range(2):
                item = await claim_when_queued(ann)
                r = await ann.post(
                    "/api/decisions", json={"item_id": item["item_id"], "action": "allow"}
                )
                assert r.status_code == 200
            deadline = time.monotonic() + 10
            while await committed(settings) != {0: 2}:
                assert time.monotonic() < deadline, await committed(settings)
                await asyncio.sleep(0.2)
            redis_proc.kill()
            redis_proc.wait()
            await publish_items(settings, ["out-2", "out-3", "out-4"])
            await asyncio.sleep(3)  # the feeder fetches them and fails to queue them
            assert await committed(settings) == {0: 2}
            redis_proc = _redis_server(port, tmp_path)  # same data directory: the AOF
            await wait_for_redis(port)
            decided = []
            for _ in range(3):
                item = await claim_when_queued(ann, timeout_s=20)
                r = await ann.post(
                    "/api/decisions", json={"item_id": item["item_id"], "action": "allow"}
                )
                assert r.status_code == 200
                decided.append(item["post"]["post_id"])
            assert sorted(decided) == ["out-2", "out-3", "out-4"]
            deadline = time.monotonic() + 10
            while await committed(settings) != {0: 5}:
                assert time.monotonic() < deadline, await committed(settings)
                await asyncio.sleep(0.2)
    finally:
        redis_proc.kill()
        redis_proc.wait()
    verdicts = decode(await read_topic(settings, settings.topics.verdicts, 5))
    assert sorted(v["post_id"] for v in verdicts) == [f"out-{i}" for i in range(5)]


async def wait_for_redis(port: int) -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                await client.ping()
                return
            except RedisError:
                assert time.monotonic() < deadline, "private redis did not start"
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
