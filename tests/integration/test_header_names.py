"""A record whose header name is not UTF-8, through the real workers on the real broker.

aiokafka's producer refuses such a name (librdkafka clients such as kcat send one), so
the batches are built with aiokafka's pure-Python batch builder, which writes whatever
bytes the name's `encode` returns, and handed to the producer with `send_batch`.
Unpatched, aiokafka raised UnicodeDecodeError from every fetch of the partition and
neither worker got past the record (modpipe/core/kafka_compat.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy

from modpipe.core.kafka import client_options, ensure_pipeline_topics
from modpipe.core.settings import Settings
from tests.bad_input_corpus import escalation, js, post
from tests.integration.conftest import run_both_workers
from tests.integration.test_bad_input import read_all
from tests.openai_wire_server import openai_wire_server

BAD_NAME = b"\xff\xfe-bad"


class RawName(str):
    """A header name that the pure-Python batch builder writes as BAD_NAME."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return BAD_NAME


Batch = list[tuple[bytes, list[tuple[str, bytes]]]]


async def send_batches(settings: Settings, topic: str, batches: list[Batch]) -> None:
    """Each batch as one record batch, in order, on partition 0 of `topic`."""
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all")
    await producer.start()
    try:
        for records in batches:
            batch = producer.create_batch()
            batch._builder = _DefaultRecordBatchBuilderPy(
                2, 0, 0, producer_id=-1, producer_epoch=-1, base_sequence=0, batch_size=1 << 20
            )
            for value, headers in records:
                assert batch.append(timestamp=None, key=None, value=value, headers=headers)
            batch.close()
            await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()


def good(pid: str, text: str = "have a nice day") -> tuple[bytes, list[tuple[str, bytes]]]:
    return js(post(pid, text=text)), [("trace", b"ok")]


def bad(value: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    return value, [("first", b"1"), (RawName("x"), b"v"), ("last", b"2")]


async def test_a_non_utf8_header_name_is_delivered_and_the_records_behind_it_flow(
    make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    run = uuid.uuid4().hex[:6]
    p = [f"{run}-post-{i}" for i in range(6)]
    e = [f"{run}-esc-{i}" for i in range(4)]
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url, "timeout_s": 2.0}
        )
        t = settings.topics
        await ensure_pipeline_topics(settings)
        # Bad names mid-batch, alone in a batch, and first in a batch, between good posts.
        await send_batches(
            settings,
            t.posts,
            [
                [good(p[0])],
                [good(p[1]), bad(js(post(p[2]))), good(p[3])],
                [bad(js(post(p[4])))],
                [good(p[5])],
            ],
        )
        escalated = [js(escalation(post(pid))) for pid in e]
        await send_batches(
            settings,
            t.escalations,
            [
                [(escalated[0], [])],
                [bad(escalated[1]), (escalated[2], [])],
                [(escalated[3], [])],
            ],
        )

        triage, escalator = await run_both_workers(settings)
        assert triage.failure is None and escalator.failure is None

    out = await read_all(settings, [t.verdicts, t.dlq])
    verdicts = Counter(v["post_id"] for v in out[t.verdicts])
    # Triage's own escalations of these posts are decided by the escalator as well.
    assert all(verdicts[pid] == 1 for pid in [*p, *e]), verdicts
    assert set(verdicts) == {*p, *e}
    assert out[t.dlq] == []
    fallbacks = [r for r in caplog.records if r.name == "modpipe.core.kafka_compat"]
    assert {r.args[0].topic for r in fallbacks} == {t.posts, t.escalations}  # type: ignore[index,union-attr]
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    print(json.dumps({"verdicts": len(out[t.verdicts]), "fallback_batches": len(fallbacks)}))
