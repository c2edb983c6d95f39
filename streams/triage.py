"""Triage of one batch: validate, classify once, route, and build every record the batch owes.

The Faust agent (streams/app.py) only orchestrates: it hands a batch of raw messages here
and publishes what comes back. Keeping this free of Faust makes it testable with plain
values and reusable by the benchmark.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from classifiers import Classification, Classifier
from modpipe.core.cost import CostModel
from modpipe.core.errors import ClassifierError, InvalidRecord
from modpipe.core.metrics import Metrics
from modpipe.core.records import (
    Action,
    Escalation,
    Incoming,
    Outgoing,
    Post,
    ReviewItem,
    ReviewReason,
    Tier,
    Verdict,
    dead_letter,
    encode,
    encode_verdict,
    now_rfc3339,
    parse_post,
    wire_limits,
)
from modpipe.core.settings import Settings
from streams.routing import route

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchResult:
    """The records a batch owes, and how many posts went each way."""

    records: list[Outgoing] = field(default_factory=list)
    verdicts: int = 0
    escalated: int = 0
    review: int = 0
    dlq: int = 0
    # Tallied per post, counted into the metrics once per batch (a metric update per post
    # costs more than the rest of tier 1's own work on it).
    decided: dict[tuple[Tier, Action], int] = field(default_factory=dict)
    tokens: int = 0
    cost_usd: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


class Triage:
    """Tier 1: a batch of raw posts -> verdicts, escalations, review items, dead letters."""

    def __init__(
        self,
        settings: Settings,
        classifier: Classifier,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._topics = settings.topics
        self._classifier = classifier
        self._metrics = metrics
        # Labelled children looked up once: a labels() call per post is measurable here.
        self._outcome = {
            o: metrics.posts.labels("triage", o) for o in ("verdict", "escalated", "dlq")
        }
        self._decided = {
            (tier, action): metrics.decisions.labels(tier, action)
            for tier in ("small", "fallback")
            for action in ("allow", "block", "review")
        }
        self._end_to_end = metrics.stage_seconds.labels("end_to_end")
        self._tokens = metrics.tokens.labels("small")
        self._spent = metrics.cost.labels("small")
        self._cost = CostModel(settings.prices)
        self._rng = rng or random.Random()
        self._limits = wire_limits(settings.kafka.max_message_bytes)
        self._now = 0.0  # the batch's decision time: one clock read per batch
        self._decided_at = ""

    async def process(self, batch: Sequence[Incoming]) -> BatchResult:
        """Everything `batch` owes downstream; never raises for a bad post."""
        result = BatchResult()
        posts: list[tuple[Incoming, Post]] = []
        for msg in batch:
            try:
                posts.append((msg, parse_post(msg.value, self._settings.kafka.max_message_bytes)))
            except Exception as exc:  # one record's failure, whatever it is, is its own
                self._dead_letter(result, msg, exc)
        if posts:
            self._metrics.batch_size.observe(len(posts))
            started = time.perf_counter()
            scored = await self._classify([post.text for _, post in posts])
            self._metrics.stage_seconds.labels("classify").observe(time.perf_counter() - started)
            self._now = time.time()
            self._decided_at = now_rfc3339()  # one decision time per batch
            for (msg, post), outcome in zip(posts, scored, strict=True):
                mark = (len(result.records), result.verdicts, result.escalated, result.review)
                try:
                    if isinstance(outcome, ClassifierError):
                        self._classifier_failed(result, msg, post, outcome)
                    else:
                        self._decide(result, msg, post, outcome)
                    self._check_sizes(result, mark[0])
                except Exception as exc:  # e.g. an unusable score: this post alone fails
                    del result.records[mark[0] :]
                    _, result.verdicts, result.escalated, result.review = mark
                    self._dead_letter(result, msg, exc)
        self._count(result)
        return result

    def _count(self, result: BatchResult) -> None:
        """The batch's metric updates, one per series."""
        for outcome, n in (
            ("verdict", result.verdicts),
            ("escalated", result.escalated),
            ("dlq", result.dlq),
        ):
            if n:
                self._outcome[outcome].inc(n)
        for tier_action, n in result.decided.items():
            self._decided[tier_action].inc(n)
        if result.tokens:
            self._tokens.inc(result.tokens)
        if result.cost_usd:
            self._spent.inc(result.cost_usd)
        observe = self._end_to_end.observe
        for latency_s in result.latencies_s:
            observe(latency_s)

    async def _classify(self, texts: list[str]) -> list[Classification | ClassifierError]:
        try:
            return await self._classifier.classify(texts)
        except ClassifierError as exc:
            log.warning("classifier failed for a batch of %d: %s", len(texts), exc)
            return [exc] * len(texts)

    def _decide(self, result: BatchResult, msg: Incoming, post: Post, c: Classification) -> None:
        decision = route(c.scores, self._settings.routing)
        tier_cost = (
            self._cost.cpu_usd(1)
            if self._classifier.kind == "cpu"
            else self._cost.small_usd(c.tokens)
        )
        result.tokens += c.tokens
        result.cost_usd += tier_cost
        key = post.post_id.encode()
        if decision.route == "escalate":
            escalation = Escalation(
                post=post.wire(),
                scores=c.scores,
                model=self._classifier.model,
                policy_version=self._settings.policy.version,
                cost_usd=tier_cost,
                p_violation=c.p_violation,
            )
            # The post's own timestamp travels on, so tier 2 measures end-to-end latency.
            result.records.append(
                Outgoing(self._topics.escalations, key, encode(escalation), msg.timestamp_s)
            )
            result.escalated += 1
            return
        action = decision.route
        latency_s = max(0.0, self._now - msg.timestamp_s)
        value = encode_verdict(
            post_id=post.post_id,
            action=action,
            categories=decision.categories,
            scores=c.scores,
            tier="small",
            model=self._classifier.model,
            policy_version=self._settings.policy.version,
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=tier_cost,
            decided_at=self._decided_at,
            p_violation=c.p_violation,
        )
        result.records.append(Outgoing(self._topics.verdicts, key, value))
        result.latencies_s.append(latency_s)
        result.verdicts += 1
        result.decided["small", action] = result.decided.get(("small", action), 0) + 1
        if self._rng.random() < self._settings.triage.audit_rate:
            verdict = self._verdict(msg, post, action, decision.categories, c.scores, tier_cost)
            verdict.p_violation = c.p_violation
            self._review(result, post, c.scores, "audit", "random audit sample", verdict)

    def _classifier_failed(
        self, result: BatchResult, msg: Incoming, post: Post, exc: ClassifierError
    ) -> None:
        # Never publish a guess: the post goes on to a tier that can decide it.
        key = post.post_id.encode()
        if self._settings.triage.on_classifier_failure == "escalate":
            escalation = Escalation(
                post=post.wire(),
                scores={},
                model=self._classifier.model,
                policy_version=self._settings.policy.version,
                reason="classifier_failed",
            )
            result.records.append(
                Outgoing(self._topics.escalations, key, encode(escalation), msg.timestamp_s)
            )
            result.escalated += 1
            return
        self._review(result, post, {}, "classifier_failed", str(exc), None)
        verdict = self._verdict(msg, post, "review", [], {}, 0.0, tier="fallback")
        result.records.append(Outgoing(self._topics.verdicts, key, encode(verdict)))
        result.latencies_s.append(verdict.latency_ms / 1000)
        result.verdicts += 1
        result.decided["fallback", "review"] = result.decided.get(("fallback", "review"), 0) + 1

    def _verdict(
        self,
        msg: Incoming,
        post: Post,
        action: Action,
        categories: list[str],
        scores: dict[str, float],
        cost_usd: float,
        tier: Tier = "small",
    ) -> Verdict:
        latency_s = max(0.0, self._now - msg.timestamp_s)
        return Verdict(
            post_id=post.post_id,
            action=action,
            categories=categories,
            scores=scores,
            tier=tier,
            model=self._classifier.model,
            policy_version=self._settings.policy.version,
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=cost_usd,
            decided_at=self._decided_at,
        )

    def _review(
        self,
        result: BatchResult,
        post: Post,
        scores: dict[str, float],
        reason: ReviewReason,
        detail: str,
        proposed: Verdict | None,
    ) -> None:
        item = ReviewItem(
            post=post.wire(),
            scores=scores,
            model=self._classifier.model,
            policy_version=self._settings.policy.version,
            reason=reason,
            detail=detail,
            proposed=proposed,
        )
        result.records.append(Outgoing(self._topics.review, post.post_id.encode(), encode(item)))
        result.review += 1
        self._metrics.review.labels(reason).inc()

    def _check_sizes(self, result: BatchResult, start: int) -> None:
        # A post may grow when written again inside an escalation or review item; one
        # that no longer fits its topic is refused here rather than stopping the publisher.
        limit = self._limits.record_bytes
        records = result.records
        for i in range(start, len(records)):
            if len(records[i].value) > limit:
                raise InvalidRecord(
                    f"its {records[i].topic} record would be {len(records[i].value)} bytes, "
                    f"over the maximum of {limit}",
                    "size",
                )

    def _dead_letter(self, result: BatchResult, msg: Incoming, exc: Exception) -> None:
        # Per-record failures only: anything else (Kafka, the classifier service) raises
        # out of process() and stops the batch uncommitted.
        result.records.append(dead_letter(msg, exc, self._topics.dlq))
        result.dlq += 1
        self._metrics.dlq.labels(exc.reason if isinstance(exc, InvalidRecord) else "internal").inc()
