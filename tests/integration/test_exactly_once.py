"""Exactly one final verdict per post through kill -9, a paused zombie and a redelivery.

Every reader here is a platform's: `isolation_level=read_committed` (the Outputs fixture).
Workers run as processes where the test kills or pauses them, on the shared broker with
topics, groups, transactional ids and Redis keys of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bench.capacity import Capacity, capacity_limited_vllm
from classifiers import build_classifier
from escalation.frontier import build_frontier
from escalation.worker import EscalationWorker
from modpipe.cli.produce import publish
from modpipe.core.final_verdicts import FinalVerdicts, Outcome
from modpipe.core.metrics import Metrics
from modpipe.core.records import Verdict, encode, first_verdict_id
from modpipe.core.settings import Settings
from streams.app import TriageWorker
from tests.integration.conftest import Outputs, run_until, wait_until
from tests.openai_wire_server import OpenAIWireServer, openai_wire_server

CMD = [sys.executable, "-m", "modpipe"]


def posts(n: int, text: str = "post") -> list[bytes]:
    return [json.dumps({"post_id": f"p{i}", "text": f"{text} {i}"}).encode() for i in range(n)]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that points a worker process at this test's topics, group and keys."""
    topics = {f"MODPIPE_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()}
    return {
        **os.environ,
        "MODPIPE_APP_ID": settings.app_id,
        "MODPIPE_ESCALATION__GROUP_ID": settings.escalation.group_id,
        "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "MODPIPE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_METRICS__ESCALATOR_PORT": "0",
        "MODPIPE_TRIAGE__AUDIT_RATE": "0",
        **topics,
        **extra,
    }


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes started in the block; any still running after it are killed."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def vllm_env(url: str, batch_max: int = 50) -> dict[str, str]:
    return {
        "MODPIPE_TRIAGE__BATCH_MAX": str(batch_max),
        "MODPIPE_TRIAGE__MAX_BATCHES_IN_FLIGHT": "4",
        "MODPIPE_CLASSIFIER__BACKEND": "vllm-classify",
        "MODPIPE_CLASSIFIER__BASE_URL": url,
        "MODPIPE_CLASSIFIER__MAX_IN_FLIGHT": "4",
        # Every post allowed: the test is about delivery, not routing.
        "MODPIPE_CLASSIFIER__LABELS": '[null, "harassment", "hate"]',
    }


def assert_once(out: Outputs, ids: set[str]) -> None:
    lost = ids - out.decided()
    assert not lost, f"{len(lost)} posts lost, e.g. {sorted(lost)[:5]}"
    twice = {
        k: v
        for kind in (out.verdicts, out.escalations, out.review)
        for k, v in kind.items()
        if len(v) > 1
    }
    for k in twice:
        print("WHERE", k, [w for w in out.where if w[3] == k.encode()])
    assert out.duplicates() == 0, f"{out.duplicates()} duplicate records: {list(twice.items())[:3]}"


@pytest.fixture
def eos_settings(make_settings) -> Settings:
    return make_settings(kafka={"partitions": 4, "session_timeout_s": 6})


async def test_triage_killed_twice_with_batches_in_flight_publishes_each_post_once(
    eos_settings: Settings,
) -> None:
    settings, n = eos_settings, 6000
    gpu = Capacity(latency_s=0.05, posts_per_s=20_000)  # several batches wait on the "GPU"
    async with capacity_limited_vllm(gpu) as url, Outputs(settings) as out:
        env = env_for(settings, **vllm_env(url))
        await publish(settings.kafka, settings.topics.posts, posts(n))
        with processes() as procs:
            for kill_after in (1000, 3000):
                procs.append(subprocess.Popen([*CMD, "worker"], env=env))
                await wait_until(lambda k=kill_after: len(out.decided()) >= k, 90, "verdicts")
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait()
            assert len(out.decided()) < n, "killed too late to prove anything"
            assert gpu.most_in_flight > 1, "no two batches were ever in flight together"
            procs.append(subprocess.Popen([*CMD, "worker", "--idle-exit", "5"], env=env))
            await wait_until(lambda: len(out.decided()) >= n, 120, "every post")
            assert await asyncio.to_thread(procs[-1].wait, 60) == 0
        await out.settle()
    assert_once(out, {f"p{i}" for i in range(n)})


async def test_a_paused_worker_resumed_after_its_partitions_moved_publishes_nothing_twice(
    eos_settings: Settings,
) -> None:
    settings, n = eos_settings, 6000
    gpu = Capacity(latency_s=0.3, posts_per_s=3_000)  # slow: the zombie has batches in hand
    async with capacity_limited_vllm(gpu) as url, Outputs(settings) as out:
        env = env_for(settings, **vllm_env(url, batch_max=40))
        await publish(settings.kafka, settings.topics.posts, posts(n))
        with processes() as procs:
            zombie = subprocess.Popen([*CMD, "worker"], env=env)
            procs.append(zombie)
            await wait_until(lambda: len(out.decided()) >= 300, 90, "the first verdicts")
            procs.append(subprocess.Popen([*CMD, "worker", "--idle-exit", "8"], env=env))
            await wait_until(lambda: len(out.decided()) >= 900, 90, "both workers at work")
            zombie.send_signal(signal.SIGSTOP)
            # Past the session timeout the group moves the zombie's partitions; the other
            # worker takes them over and fences the zombie's transactional producers.
            before = len(out.decided())
            await asyncio.sleep(settings.kafka.session_timeout_s + 6)
            assert len(out.decided()) > before, "nobody took the paused worker's partitions"
            zombie.send_signal(signal.SIGCONT)  # wakes with batches it still believes its own
            await wait_until(lambda: len(out.decided()) >= n, 180, "every post")
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                await asyncio.to_thread(proc.wait, 60)
        await out.settle()
    assert_once(out, {f"p{i}" for i in range(n)})


def escalation(pid: str, text: str) -> bytes:
    return json.dumps(
        {
            "post": {"post_id": pid, "text": text},
            "scores": {"harassment": 0.5},
            "model": "small",
            "policy_version": "2026-11-01",
        }
    ).encode()


@pytest.fixture
async def wire() -> AsyncIterator[OpenAIWireServer]:
    async with openai_wire_server() as server:
        yield server


async def test_escalator_killed_with_calls_in_flight_asks_no_post_twice(
    eos_settings: Settings, wire: OpenAIWireServer
) -> None:
    settings, n = eos_settings, 1200
    wire.behaviour.latency_s = 0.4
    env = env_for(
        settings,
        MODPIPE_ESCALATION__PROVIDER="chat",
        MODPIPE_ESCALATION__BASE_URL=wire.url,
        MODPIPE_ESCALATION__MAX_IN_FLIGHT="64",
    )
    async with Outputs(settings) as out:
        values = [escalation(f"e{i}", f"distinct text {i}") for i in range(n)]
        await publish(settings.kafka, settings.topics.escalations, values)
        with processes() as procs:
            procs.append(subprocess.Popen([*CMD, "escalator"], env=env))
            await wait_until(lambda: len(out.verdicts) >= 300, 90, "the first verdicts")
            await wait_until(lambda: wire.in_flight >= 10, 30, "calls in flight")
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait()
            await out.settle()
            published = set(out.verdicts)  # committed before the kill
            # The server counts a call when it answers: let the dead worker's calls end.
            await wait_until(lambda: wire.in_flight == 0, 30, "the killed worker's calls")
            asked = {text for text, n in wire.calls.items() if n}
            assert len(out.verdicts) < n, "killed too late to prove anything"
            restarted = subprocess.Popen([*CMD, "escalator", "--idle-exit", "5"], env=env)
            procs.append(restarted)
            await wait_until(
                lambda: len(out.verdicts) >= n or restarted.poll() is not None,
                120,
                "every verdict",
            )
            code = await asyncio.to_thread(restarted.wait, 60)
            await out.settle()
            assert code == 0 and len(out.verdicts) == n, (
                f"the restarted escalator exited with {code}, {n - len(out.verdicts)} undecided"
            )
        await out.settle()
    assert set(out.verdicts) == {f"e{i}" for i in range(n)}
    assert out.duplicates() == 0
    # A post whose verdict was published before the kill is never asked about again, and
    # only posts in flight at the kill are (answered ones are claimed on Redis and cached).
    repeated = {text for text, n in wire.calls.items() if n > 1}
    texts = {f"distinct text {post_id[1:]}" for post_id in published}
    assert not repeated & texts, "the provider was asked again about a published post"
    assert repeated <= asked
    assert len(repeated) <= 64, f"{len(repeated)} repeated calls, more than were in flight"


async def test_a_restarted_escalator_counts_idle_time_from_its_assignment(
    make_settings, wire: OpenAIWireServer
) -> None:
    # The crashed member keeps its partitions until its session times out; a restarted
    # worker with a short --idle-exit must wait for them, not stop with posts unread.
    settings = make_settings(escalation={"provider": "chat", "base_url": wire.url})
    env = env_for(
        settings, MODPIPE_ESCALATION__PROVIDER="chat", MODPIPE_ESCALATION__BASE_URL=wire.url
    )
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.escalations, [escalation("e0", "zero")])
        with processes() as procs:
            procs.append(subprocess.Popen([*CMD, "escalator"], env=env))
            await wait_until(lambda: "e0" in out.verdicts, 60, "the first verdict")
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait()
        await publish(settings.kafka, settings.topics.escalations, [escalation("e1", "one")])
        metrics = Metrics()
        frontier = build_frontier(settings, metrics)
        try:
            worker = EscalationWorker(settings, frontier, metrics)
            assert await worker.run(idle_exit=1.0) == 0
        finally:
            if frontier is not None:
                await frontier.aclose()
        await out.settle()
    assert set(out.verdicts) == {"e0", "e1"}


