"""A shadow run: a candidate configuration deciding the same posts as production, for
comparison only.

The runner consumes the posts topic in its own consumer group (`shadow.group_id`) and
puts each batch through the candidate's own triage (its model, bands, rules, backend).
Nothing it decides is published where production reads: the candidate's verdicts,
escalations and review items are kept in memory, and the frontier tier is never called
(an escalation is the candidate's answer, `escalate`), so verdicts, the frontier budget
and the review queue are untouched. Candidate rate rules count under their own Redis
prefix. Production's first decision on each post (its tier-1 or rules verdict, or its
escalation) is read from production's verdicts and escalations topics; once both sides of
a post are known, one record with the two side by side goes to `shadow.topic`, and
`modpipe_shadow_posts` counts it by production's action and category and by agreement.

Posts waiting for their other side are held in a bounded buffer (oldest dropped, counted
as `unpaired`, as are posts production has not decided within `since_s`). A restart loses
that buffer but no post: the posts offset committed on each partition is the oldest post
still waiting for production's side, so a restarted run decides those posts again, and
reads production's decisions from `since_s` back, as at every start. Posts it paired
before the restart (between that offset and where it had got to) are not paired twice: at
start it reads the shadow records published in the last `2 * since_s` and skips their
posts. So the shadow topic holds each post once, whatever the restarts, and the report and
the agreement metric count the same posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from classifiers import Classifier
from modpipe.core.kafka import client_options, consumer_options, ensure_topics, topic_partitions
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, now_rfc3339
from modpipe.core.settings import Settings
from streams.triage import Triage

log = logging.getLogger(__name__)

FIRST_TIERS = ("small", "rules", "fallback")  # production's first decision on a post
MAX_PENDING = 200_000


@dataclass(frozen=True, slots=True)
class Side:
    """One side's decision on a post."""

    action: str  # allow, block, review, escalate
    tier: str
    categories: tuple[str, ...] = ()
    rule_id: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "tier": self.tier,
            "categories": list(self.categories),
        }
        if self.rule_id:
            out["rule_id"] = self.rule_id
        return out


def side_of(topic_kind: str, value: dict[str, Any]) -> tuple[str, Side] | None:
    """(post_id, decision) from a verdict or an escalation; None for later decisions."""
    if topic_kind == "escalations":
        post = value.get("post") or {}
        return str(post.get("post_id")), Side("escalate", "small")
    if value.get("tier") not in FIRST_TIERS:
        return None  # the frontier's, the cache's or a human's later verdict
    return str(value["post_id"]), Side(
        value["action"], value["tier"], tuple(value.get("categories", [])), value.get("rule_id")
    )


