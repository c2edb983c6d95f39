"""Triage of one batch: validate, classify once, route, and build every record the batch owes.

The Faust agent (streams/app.py) only orchestrates: it hands a batch of raw messages here
and publishes what comes back. Keeping this free of Faust makes it testable with plain
values and reusable by the benchmark.

Every choice here is a function of the post, so a redelivered post is decided the same way:
the audit sample is drawn from a hash of the post_id, not at random. And the first final
outcome recorded for a post (modpipe/core/final_verdicts.py) wins: a post that already
has one gets those bytes again instead of a new decision or an escalation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from classifiers import Classification, Classifier
from modpipe.core.cost import CostModel
from modpipe.core.dead_letters import dead_letter
from modpipe.core.errors import ClassifierError, InvalidRecord
from modpipe.core.final_verdicts import FinalVerdicts, Outcome
from modpipe.core.metrics import Metrics
from modpipe.core.outputs import fallback_verdict, review_then_verdict
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
    encode,
    encode_verdict,
    now_rfc3339,
    parse_post,
    wire_limits,
)
from modpipe.core.settings import Settings
from streams.routing import route
from streams.rules import RulesStage

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Owed:
    """What one consumed message owes: `BatchResult.records[start:end]`; for a valid post,
    the post and the final outcome those records publish (None when it escalates)."""

    msg: Incoming
    start: int
    end: int
    post: Post | None = None
    outcome: Outcome | None = None


@dataclass(slots=True)
class BatchResult:
    """The records a batch owes, per message and in all, and how many posts went each way."""

    records: list[Outgoing] = field(default_factory=list)
    owed: list[Owed] = field(default_factory=list)
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
        final: FinalVerdicts | None = None,
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
        self._final = final
        self._audit_below = int(settings.triage.audit_rate * 2**64)
        self._limits = wire_limits(settings.kafka.max_message_bytes)
        self._now = 0.0  # the batch's decision time: one clock read per batch
        self._decided_at = ""
        self._rules = RulesStage.build(settings, metrics)  # None without `rules.path`

    async def process(self, batch: Sequence[Incoming]) -> BatchResult:
        """Everything `batch` owes downstream; never raises for a bad post."""
        result = BatchResult()
        posts: list[tuple[Incoming, Post]] = []
        for msg in batch:
            try:
                posts.append((msg, parse_post(msg.value, self._settings.kafka.max_message_bytes)))
            except Exception as exc:  # one record's failure, whatever it is, is its own
                start = len(result.records)
                self._dead_letter(result, msg, exc)
                result.owed.append(Owed(msg, start, len(result.records)))
        if posts and self._rules is not None:  # what the rules decide never reaches tier 1
            posts = await self._rules.decide(posts, result)
        if posts:
            self._metrics.batch_size.observe(len(posts))
            started = time.perf_counter()
            scored = await self._classify([post.text for _, post in posts])
            if self._rules is not None:
                scored = self._rules.add_signals(posts, scored)
            self._metrics.stage_seconds.labels("classify").observe(time.perf_counter() - started)
            self._now = time.time()
            self._decided_at = now_rfc3339()  # one decision time per batch
            for (msg, post), scores in zip(posts, scored, strict=True):
                mark = (len(result.records), result.verdicts, result.escalated, result.review)
                owed = Owed(msg, mark[0], mark[0], post)
                try:
                    if isinstance(scores, ClassifierError):
                        owed.outcome = self._classifier_failed(result, msg, post, scores)
                    else:
                        owed.outcome = self._decide(result, msg, post, scores)
                    self._check_sizes(result, mark[0])
                except Exception as exc:  # e.g. an unusable score: this post alone fails
                    del result.records[mark[0] :]
                    _, result.verdicts, result.escalated, result.review = mark
                    self._dead_letter(result, msg, exc)
                    owed = Owed(msg, mark[0], mark[0])
                owed.end = len(result.records)
                result.owed.append(owed)
        if self._final is not None:  # after the rules too: a batch they decided whole
            await self._keep_first_outcomes(result)
        self._count(result)
        return result

    async def _keep_first_outcomes(self, result: BatchResult) -> None:
        """Claim each post's outcome; a post decided before gets its first outcome again."""
        assert self._final is not None
        posts = [o for o in result.owed if o.post is not None]
        # An escalation only reads: it is not final, but a post decided before needs none.
        found = await self._final.claim(
            [(o.post.post_id, o.outcome) for o in posts if o.post is not None]
        )
        if not any(found):
            return
        again = {id(o): first for o, first in zip(posts, found, strict=True) if first is not None}
        records: list[Outgoing] = []
        for o in result.owed:
            start = len(records)
            first = again.get(id(o))
            if first is None or o.post is None:
                records += result.records[o.start : o.end]
            else:
                records += self._republished(o.post, first)
                o.outcome = first
            o.start, o.end = start, len(records)
        result.records = records

    def _republished(self, post: Post, first: Outcome) -> list[Outgoing]:
        """The records of a recorded outcome: its review item rebuilt, its verdict as it was."""
        item = None
        if first.review_reason is not None:
            verdict = Verdict.model_validate(json.loads(first.verdict))
            item = ReviewItem(
                post=post.wire(),
                scores=verdict.scores,
                model=verdict.model,
                policy_version=verdict.policy_version,
                reason=first.review_reason,  # type: ignore[arg-type]
                detail=first.review_detail,
                proposed=verdict if first.review_reason == "audit" else None,
            )
        return review_then_verdict(self._topics, post.post_id.encode(), first.verdict, item)

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

    def _decide(
        self, result: BatchResult, msg: Incoming, post: Post, c: Classification
    ) -> Outcome | None:
        decision = route(c.scores, self._settings.routing)
        tier_cost = (
            self._cost.cpu_usd(1)
            if self._classifier.kind == "cpu"
            else self._cost.small_usd(c.tokens)
        )
        result.tokens += c.tokens
        result.cost_usd += tier_cost
        key = post.post_id.encode()
        if decision.route == "escalate" or c.escalate:
            escalation = Escalation(
                post=post.wire(),
                scores=c.scores,
                model=self._classifier.model,
                policy_version=self._settings.policy.version,
                reason=c.escalate or "borderline",
                cost_usd=tier_cost,
                p_violation=c.p_violation,
            )
            # The post's own timestamp travels on, so tier 2 measures end-to-end latency.
            result.records.append(
                Outgoing(self._topics.escalations, key, encode(escalation), msg.timestamp_s)
            )
            result.escalated += 1
            return None
        action = decision.route
        latency_s = max(0.0, self._now - msg.timestamp_s)
        digest = hashlib.sha256(b"verdict\0" + key).digest()  # first_verdict_id, and the audit draw
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
            verdict_id=digest[:16].hex(),
            p_violation=c.p_violation,
        )
        result.latencies_s.append(latency_s)
        result.verdicts += 1
        result.decided["small", action] = result.decided.get(("small", action), 0) + 1
        # Drawn from the post_id's hash: a redelivered post is audited (or not) again.
        if int.from_bytes(digest[24:32]) < self._audit_below:
            verdict = Verdict.model_validate_json(value)
            detail = "audit sample (hash of post_id)"
            item = self._review(result, post, c.scores, "audit", detail, verdict)
            result.records += review_then_verdict(self._topics, key, value, item)
            return Outcome(value, "audit", detail)
        result.records.append(Outgoing(self._topics.verdicts, key, value))
        return Outcome(value)

    def _classifier_failed(
        self, result: BatchResult, msg: Incoming, post: Post, exc: ClassifierError
    ) -> Outcome | None:
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
            return None
        item = self._review(result, post, {}, "classifier_failed", str(exc), None)
        latency_s = max(0.0, self._now - msg.timestamp_s)
        value = encode(
            fallback_verdict(
                post_id=post.post_id,
                scores={},
                model=self._classifier.model,
                policy_version=self._settings.policy.version,
                latency_ms=round(latency_s * 1000, 3),
                cost_usd=0.0,
                decided_at=self._decided_at,
            )
        )
        result.records += review_then_verdict(self._topics, key, value, item)
        result.latencies_s.append(latency_s)
        result.verdicts += 1
        result.decided["fallback", "review"] = result.decided.get(("fallback", "review"), 0) + 1
        return Outcome(value, "classifier_failed", str(exc))

    def _review(
        self,
        result: BatchResult,
        post: Post,
        scores: dict[str, float],
        reason: ReviewReason,
        detail: str,
        proposed: Verdict | None,
    ) -> ReviewItem:
        """The post's review item, counted (its records are `review_then_verdict`'s)."""
        item = ReviewItem(
            post=post.wire(),
            scores=scores,
            model=self._classifier.model,
            policy_version=self._settings.policy.version,
            reason=reason,
            detail=detail,
            proposed=proposed,
        )
        result.review += 1
        self._metrics.review.labels(reason).inc()
        return item

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
