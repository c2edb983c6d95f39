"""Appeals in the console: the intake from `moderation.appeals` and the appeal decisions.

The intake reads appeals (read_committed, its own group `appeals.group_id`), finds the
verdict under appeal in the post's history (the statement builder keeps it in the state
Redis, modpipe/compliance/ledger.py) and queues an item with reason `appeal` holding the
post, every verdict the post had and the appellant's statement. An appeal naming no
earlier verdict, or received more than `appeals.window_days` after the decision, is
dead-lettered with a clear error. Offsets are committed as the feeder commits them: never
past an appeal whose decision is not published.

A reviewer decides an appeal with an outcome (DSA Art. 20: a person, never a machine, and
never the reviewer of the decision under appeal, who is excluded when it is queued):
`upheld` (the decision stands), `reversed` (block becomes allow; allow becomes block with
the categories given) or `partially_reversed` (a block kept for some of its categories).
Each yields a new verdict, tier `human`, model `appeal:<outcome>`, that supersedes the
appealed one, and a label with reason `appeal`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from datetime import datetime
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from modpipe.compliance.consuming import consumer
from modpipe.compliance.ledger import Ledger, LedgerUnavailable
from modpipe.compliance.records import AppealOutcome, appeal_verdict_id, parse_appeal
from modpipe.compliance.statements import APPEAL_MODEL_PREFIX, verdict_key
from modpipe.core.dead_letters import dead_letter
from modpipe.core.errors import InvalidRecord, ReviewStoreUnavailable
from modpipe.core.kafka import Send, publish
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Label, Verdict, encode, now_rfc3339, wire_limits
from modpipe.core.settings import Settings
from modpipe.review.store import Lease, ReviewStore

log = logging.getLogger(__name__)

DAY_S = 86400


def appeal_item_id(appeal_id: str) -> str:
    """The console item of an appeal (one per appeal id), apart from posts' items."""
    return hashlib.sha256(b"appeal\0" + appeal_id.encode()).hexdigest()[:24]


