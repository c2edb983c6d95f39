"""`modpipe produce`: publish posts from JSON Lines, one value per line, keyed by post_id.

Lines are sent as they are, malformed ones included: validating posts is the triage
worker's job, and its DLQ is where a platform sees what it sent wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from modpipe.core.kafka import build_producer, ensure_pipeline_topics
from modpipe.core.settings import KafkaSettings, Settings


def key_of(line: bytes) -> bytes | None:
    """The post_id of a JSON object line, else None (the partitioner then spreads it)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    post_id = value.get("post_id") if isinstance(value, dict) else None
    return post_id.encode() if isinstance(post_id, str) else None


def read_lines(source: IO[bytes]) -> Iterator[bytes]:
    """Non-empty lines without their line ends."""
    for line in source:
        stripped = line.rstrip(b"\r\n")
        if stripped:
            yield stripped


async def publish(kafka: KafkaSettings, topic: str, values: Iterable[bytes]) -> int:
    """Publish `values` to `topic` keyed by post_id; returns how many the broker acknowledged."""
    producer = build_producer(kafka, max_request_size=4 * 1024 * 1024, linger_ms=10)
    await producer.start()
    try:
        count = 0
        batch = []
        for value in values:
            batch.append(await producer.send(topic, value, key=key_of(value)))
            count += 1
            if len(batch) >= 5000:
                for fut in batch:
                    await fut
                batch.clear()
        for fut in batch:
            await fut
        return count
    finally:
        await producer.stop()


async def run_produce(settings: Settings, path: str) -> int:
    """Publish the JSONL file at `path` (`-` = stdin) to the posts topic."""
    await ensure_pipeline_topics(settings)
    if path == "-":
        count = await publish(settings.kafka, settings.topics.posts, read_lines(sys.stdin.buffer))
    else:
        with Path(path).open("rb") as source:
            count = await publish(settings.kafka, settings.topics.posts, read_lines(source))
    print(f"published {count} posts to {settings.topics.posts}")
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(run_produce(settings, args.file))


def register(sub: Any) -> None:
    s = sub.add_parser("produce", help="publish posts from JSONL (- = stdin)")
    s.add_argument("file")
    s.set_defaults(func=cmd_produce)
