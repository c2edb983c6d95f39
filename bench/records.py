"""Records a benchmark writes: a sample machine verdict, and publishing (key, value) pairs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from modpipe.compliance.consuming import ensure_compliance_topics
from modpipe.core.kafka import client_options
from modpipe.core.records import Verdict
from modpipe.core.settings import Settings


def verdict(post_id: str, action: str = "block", **over: Any) -> Verdict:
    """A machine verdict on `post_id` (block for harassment unless told otherwise)."""
    base: dict[str, Any] = {
        "post_id": post_id,
        "action": action,
        "categories": ["harassment"] if action == "block" else [],
        "scores": {"harassment": 0.97 if action == "block" else 0.1},
        "tier": "small",
        "model": "cpu-tfidf",
        "policy_version": "2026-11-01",
        "latency_ms": 2.0,
        "cost_usd": 0.0,
    }
    base.update(over)
    return Verdict.model_validate(base)


async def produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Publish (key, value) records, the compliance topics created first, and wait for
    every acknowledgement."""
    await ensure_compliance_topics(settings)
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k.encode()) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
