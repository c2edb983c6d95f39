"""Helpers for the DSA compliance tests: unique settings, reading a topic; verdicts and
publishing are bench/records.py's (the statements benchmark writes them too)."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer

from bench.records import produce, verdict
from modpipe.core.kafka import client_options, topic_partitions
from modpipe.core.settings import Settings
from tests.conftest import MakeSettings

__all__ = ["appeal", "console_env", "dsa_settings", "env_for", "produce", "read_all", "verdict"]


def dsa_settings(make_settings: MakeSettings, **extra: Any) -> Settings:
    """Settings whose compliance topics, groups and ports are unique to one test."""
    tag = uuid.uuid4().hex[:10]
    overrides: dict[str, Any] = {
        "topics": {
            "notices": f"t-{tag}-notices",
            "appeals": f"t-{tag}-appeals",
            "statements": f"t-{tag}-statements",
        },
        "statements": {
            "group_id": f"test-statements-{tag}",
            "submit_group_id": f"test-submitter-{tag}",
            "port": 0,
            "timeout_s": 1.0,
            "requests_per_s": 100,
        },
        "appeals": {"group_id": f"test-appeals-{tag}"},
        "review": {"group_id": f"test-review-{tag}", "port": 0},
        "metrics": {"review_port": 0},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return make_settings(**overrides)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment that gives a `modpipe` subprocess the same topics, groups, prefix."""
    env = dict(os.environ)
    for name, value in settings.topics.model_dump().items():
        env[f"MODPIPE_TOPICS__{name.upper()}"] = value
    st = settings.statements
    env |= {
        "MODPIPE_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "MODPIPE_STATEMENTS__GROUP_ID": st.group_id,
        "MODPIPE_STATEMENTS__SUBMIT_GROUP_ID": st.submit_group_id,
        "MODPIPE_STATEMENTS__BASE_URL": st.base_url,
        "MODPIPE_STATEMENTS__TIMEOUT_S": str(st.timeout_s),
        "MODPIPE_STATEMENTS__REQUESTS_PER_S": str(st.requests_per_s),
        "MODPIPE_STATEMENTS__PORT": "0",
    }
    if st.token is not None:
        env["MODPIPE_STATEMENTS__TOKEN"] = st.token.get_secret_value()
    return env


async def read_all(settings: Settings, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every committed record on `topic` now, as (key, JSON value) pairs."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Any] = []
    try:
        parts = await topic_partitions(settings.kafka, [topic])
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out reading {topic}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    out.append((r.key.decode() if r.key else None, json.loads(r.value)))
    finally:
        await consumer.stop()
    return out


def appeal(appeal_id: str, post_id: str, received_at: str, **extra: Any) -> bytes:
    """An appeal record as a platform's complaint form would publish it."""
    body = {
        "appeal_id": appeal_id,
        "post_id": post_id,
        "statement": f"My post {post_id} broke no rule; please look again.",
        "received_at": received_at,
        **extra,
    }
    return json.dumps(body).encode()


def console_env(settings: Settings) -> dict[str, str]:
    """The environment for a `modpipe review serve` process with this test's settings."""
    from tests.integration.review_support import env_for as review_env

    env = review_env(settings) | env_for(settings)
    env["MODPIPE_APPEALS__GROUP_ID"] = settings.appeals.group_id
    return env
