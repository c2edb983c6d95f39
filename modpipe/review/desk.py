"""The reviewers' desk: claim, skip and decide, and the publication of every decision.

A decision is built whole (the final `Verdict` with tier `human` and the reviewer named,
and the `Label`, both as the exact bytes to publish) and recorded in Redis in the same
atomic step that ends the reviewer's lease. Only then is it published, keyed by post_id,
and marked published; a crash in between leaves it in the outbox, and `republish_overdue`
(run by every console process) publishes the same stored bytes again. So a kill -9 at any
moment can repeat a decision, never change it, and never lose it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from modpipe.core.kafka import publish
from modpipe.core.metrics import Metrics
from modpipe.core.probes import holds
from modpipe.core.records import Label, Outgoing, Verdict, encode, first_verdict_id
from modpipe.core.settings import Settings
from modpipe.core.stats import clopper_pearson_interval
from modpipe.core.transactions import TransactionalPublisher, TransactionFailed
from modpipe.review.accounts import Session
from modpipe.review.appeals import appeal_decision, appeal_problem
from modpipe.review.store import REASONS, Lease, ReviewStore

log = logging.getLogger(__name__)

Action = Literal["allow", "block", "skip"]
ACTIONS: tuple[Action, ...] = ("allow", "block", "skip")
MAX_NOTE = 2000


@dataclass(frozen=True)
class Answer:
    """An HTTP-shaped result: status code and JSON body."""

    status: int
    body: dict[str, Any]


def problem(decision: dict[str, Any], policy_categories: set[str]) -> str | None:
    """Why a submitted decision is refused (400), or None when it is well-formed."""
    action, categories, note = (
        decision.get("action"),
        decision.get("categories", []),
        decision.get("note", ""),
    )
    if action not in ACTIONS:
        return f"action must be one of {', '.join(ACTIONS)}"
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        return "categories must be a list of category names"
    unknown = sorted(set(categories) - policy_categories)
    if unknown:
        return f"unknown categories: {', '.join(unknown)}"
    if action == "block" and not categories:
        return "block needs at least one violated category"
    if action == "allow" and categories:
        return "allow takes no categories"
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        return f"note must be text of at most {MAX_NOTE} characters"
    return None


class Desk:
    """Claims, skips and decisions for signed-in reviewers, and their publication."""

    def __init__(
        self,
        settings: Settings,
        store: ReviewStore,
        producer: AIOKafkaProducer,
        metrics: Metrics,
        decisions: TransactionalPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self._producer = producer
        self._decisions = decisions  # exactly once: verdict and label in one transaction
        self.categories = set(settings.policy.categories)

    async def claim(self, session: Session, reason: str | None) -> Lease | None:
        """The next item for this reviewer (of `reason`, else the oldest of any reason)."""
        reasons = [reason] if reason else list(REASONS)
        return await self.store.claim(session.user, self.settings.review.lease_s, reasons)

    async def decide(self, session: Session, submitted: dict[str, Any]) -> Answer:
        """Record, publish and count one decision; skip releases the item instead."""
        if submitted.get("outcome") is not None:
            return await self.decide_appeal(session, submitted)
        why = problem(submitted, self.categories)
        item_id = submitted.get("item_id")
        if why is None and not isinstance(item_id, str):
            why = "item_id is required"
        if why is not None:
            return Answer(400, {"error": why})
        assert isinstance(item_id, str)
        action: Action = submitted["action"]
        if action == "skip":
            if not await self.store.skip(session.user, item_id):
                return Answer(409, {"error": "you do not hold this item"})
            self.metrics.review_decisions.labels("skip").inc()
            return Answer(200, {"item_id": item_id, "skipped": True})
        lease = await self.store.item(item_id)
        if lease is None:
            earlier = await self.store.earlier_decision(item_id)
            if earlier is not None:
                return Answer(409, {"error": "already decided", "decision": _shown(earlier)})
            return Answer(404, {"error": "no such item"})
        if lease.reason == "appeal":
            return Answer(400, {"error": "an appeal is decided with an outcome"})
        decision = self._build(lease, session.user, submitted)
        audit = _agreement(lease, action)
        outcome = await self.store.decide(
            session.user, item_id, decision, audit, self.settings.review.outbox_retry_s
        )
        if outcome.status == "decided":
            return Answer(409, {"error": "already decided", "decision": _shown(outcome.decision)})
        if outcome.status == "expired":
            return Answer(409, {"error": "your lease ran out; the item went back to its queue"})
        if outcome.status != "ok":
            return Answer(409, {"error": "you do not hold this item"})
        self._count(lease, action, audit)
        published = await self.publish(item_id, decision)
        return Answer(200, {"item_id": item_id, "published": published, **_shown(decision)})

    # -- appeals (docs/compliance.md) ---------------------------------------------------

    async def decide_appeal(self, session: Session, submitted: dict[str, Any]) -> Answer:
        """Record and publish an appeal's outcome: a superseding human verdict and a label."""
        item_id = submitted.get("item_id")
        if not isinstance(item_id, str):
            return Answer(400, {"error": "item_id is required"})
        lease = await self.store.item(item_id)
        if lease is None:
            earlier = await self.store.earlier_decision(item_id)
            if earlier is not None:
                return Answer(409, {"error": "already decided", "decision": _shown(earlier)})
            return Answer(404, {"error": "no such item"})
        if lease.reason != "appeal":
            return Answer(400, {"error": "only an appeal is decided with an outcome"})
        if lease.record["appealed"].get("reviewer") == session.user:
            return Answer(403, {"error": "you made the decision under appeal"})
        why = appeal_problem(submitted, lease, self.categories)
        if why is not None:
            return Answer(400, {"error": why})
        decision, verdict = appeal_decision(submitted, lease, session.user)
        outcome = await self.store.decide(
            session.user, item_id, decision, "", self.settings.review.outbox_retry_s
        )
        if outcome.status == "decided":
            return Answer(409, {"error": "already decided", "decision": _shown(outcome.decision)})
        if outcome.status != "ok":
            return Answer(409, {"error": "you do not hold this item"})
        self._count(lease, verdict.action, "")
        received = lease.queued_ms / 1000  # an appeal is queued at its receipt
        self.metrics.appeal_decisions.labels(submitted["outcome"]).observe(
            max(0.0, time.time() - received)
        )
        published = await self.publish(item_id, decision)
        return Answer(200, {"item_id": item_id, "published": published, **_shown(decision)})

    def _build(self, lease: Lease, reviewer: str, submitted: dict[str, Any]) -> dict[str, Any]:
        record = lease.record
        post_id = str(record["post"]["post_id"])
        categories = sorted(set(submitted.get("categories", [])))
        verdict = Verdict(
            post_id=post_id,
            action=submitted["action"],
            categories=categories,
            scores=record.get("scores", {}),
            tier="human",
            model="human",
            policy_version=record.get("policy_version", self.settings.policy.version),
            latency_ms=round(max(0.0, time.time() * 1000 - lease.kafka_ts_ms), 3),
            cost_usd=0.0,  # reviewers' time is not priced; tier 1's share was on its verdict
            reviewer=reviewer,
            verdict_id=hashlib.sha256(f"human\0{lease.item_id}".encode()).hexdigest()[:32],
            supersedes=first_verdict_id(post_id),  # the machine's review, or the audited one
        )
        label = Label(
            post=record["post"],
            action=submitted["action"],
            categories=categories,
            reviewer=reviewer,
            reason=lease.reason,
            note=submitted.get("note", ""),
            decided_at=verdict.decided_at,
        )
        return {
            "post_id": post_id,
            "verdict": encode(verdict).decode(),
            "label": encode(label).decode(),
        }

    def _count(self, lease: Lease, action: str, audit: str) -> None:
        self.metrics.review_decisions.labels(action).inc()
        self.metrics.review_wait.observe(max(0.0, time.time() - lease.queued_ms / 1000))
        if audit:
            self.metrics.review_audits.labels(audit).inc()

    async def publish(self, item_id: str, decision: dict[str, Any]) -> bool:
        """Publish a recorded decision and mark it; False leaves it to the outbox."""
        t = self.settings.topics
        key = decision["post_id"].encode()
        records = [
            Outgoing(t.verdicts, key, decision["verdict"].encode()),
            Outgoing(t.labels, key, decision["label"].encode()),
        ]
        try:
            if self._decisions is not None:
                await self._decisions.publish(records)
            else:
                await publish(self.send, records, self.settings.review.publish_deadline_s)
        except (KafkaError, TransactionFailed) as exc:
            log.warning("decision not published yet item=%s: %s (the outbox retries)", item_id, exc)
            return False
        await self.store.mark_published(
            item_id, decision["verdict"], self.settings.review.decided_keep_s
        )
        return True

    async def send(self, r: Outgoing) -> Any:
        """Hand one record to the producer; returns the future of its acknowledgement."""
        return await self._producer.send(r.topic, r.value, key=r.key)

    async def republish_overdue(self) -> int:
        """Publish decisions recorded but not marked published in time (a crash, an outage)."""
        overdue = await self.store.overdue(self.settings.review.outbox_retry_s)
        for item_id, decision in overdue:
            if await self._on_kafka(decision):
                # Committed before a crash cut the marking short: mark it, never send it twice.
                log.info("recorded decision already published item=%s", item_id)
                await self.store.mark_published(
                    item_id, decision["verdict"], self.settings.review.decided_keep_s
                )
                continue
            log.info("republishing recorded decision item=%s", item_id)
            await self.publish(item_id, decision)
        return len(overdue)

    async def _on_kafka(self, decision: dict[str, Any]) -> bool:
        """Whether the decision's verdict is on the verdicts topic already (exactly once:
        its transaction committed, label included); at least once, never asked."""
        if self._decisions is None:
            return False
        verdict = json.loads(decision["verdict"])
        decided_ms = int(datetime.fromisoformat(verdict["decided_at"]).timestamp() * 1000)
        return await holds(
            self.settings.kafka,
            self.settings.topics.verdicts,
            decision["post_id"].encode(),
            f'"verdict_id":"{verdict["verdict_id"]}"'.encode(),
            decided_ms - 60_000,  # clocks of the console and the broker may differ a little
        )

    async def refresh_gauges(self) -> None:
        """Queue depth and oldest age per reason; tier 1's error estimate from the audits."""
        queues, _ = await self.store.stats()
        for q in queues:
            self.metrics.review_depth.labels(q.reason).set(q.depth)
            self.metrics.review_oldest.labels(q.reason).set(q.oldest_age_s)
        agree, disagree = await self.store.audit_counts()
        n = agree + disagree
        lower, upper = await asyncio.to_thread(clopper_pearson_interval, disagree, n)
        self.metrics.tier1_audits.set(n)
        self.metrics.tier1_error.labels("estimate").set(disagree / n if n else 0.0)
        self.metrics.tier1_error.labels("lower").set(lower)
        self.metrics.tier1_error.labels("upper").set(upper)


def _agreement(lease: Lease, action: str) -> str:
    proposed = lease.record.get("proposed")
    if lease.reason != "audit" or not isinstance(proposed, dict):
        return ""
    return "agree" if proposed.get("action") == action else "disagree"


def _shown(decision: dict[str, Any] | None) -> dict[str, Any]:
    if not decision:
        return {}
    return {k: json.loads(decision[k]) for k in ("verdict", "label") if k in decision}
