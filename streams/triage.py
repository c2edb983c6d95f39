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
    parse_post,
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

    async def process(self, batch: Sequence[Incoming]) -> BatchResult:
        """Everything `batch` owes downstream; never raises for a bad post."""
        result = BatchResult()
        posts: list[tuple[Incoming, Post]] = []
        for msg in batch:
            try:
                posts.append((msg, parse_post(msg.value, self._settings.kafka.max_message_bytes)))
            except InvalidRecord as exc:
                self._dead_letter(result, msg, exc)
        if posts:
            self._metrics.batch_size.observe(len(posts))
            started = time.perf_counter()
            scored = await self._classify([post.text for _, post in posts])
            self._metrics.stage_seconds.labels("classify").observe(time.perf_counter() - started)
            for (msg, post), outcome in zip(posts, scored, strict=True):
                if isinstance(outcome, ClassifierError):
                    self._classifier_failed(result, msg, post, outcome)
                else:
                    self._decide(result, msg, post, outcome)
        return result

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
        self._tokens.inc(c.tokens)
        self._spent.inc(tier_cost)
        key = post.post_id.encode()
        if decision.route == "escalate":
            escalation = Escalation(
                post=post.wire(),
                scores=c.scores,
                model=self._classifier.model,
                policy_version=self._settings.policy.version,
                cost_usd=tier_cost,
            )
            # The post's own timestamp travels on, so tier 2 measures end-to-end latency.
            result.records.append(
                Outgoing(self._topics.escalations, key, encode(escalation), msg.timestamp_s)
            )
            result.escalated += 1
            self._outcome["escalated"].inc()
            return
        verdict = self._verdict(msg, post, decision.route, decision.categories, c.scores, tier_cost)
        result.records.append(Outgoing(self._topics.verdicts, key, encode(verdict)))
        result.verdicts += 1
        self._outcome["verdict"].inc()
        self._decided["small", verdict.action].inc()
        if self._rng.random() < self._settings.triage.audit_rate:
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
            self._outcome["escalated"].inc()
            return
        self._review(result, post, {}, "classifier_failed", str(exc), None)
        verdict = self._verdict(msg, post, "review", [], {}, 0.0, tier="fallback")
        result.records.append(Outgoing(self._topics.verdicts, key, encode(verdict)))
        result.verdicts += 1
        self._outcome["verdict"].inc()
        self._decided["fallback", "review"].inc()

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
        latency_s = max(0.0, time.time() - msg.timestamp_s)
        self._end_to_end.observe(latency_s)
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

    def _dead_letter(self, result: BatchResult, msg: Incoming, exc: InvalidRecord) -> None:
        result.records.append(dead_letter(msg, exc, self._topics.dlq))
        result.dlq += 1
        self._outcome["dlq"].inc()
        self._metrics.dlq.labels(exc.reason).inc()