def recorded(settings: Settings, post_id: str, action: Any, tier: Any) -> Outcome:
    verdict = Verdict(
        post_id=post_id,
        action=action,
        categories=[],
        scores={},
        tier=tier,
        model="earlier",
        policy_version=settings.policy.version,
        latency_ms=1.0,
        cost_usd=0.0,
        verdict_id=first_verdict_id(post_id),
    )
    reason = "provider_failed" if action == "review" else None
    return Outcome(encode(verdict), reason, "recorded before the crash" if reason else "")


async def claim_earlier(settings: Settings, outcomes: dict[str, Outcome]) -> None:
    final = FinalVerdicts.open(settings)
    try:
        assert await final.claim(list(outcomes.items())) == [None] * len(outcomes)
    finally:
        await final.aclose()


async def test_a_redelivered_escalation_gets_its_first_outcome_not_a_new_decision(
    make_settings, wire: OpenAIWireServer
) -> None:
    # A worker fell back to review (the provider was down), claimed that outcome, and died
    # before its transaction committed. The provider is back now: the post must still get
    # its review item and its review verdict, and no frontier verdict on top.
    settings = make_settings(escalation={"provider": "chat", "base_url": wire.url})
    await claim_earlier(settings, {"e0": recorded(settings, "e0", "review", "fallback")})
    async with Outputs(settings) as out:
        await publish(
            settings.kafka,
            settings.topics.escalations,
            [escalation("e0", "text zero"), escalation("e1", "text one")],
        )
        metrics = Metrics()
        frontier = build_frontier(settings, metrics)
        try:
            worker = EscalationWorker(settings, frontier, metrics)
            code = await run_until(
                worker, lambda: {"e0", "e1"} <= set(out.verdicts) and "e0" in out.review, "both"
            )
        finally:
            if frontier is not None:
                await frontier.aclose()
        assert code == 0
        await out.settle()
    assert [v["action"] for v in out.verdicts["e0"]] == ["review"]
    assert out.verdicts["e0"][0]["model"] == "earlier"
    assert [r["reason"] for r in out.review["e0"]] == ["provider_failed"]
    assert out.verdicts["e1"][0]["tier"] == "frontier"
    assert "text zero" not in wire.calls and wire.calls["text one"] == 1


async def test_triage_republishes_a_posts_first_outcome_instead_of_deciding_again(
    settings: Settings,
) -> None:
    # p0 was decided by the frontier tier before (say, after a classifier failure), p1 was
    # escalated and never decided: p0 gets its first verdict again, not a small one, and
    # no escalation; p1 is triaged as usual.
    await claim_earlier(settings, {"p0": recorded(settings, "p0", "block", "frontier")})
    async with Outputs(settings) as out:
        await publish(settings.kafka, settings.topics.posts, posts(2, "have a nice day"))
        worker = TriageWorker(settings, build_classifier(settings), Metrics())
        assert await run_until(worker, lambda: len(out.decided()) >= 2, "both posts") == 0
        await out.settle()
    assert [(v["tier"], v["action"]) for v in out.verdicts["p0"]] == [("frontier", "block")]
    assert "p0" not in out.escalations
    assert out.verdicts["p1"][0]["tier"] == "small"
    assert out.duplicates() == 0
