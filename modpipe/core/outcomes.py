"""What a pipeline run published, read back from Kafka: verdicts, escalations, review
items and dead letters of one run's posts (`Collector`), for the demo's report, the
benchmarks and the tests that count outputs."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from modpipe.core.kafka import consumer_options, ensure_pipeline_topics, topic_partitions
from modpipe.core.settings import Settings


@dataclass
class Outcomes:
    """What the pipeline published about one run's posts, by post_id."""

    verdicts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    escalations: dict[str, dict[str, Any]] = field(default_factory=dict)
    review: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)

    def unaccounted(self, ids: set[str], malformed: int) -> int:
        """Posts with no final verdict, plus malformed values with no dead letter."""
        return len(ids - set(self.verdicts)) + max(0, malformed - len(self.dead_letters))


class Collector:
    """Reads verdicts, escalations, review items and dead letters from the end of each topic."""

    def __init__(self, settings: Settings, marker: str) -> None:
        t = settings.topics
        self._topics = {
            t.verdicts: "verdict",
            t.escalations: "escalation",
            t.review: "review",
            t.dlq: "dlq",
        }
        self._marker = marker
        self._kafka = settings.kafka
        self._settings = settings
        # Only committed transactions: what a platform's verdict consumer would see.
        self._consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
        self.outcomes = Outcomes()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Pin every partition at its current end, then consume in the background."""
        await ensure_pipeline_topics(self._settings)
        parts = await topic_partitions(self._kafka, self._topics)
        await self._consumer.start()
        self._consumer.assign(parts)
        await self._consumer.seek_to_end(*parts)
        for tp in parts:  # resolve positions now, before anything is published
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, messages in batches.items():
                for m in messages:
                    self._add(self._topics[tp.topic], m.value)

    def _add(self, kind: str, raw: bytes) -> None:
        try:
            value = json.loads(raw)
            post_id = value.get("post_id") or value.get("post", {}).get("post_id", "")
        except (ValueError, AttributeError):
            return  # not ours to judge: whatever was written there by others
        if kind == "dlq":
            if self._marker.encode() in base64.b64decode(value["value_b64"]):
                self.outcomes.dead_letters.append(value)
            return
        if not isinstance(post_id, str) or not post_id.startswith(self._marker):
            return
        if kind == "verdict":
            self.outcomes.verdicts.setdefault(post_id, []).append(value)
        elif kind == "escalation":
            self.outcomes.escalations[post_id] = value
        else:
            self.outcomes.review[post_id] = value

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()
