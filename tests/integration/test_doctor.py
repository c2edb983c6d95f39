"""`modpipe doctor` on the real local stack: a healthy setup, then each item broken in
turn, each named in one FAIL (or warn) line that says what to fix. The secure stack's
cases (credentials, ACLs, Redis auth) are in test_security.py, beside its stack."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from modpipe.core.kafka import ensure_pipeline_topics, ensure_topics
from modpipe.core.records import wire_limits
from modpipe.core.settings import Settings
from modpipe.doctor import Finding, run_doctor
from modpipe.review.accounts import Accounts
from modpipe.review.store import ReviewStore, connect
from tests.conftest import MakeSettings
from tests.openai_wire_server import OpenAIWireServer, openai_wire_server
from tests.ops.test_redis_roles import lru_redis
from tests.vllm_wire_server import VllmWireServer, vllm_wire_server

KEY = "sk-doctor-test-0a1b2c"


def by_item(findings: list[Finding]) -> dict[str, Finding]:
    for finding in findings:  # shown with -s: the lines an operator sees
        if finding.status != "ok":
            print(finding.line())
    return {f.item: f for f in findings}


def failed(findings: list[Finding]) -> list[str]:
    return [f.line() for f in findings if f.status == "FAIL"]


async def add_user(settings: Settings, name: str, role: str) -> None:
    store = ReviewStore(connect(settings.redis), settings.redis.key_prefix)
    try:
        await Accounts(store, settings.review).add_user(name, "correct-horse", role)  # type: ignore[arg-type]
    finally:
        await store.aclose()


@pytest.fixture
async def wire() -> AsyncIterator[OpenAIWireServer]:
    async with openai_wire_server() as server:
        server.key = KEY
        yield server


@pytest.fixture
async def vllm() -> AsyncIterator[VllmWireServer]:
    async with vllm_wire_server() as server:
        yield server


@pytest.fixture
async def healthy(make_settings: MakeSettings, wire: OpenAIWireServer) -> Settings:
    """Settings with every item in order: topics made, a lead, a provider with its key."""
    settings = make_settings(
        escalation={"provider": "chat", "base_url": wire.url},
        OPENAI_API_KEY=KEY,
    )
    await ensure_pipeline_topics(settings)
    await add_user(settings, "lee", "lead")
    return settings


async def test_a_healthy_setup_has_nothing_to_fix(healthy: Settings) -> None:
    findings = await run_doctor(healthy)
    assert failed(findings) == []
    items = by_item(findings)
    assert items["kafka"].status == "ok"
    assert "granted" in items["ACLs for modpipe worker"].text  # no authorizer: all allowed
    dlq = items[f"topic {healthy.topics.dlq}"]
    need = wire_limits(healthy.kafka.max_message_bytes).dlq_topic_bytes
    assert dlq.status == "ok" and f"max.message.bytes {need}" in dlq.text
    assert items["provider chat"].status == "ok"
    assert items["console users"].text == "1 lead"
    assert items["budget"].status == "ok"


def test_the_command_exits_non_zero_only_when_something_is_missing(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MODPIPE_")},
        "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,  # no console user
        "MODPIPE_TOPICS__POSTS": settings.topics.posts,
    }
    run = subprocess.run(
        [sys.executable, "-m", "modpipe", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL  console users: none: `modpipe review add-user NAME --role lead`" in run.stdout
    assert run.stdout.rstrip().endswith("1 to fix"), run.stdout


async def test_kafka_unreachable(make_settings: MakeSettings) -> None:
    settings = make_settings(kafka={"bootstrap": "127.0.0.1:1"})
    findings = await run_doctor(settings)
    kafka = by_item(findings)["kafka"]
    assert kafka.status == "FAIL" and "did not answer" in kafka.text, kafka.line()
    assert not any(f.item.startswith(("topic ", "ACLs ")) for f in findings)


async def test_a_topic_too_small_for_its_records(healthy: Settings) -> None:
    small = {"max.message.bytes": "100000"}
    settings = healthy.model_copy(
        update={"topics": healthy.topics.model_copy(update={"dlq": healthy.topics.dlq + "-small"})}
    )
    await ensure_topics(settings.kafka, [settings.topics.dlq], 1, {settings.topics.dlq: small})
    line = by_item(await run_doctor(settings))[f"topic {settings.topics.dlq}"]
    assert line.status == "FAIL", line.line()
    assert "max.message.bytes 100000 is below the 1567120" in line.text
    assert (
        f"--entity-name {settings.topics.dlq} --add-config max.message.bytes=1567120" in line.text
    )


async def test_a_missing_topic_that_can_be_created_is_fine(make_settings: MakeSettings) -> None:
    settings = make_settings()
    line = by_item(await run_doctor(settings))[f"topic {settings.topics.posts}"]
    assert line.status == "ok" and "creates it at start" in line.text


async def test_redis_down_and_wrong_eviction_policies(healthy: Settings) -> None:
    down = healthy.model_copy(
        update={"redis": healthy.redis.model_copy(update={"url": "redis://127.0.0.1:1/0"})}
    )
    state = by_item(await run_doctor(down))["redis state"]
    assert state.status == "FAIL" and "does not answer" in state.text, state.line()

    with lru_redis() as evicting:
        wrong = healthy.model_copy(
            update={
                "redis": healthy.redis.model_copy(
                    update={"url": evicting, "cache_url": healthy.redis.url}
                )
            }
        )
        items = by_item(await run_doctor(wrong))
    assert items["redis state"].status == "FAIL", items["redis state"].line()
    assert "maxmemory-policy allkeys-lru may evict" in items["redis state"].text
    assert items["redis cache"].status == "warn"  # the cache on a noeviction Redis
    assert "should evict" in items["redis cache"].text


async def test_the_classifier_service(make_settings: MakeSettings, vllm: VllmWireServer) -> None:
    model = vllm.behaviour.model
    good = make_settings(
        classifier={
            "backend": "vllm-classify",
            "base_url": vllm.url,
            "model": model,
            "labels": [None, "harassment", "hate"],
        }
    )
    items = by_item(await run_doctor(good))
    assert items["classifier vllm-classify"].status == "ok", items["classifier vllm-classify"]
    assert items["classifier labels"].status == "ok", items["classifier labels"].line()

    wrong_model = make_settings(
        classifier={"backend": "vllm-guard", "base_url": vllm.url, "model": "acme/other"}
    )
    line = by_item(await run_doctor(wrong_model))["classifier vllm-guard"]
    assert line.status == "FAIL" and "does not serve classifier.model 'acme/other'" in line.text

    labels = make_settings(
        classifier={
            "backend": "vllm-classify",
            "base_url": vllm.url,
            "model": model,
            "labels": [None, "harassment"],
        }
    )
    line = by_item(await run_doctor(labels))["classifier labels"]
    assert line.status == "FAIL" and "has 3 classes, classifier.labels names 2" in line.text

    vllm.behaviour.version = "0.20.1"
    line = by_item(await run_doctor(good))["classifier vllm-classify"]
    assert line.status == "FAIL" and "too old" in line.text

    guard = make_settings(
        classifier={
            "backend": "vllm-guard",
            "base_url": vllm.url,
            "model": model,
            "tokenizer_path": "/nonexistent/tokenizer.model",
        }
    )
    vllm.behaviour.version = "0.33.0"
    line = by_item(await run_doctor(guard))["classifier tokenizer"]
    assert line.status == "FAIL" and "no file at /nonexistent/tokenizer.model" in line.text


async def test_the_provider_key_and_model(healthy: Settings, wire: OpenAIWireServer) -> None:
    wrong_key = healthy.model_copy(update={"openai_api_key": None})
    line = by_item(await run_doctor(wrong_key))["provider chat"]
    assert line.status == "FAIL" and "refused the key (HTTP 401)" in line.text

    escalation = healthy.escalation.model_copy(update={"model": "gpt-9"})
    line = by_item(await run_doctor(healthy.model_copy(update={"escalation": escalation})))[
        "provider chat"
    ]
    assert line.status == "FAIL" and "does not offer escalation.model 'gpt-9'" in line.text


async def test_console_users(make_settings: MakeSettings) -> None:
    settings = make_settings()
    line = by_item(await run_doctor(settings))["console users"]
    assert line.status == "FAIL" and "modpipe review add-user" in line.text
    await add_user(settings, "rae", "reviewer")
    line = by_item(await run_doctor(settings))["console users"]
    assert line.status == "warn" and line.text == "1 reviewer, no lead: add one with --role lead"


async def test_the_budget(healthy: Settings) -> None:
    client = aioredis.Redis.from_url(healthy.redis.url)
    try:
        async for key in client.scan_iter(match=f"{healthy.redis.key_prefix}:budget:*"):
            await client.delete(key)
        from escalation.budget import Budget

        budget = Budget(healthy.escalation.daily_budget_usd, client, healthy.redis.key_prefix)
        await budget.reserve(healthy.escalation.daily_budget_usd)
        line = by_item(await run_doctor(healthy))["budget"]
    finally:
        await client.aclose()
    assert line.status == "warn", line.line()
    assert "$500.00 of $500.00 spent today: escalations go to review" in line.text