class ShadowRunner:
    """Runs a candidate beside production until stopped, `max_posts`, or `idle_exit`."""

    def __init__(
        self,
        production: Settings,
        candidate: Settings,
        classifier: Classifier,
        metrics: Metrics,
    ) -> None:
        self.production = production
        self.candidate = candidate
        self.metrics = metrics
        self.triage = Triage(candidate, classifier, Metrics())  # its own counters, unexported
        self.compared = 0
        self.agreed = 0
        self.unpaired = 0
        self._prod: OrderedDict[str, Side] = OrderedDict()
        self._cand: OrderedDict[str, Side] = OrderedDict()
        # Where each post waiting for production's side was read, and when (monotonic).
        self._where: dict[str, tuple[TopicPartition, int, float]] = {}
        self._published: OrderedDict[str, None] = OrderedDict()  # paired before a restart
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        """Finish the batch in hand and stop."""
        self._stopping.set()

    @property
    def waiting(self) -> int:
        """Posts the candidate decided that wait for production's side."""
        return len(self._cand)

    async def run(
        self, *, max_posts: int | None = None, idle_exit: float | None = None, since_s: float = 300
    ) -> int:
        """Run to completion; the exit code."""
        p, kafka = self.production, self.production.kafka
        await ensure_topics(kafka, [p.shadow.topic], kafka.partitions)
        # Both at read_committed: a production batch whose transaction aborted is not a
        # decision to compare with.
        posts = AIOKafkaConsumer(
            p.topics.posts,
            **consumer_options(kafka, p.shadow.group_id),
            auto_offset_reset="earliest",
            max_poll_records=self.candidate.triage.batch_max,
        )
        decided = AIOKafkaConsumer(**consumer_options(kafka, None))
        producer = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=5)
        kinds = {p.topics.verdicts: "verdicts", p.topics.escalations: "escalations"}
        await asyncio.gather(posts.start(), decided.start(), producer.start())
        try:
            await self._read_published(decided, 2 * since_s)
            parts = await topic_partitions(kafka, list(kinds))
            decided.assign(parts)
            await self._seek_since(decided, parts, since_s)
            self.ready.set()
            last = time.monotonic()
            while not self._stopping.is_set():
                got = await posts.getmany(timeout_ms=200)
                batch = [Incoming.of(m) for ms in got.values() for m in ms]
                if batch:
                    self._candidate(await self.triage.process(batch), batch)
                    last = time.monotonic()
                for tp, ms in (await decided.getmany(timeout_ms=50)).items():
                    for m in ms:
                        self._production(kinds[tp.topic], m.value)
                self._expire(since_s)
                records = self._pair()
                futures = [await producer.send(p.shadow.topic, v, key=k) for k, v in records]
                await asyncio.gather(*futures)
                # After the shadow records owed so far are acknowledged, and never past a
                # post still waiting for production's side.
                if (batch or records) and (committable := await self._committable(posts)):
                    await posts.commit(committable)
                if max_posts is not None and self.compared >= max_posts:
                    break
                if idle_exit is not None and time.monotonic() - last > idle_exit:
                    break
        finally:
            with contextlib.suppress(Exception):
                if committable := await self._committable(posts):
                    await posts.commit(committable)
            await asyncio.gather(
                posts.stop(), decided.stop(), producer.stop(), return_exceptions=True
            )
        log.info(
            "shadow run stopped compared=%d agreed=%d unpaired=%d",
            self.compared,
            self.agreed,
            self.unpaired,
        )
        return 0

    async def _seek_since(
        self, consumer: AIOKafkaConsumer, parts: list[TopicPartition], since_s: float
    ) -> None:
        """Production's decisions from `since_s` before now: posts fetched now may have been
        decided a little earlier."""
        stamp = int((time.time() - since_s) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(parts, stamp))
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])

    async def _read_published(self, consumer: AIOKafkaConsumer, since_s: float) -> None:
        """The posts of the shadow records published in the last `since_s`, read to the
        end before any post is compared (a restarted run must not pair them again)."""
        parts = await topic_partitions(self.production.kafka, [self.production.shadow.topic])
        consumer.assign(parts)
        await self._seek_since(consumer, parts, since_s)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + 60
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                log.warning("shadow records since %.0fs not read within 60s", since_s)
                break
            for ms in (await consumer.getmany(timeout_ms=500)).values():
                for m in ms:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        self._published[str(json.loads(m.value or b"")["post_id"])] = None
                    if len(self._published) > MAX_PENDING:
                        self._published.popitem(last=False)
        consumer.unsubscribe()

    async def _committable(
        self, consumer: AIOKafkaConsumer
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Each assigned partition's position, or its oldest post still waiting, if lower."""
        out = {tp: await consumer.position(tp) for tp in consumer.assignment()}
        for tp, offset, _ in self._where.values():
            if tp in out and offset < out[tp]:
                out[tp] = offset
        return {tp: OffsetAndMetadata(offset, "") for tp, offset in out.items()}

    def _candidate(self, result: Any, batch: list[Incoming]) -> None:
        t = self.candidate.topics
        for r in result.records:
            if r.topic not in (t.verdicts, t.escalations):
                continue  # review items ride with their verdict; dead letters have no side
            kind = "verdicts" if r.topic == t.verdicts else "escalations"
            found = side_of(kind, json.loads(r.value))
            if found is not None and found[0] not in self._published:
                self._hold(self._cand, *found)
        now = time.monotonic()
        for m in batch:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                post_id = str(json.loads(m.value or b"")["post_id"])
                if post_id in self._cand and post_id not in self._where:
                    self._where[post_id] = (TopicPartition(m.topic, m.partition), m.offset, now)

    def _expire(self, since_s: float) -> None:
        """Posts production has not decided within `since_s` stop holding the commit back:
        a restart reads production's decisions only that far back."""
        cutoff = time.monotonic() - since_s
        old = []
        for post_id, (_, _, held_at) in self._where.items():
            if held_at >= cutoff:
                break  # held in order: the rest are younger
            old.append(post_id)
        for post_id in old:
            self._cand.pop(post_id, None)
            del self._where[post_id]
            self.unpaired += 1

    def _production(self, kind: str, raw: bytes | None) -> None:
        try:
            value = json.loads(raw or b"")
            found = side_of(kind, value) if isinstance(value, dict) else None
        except (ValueError, KeyError, TypeError):
            return  # not ours to judge: production's own DLQ handles bad records
        if found is not None and found[0] not in self._prod and found[0] not in self._published:
            self._hold(self._prod, *found)

    def _hold(self, buffer: OrderedDict[str, Side], post_id: str, side: Side) -> None:
        buffer[post_id] = side
        if len(buffer) > MAX_PENDING:
            self._where.pop(buffer.popitem(last=False)[0], None)
            self.unpaired += 1

    def _pair(self) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        for post_id in [k for k in self._cand if k in self._prod]:
            cand, prod = self._cand.pop(post_id), self._prod.pop(post_id)
            self._where.pop(post_id, None)
            agree = cand.action == prod.action
            record = {
                "post_id": post_id,
                "production": prod.wire(),
                "candidate": cand.wire(),
                "agree": agree,
                "candidate_config": self.candidate.app_id,
                "compared_at": now_rfc3339(),
            }
            out.append((post_id.encode(), json.dumps(record).encode()))
            category = prod.categories[0] if prod.categories else "none"
            self.metrics.shadow_posts.labels(
                prod.action, category, "agree" if agree else "disagree"
            ).inc()
            self.compared += 1
            self.agreed += agree
        return out
