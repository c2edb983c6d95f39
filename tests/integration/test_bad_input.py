"""The bad-input corpus through the real triage worker and escalator on the real broker.

Every record comes out exactly once (a final verdict, or one dead letter carrying its
exact bytes and where it was found), the workers stop cleanly with no traceback, and the
good posts published between the bad ones are all decided.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from modpipe.core.kafka import (
    client_options,
    ensure_pipeline_topics,
    ensure_topics,
    topic_partitions,
)
from modpipe.core.records import DLQ_KEEP_BYTES, DLQ_KEEP_KEY_BYTES, DLQ_PREFIX_BYTES
from modpipe.core.settings import Settings
from tests.bad_input_corpus import KINDS, Kind, Record, post_id
from tests.integration.conftest import run_both_workers
from tests.openai_wire_server import openai_wire_server

COPIES = 2
BIG = 4 * 1024 * 1024  # the test's posts topic takes the 1.5 MB kind


@dataclass(frozen=True)
class Sent:
    kind: Kind | None  # None: an ordinary post
    pid: str
    record: Record
    where: tuple[str, int, int]  # topic, partition, offset


async def publish_corpus(settings: Settings, run: str) -> list[Sent]:
    """Each kind COPIES times, an ordinary post before each, through a real producer."""
    topic = {"posts": settings.topics.posts, "escalations": settings.topics.escalations}
    plan: list[tuple[Kind | None, str, str, Record]] = []
    n = 0
    for copy in range(COPIES):
        for kind in KINDS:
            pid = f"{run}-good-{n}"
            n += 1
            good = json.dumps({"post_id": pid, "text": f"have a nice day {n}"}).encode()
            plan.append((None, pid, topic["posts"], Record(pid.encode(), good)))
            kpid = post_id(kind, copy, run)
            plan.append((kind, kpid, topic[kind.topic], kind.build(kpid)))
    producers: dict[str | None, AIOKafkaProducer] = {}
    try:
        futures = []
        for _, _, t, r in plan:
            if r.compression not in producers:  # one producer per batch compression
                producers[r.compression] = AIOKafkaProducer(
                    **client_options(settings.kafka),
                    acks="all",
                    max_request_size=BIG,
                    compression_type=r.compression,
                )
                await producers[r.compression].start()
            producer = producers[r.compression]
            futures.append(await producer.send(t, r.value, key=r.key, headers=r.headers or None))
        metas = await asyncio.gather(*futures)
    finally:
        for producer in producers.values():
            await producer.stop()
    return [
        Sent(kind, pid, record, (m.topic, m.partition, m.offset))
        for (kind, pid, _, record), m in zip(plan, metas, strict=True)
    ]


async def read_all(settings: Settings, topics: list[str]) -> dict[str, list[Any]]:
    """Every value on `topics`, from the beginning to the current end."""
    parts = await topic_partitions(settings.kafka, topics)
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), group_id=None)
    await consumer.start()
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + 30
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "could not read the outputs back"
            for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                for m in messages:
                    with contextlib.suppress(TypeError, ValueError):  # the corpus's own
                        out[tp.topic].append(json.loads(m.value))
    finally:
        await consumer.stop()
    return out


def check_letter(letter: dict[str, Any], sent: Sent) -> None:
    """The dead letter carries the exact bytes, or the documented prefix + hash + size."""
    value, key = sent.record.value or b"", sent.record.key
    assert letter["value_size"] == len(value)
    assert letter["value_sha256"] == hashlib.sha256(value).hexdigest()
    kept = base64.b64decode(letter["value_b64"])
    assert kept == (value if len(value) <= DLQ_KEEP_BYTES else value[:DLQ_PREFIX_BYTES])
    if key is None:
        assert letter["key_b64"] is None and letter["key_size"] is None
    else:
        kept_key = base64.b64decode(letter["key_b64"])
        assert kept_key == (key if len(key) <= DLQ_KEEP_KEY_BYTES else key[:DLQ_PREFIX_BYTES])
        assert letter["key_sha256"] == hashlib.sha256(key).hexdigest()
    cut = len(value) > DLQ_KEEP_BYTES or (key is not None and len(key) > DLQ_KEEP_KEY_BYTES)
    assert letter["truncated"] is cut
    assert letter["error"] and letter["failed_at"]


async def test_the_corpus_comes_out_exactly_once_and_the_workers_live_on(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run = uuid.uuid4().hex[:6]
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url, "timeout_s": 2.0}
        )
        t = settings.topics
        await ensure_topics(
            settings.kafka,
            [t.posts],
            settings.kafka.partitions,
            {t.posts: {"max.message.bytes": str(BIG)}},
        )
        await ensure_pipeline_topics(settings)
        sent = await publish_corpus(settings, run)

        started = time.monotonic()
        triage, escalator = await run_both_workers(settings)
        drained_s = time.monotonic() - started
        assert triage.failure is None and escalator.failure is None

    out = await read_all(settings, [t.verdicts, t.dlq, t.escalations, t.review])
    by_where = {s.where: s for s in sent}
    letters: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for letter in out[t.dlq]:
        letters.setdefault((letter["topic"], letter["partition"], letter["offset"]), []).append(
            letter
        )
    verdicts = Counter(v["post_id"] for v in out[t.verdicts])

    problems = []
    for s in sent:
        expected = "decided" if s.kind is None else s.kind.outcome
        name = s.kind.name if s.kind else "ordinary"
        got_letters = letters.get(s.where, [])
        if expected == "decided":
            if verdicts[s.pid] != 1 or got_letters:
                problems.append(f"{name}: {verdicts[s.pid]} verdicts, {len(got_letters)} letters")
        else:
            reasons = [x["reason"] for x in got_letters]
            if reasons != [expected.removeprefix("dlq:")]:
                problems.append(f"{name}: expected {expected}, got letters {reasons}")
            else:
                check_letter(got_letters[0], s)
    assert not problems, "\n".join(problems)
    # Nothing else came out: no verdict for a refused record, no stray dead letter.
    decided = {s.pid for s in sent if s.kind is None or s.kind.outcome == "decided"}
    assert set(verdicts) == decided
    assert set(letters) <= set(by_where)
    assert len(out[t.dlq]) == sum(1 for s in sent if s.kind and s.kind.outcome != "decided")
    # Every escalation triage wrote carries its post exactly as published.
    posts = {s.pid: s for s in sent if s.where[0] == t.posts}
    escalated = [e for e in out[t.escalations] if e.get("post", {}).get("post_id") in posts]
    for esc in escalated:
        assert json.loads(posts[esc["post"]["post_id"]].record.value or b"") == esc["post"]
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    print(
        f"{len(KINDS)} kinds x {COPIES} + {len(sent) // 2} ordinary posts: "
        f"{len(out[t.verdicts])} verdicts, {len(out[t.dlq])} dead letters, "
        f"{len(escalated)} escalated by triage, drained in {drained_s:.1f}s"
    )