def _seconds(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()


def appealed_verdict(
    verdicts: dict[str, dict[str, Any]], verdict_id: str | None
) -> tuple[str, dict[str, Any]] | None:
    """The verdict under appeal: the one named, else the post's latest allow or block."""
    if verdict_id is not None:
        named = verdicts.get(verdict_id)
        return (verdict_id, named) if named and named.get("action") != "review" else None
    final = [(k, v) for k, v in verdicts.items() if v.get("action") in ("allow", "block")]
    return max(final, key=lambda kv: kv[1].get("decided_at", "")) if final else None


class AppealIntake:
    """The console's consumer of appeals."""

    def __init__(
        self, settings: Settings, store: ReviewStore, ledger: Ledger, send: Send, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.metrics = metrics
        self._send = send
        self._consumer = consumer(settings, settings.appeals.group_id)

    async def run(self, stopping: asyncio.Event) -> None:
        """Queue appeals until `stopping` is set."""
        await self._consumer.start()
        try:
            self._consumer.subscribe([self.settings.topics.appeals])
            while not stopping.is_set():
                try:
                    batches = await self._consumer.getmany(timeout_ms=200)
                    for tp, records in batches.items():
                        for i, record in enumerate(records):
                            try:
                                await self._ingest(record)
                            except (ReviewStoreUnavailable, LedgerUnavailable, KafkaError):
                                self._consumer.seek(tp, records[i].offset)
                                raise
                    await self.commit()
                except (ReviewStoreUnavailable, LedgerUnavailable, KafkaError) as exc:
                    log.warning("appeal intake paused: %s", exc)
                    await asyncio.sleep(1.0)
        finally:
            await self._consumer.stop()

    async def commit(self) -> None:
        """Commit each partition up to its lowest appeal still owed a published decision."""
        offsets: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            position = await self._consumer.position(tp)
            offsets[tp] = await self.store.committable(tp.topic, tp.partition, position)
        if offsets:
            await self._consumer.commit(offsets)

    async def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        s = self.settings
        try:
            await self._queue(record)
        except InvalidRecord as exc:
            letter = dead_letter(Incoming.of(record), exc, s.topics.dlq)
            await publish(self._send, [letter], s.review.publish_deadline_s)
            self.metrics.dlq.labels(exc.reason).inc()
            self.metrics.appeals.labels("dlq").inc()

    async def _queue(self, record: ConsumerRecord[bytes, bytes]) -> None:
        s = self.settings
        appeal = parse_appeal(record.value, wire_limits(s.kafka.max_message_bytes).record_bytes)
        history = await self.ledger.verdicts(appeal.post_id)
        found = appealed_verdict(history, appeal.verdict_id)
        if found is None:
            named = f"verdict {appeal.verdict_id}" if appeal.verdict_id else "any verdict"
            raise InvalidRecord(
                f"appeal {appeal.appeal_id} names no earlier verdict: post "
                f"{appeal.post_id} has no {named} that allowed or blocked it",
                "appeal_no_verdict",
            )
        appealed_id, appealed = found
        late_s = _seconds(appeal.received_at) - _seconds(appealed["decided_at"])
        if late_s > s.appeals.window_days * DAY_S:
            raise InvalidRecord(
                f"appeal {appeal.appeal_id} received {late_s / DAY_S:.0f} days after the "
                f"decision, past appeals.window_days ({s.appeals.window_days:g})",
                "appeal_late",
            )
        post = appeal.post or {"post_id": appeal.post_id, "text": ""}
        item = {
            "post": post,
            "scores": appealed.get("scores", {}),
            "model": appealed.get("model", ""),
            "policy_version": appealed.get("policy_version", s.policy.version),
            "reason": "appeal",
            "detail": "",
            "queued_at": now_rfc3339(),
            "appeal": appeal.model_dump(mode="json", exclude={"post"}),
            "appealed_id": appealed_id,
            "appealed": appealed,
            "verdicts": sorted(history.values(), key=lambda v: v.get("decided_at", "")),
        }
        reviewer = appealed.get("reviewer")
        got = await self.store.ingest_appeal(
            appeal_item_id(appeal.appeal_id),
            json.dumps(item, ensure_ascii=False),
            appeal.post_id,
            int(_seconds(appeal.received_at) * 1000),
            record.timestamp,
            [reviewer] if isinstance(reviewer, str) and reviewer else [],
            (record.topic, record.partition, record.offset),
        )
        self.metrics.appeals.labels("queued" if got == "new" else "duplicate").inc()


def appeal_problem(submitted: dict[str, Any], lease: Lease, categories: set[str]) -> str | None:
    """Why an appeal decision is refused (400), or None."""
    outcome = submitted.get("outcome")
    chosen = submitted.get("categories", [])
    note = submitted.get("note", "")
    if outcome not in AppealOutcome:
        return f"outcome must be one of {', '.join(AppealOutcome)}"
    if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
        return "categories must be a list of category names"
    if set(chosen) - categories:
        return f"unknown categories: {', '.join(sorted(set(chosen) - categories))}"
    if not isinstance(note, str) or len(note) > 2000:
        return "note must be text of at most 2000 characters"
    appealed = lease.record["appealed"]
    if outcome == "reversed" and appealed["action"] == "allow" and not chosen:
        return "reversing an allow needs the violated categories"
    if outcome == "partially_reversed":
        kept = set(chosen)
        if appealed["action"] != "block":
            return "only a block can be partially reversed"
        if not kept or not kept < set(appealed["categories"]):
            return "partially_reversed keeps some, not all, of the appealed categories"
    return None


def appeal_decision(
    submitted: dict[str, Any], lease: Lease, reviewer: str
) -> tuple[dict[str, Any], Verdict]:
    """The recorded decision (verdict and label bytes) for an appeal's outcome."""
    record = lease.record
    appealed = record["appealed"]
    outcome: str = submitted["outcome"]
    chosen = sorted(set(submitted.get("categories", [])))
    if outcome == "upheld":
        action, categories = appealed["action"], list(appealed["categories"])
    elif outcome == "reversed":
        action, categories = ("allow", []) if appealed["action"] == "block" else ("block", chosen)
    else:
        action, categories = "block", chosen
    appeal = record["appeal"]
    supersedes = record.get("appealed_id") or verdict_key(Verdict.model_validate(appealed))
    verdict = Verdict(
        post_id=appeal["post_id"],
        action=action,
        categories=categories,
        scores=appealed.get("scores", {}),
        tier="human",
        model=APPEAL_MODEL_PREFIX + outcome,
        policy_version=appealed.get("policy_version", record.get("policy_version", "")),
        latency_ms=round(max(0.0, time.time() - _seconds(appeal["received_at"])) * 1000, 3),
        cost_usd=0.0,
        reviewer=reviewer,
        verdict_id=appeal_verdict_id(appeal["appeal_id"]),
        supersedes=supersedes,
    )
    label = Label(
        post=record["post"],
        action=action,
        categories=categories,
        reviewer=reviewer,
        reason="appeal",
        note=submitted.get("note", "") or f"appeal {appeal['appeal_id']}: {outcome}",
        decided_at=verdict.decided_at,
    )
    decision = {
        "post_id": verdict.post_id,
        "verdict": encode(verdict).decode(),
        "label": encode(label).decode(),
    }
    return decision, verdict
