"""What the triage benchmarks share: a run's tag and settings variants (`Bench`), the
posts they publish, and publishing them."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from modpipe.core.settings import Settings, deep_merge, load_settings

ROOT = Path(__file__).resolve().parent.parent  # the source checkout
PARTITIONS = 4
TEXTS = [
    "have a nice day",
    "you are a fucking idiot",
    "your opinion is garbage",
    "the bus was late again today",
    "what a dumb idea",
]


class Bench:
    """One benchmark run: a tag for its topics and groups, and the settings it varies."""

    def __init__(self, base: Settings, config_path: Path | None, batch: int) -> None:
        self.base = base
        self.config_path = config_path
        self.batch = batch
        self.tag = uuid.uuid4().hex[:8]
        self.bootstrap = base.kafka.bootstrap

    def topics(self, name: str) -> dict[str, str]:
        return {
            k: f"bench-{self.tag}-{name}-{k}"
            for k in ("posts", "verdicts", "escalations", "review", "dlq")
        }

    def variant(self, name: str, posts_topic: str | None = None, **overrides: Any) -> Settings:
        topics = self.topics(name)
        if posts_topic is not None:
            topics["posts"] = posts_topic
        merged = deep_merge(
            self.base.model_dump(mode="json", include={"kafka", "triage", "classifier"}),
            {
                "app_id": f"bench-{self.tag}-{name}",
                "topics": topics,
                "triage": {"batch_max": self.batch, "audit_rate": 0.0},
                "metrics": {"port": 0},
                # Its own first-outcome keys: the variants publish the same post_ids.
                "redis": {"key_prefix": f"bench-{self.tag}-{name}"},
                "delivery": {"final_verdict_ttl_s": 600},
            },
        )
        return load_settings(self.config_path, deep_merge(merged, overrides))


def posts(n: int) -> list[tuple[bytes, bytes]]:
    """`n` (key, value) posts, keyed by post_id."""
    return [
        (f"b{i}".encode(), json.dumps({"post_id": f"b{i}", "text": f"{TEXTS[i % 5]} {i}"}).encode())
        for i in range(n)
    ]


async def publish_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
