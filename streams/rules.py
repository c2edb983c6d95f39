"""The rules stage: what a trust-and-safety team already knows, applied before tier 1.

Triage hands each batch's parsed posts to `RulesStage.decide` before the classifier. A
post that a decisive rule matches is decided here as tier `rules` (its verdict names the
rule id and the rule file's version) and never reaches the classifier; the rest go on.
`score` rules decide nothing: `add_signals` adds their weight to the classifier's score.

When several rules match, the most severe action wins (block, review, escalate, allow);
expired rules are ignored. Rate rules count posts per author on the state Redis in two
fixed windows per rule (the previous window weighted by how much of it still overlaps:
a sliding-window estimate), one pipelined round trip per batch; keys carry a hash of the
author and expire after two windows, so memory is bounded by the authors active in that
time. Redis failing only turns the rate rules off until it is back (a metric counts it):
rules never stop triage.

Reloading: every `rules.reload_interval_s` a watcher task (and each batch) stats the rule
file and its list files; if they changed and their bytes hash differently, the new set is
compiled in a thread and swapped in once ready. A file that fails validation is refused:
the old rules stay, the error is logged and `modpipe_rules_invalid` is 1 until a valid
file arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from classifiers import Classification
from modpipe.core.errors import ClassifierError
from modpipe.core.final_verdicts import Outcome
from modpipe.core.metrics import Metrics
from modpipe.core.outputs import review_then_verdict
from modpipe.core.records import (
    Escalation,
    Incoming,
    Outgoing,
    Post,
    ReviewItem,
    Verdict,
    encode,
    first_verdict_id,
    now_rfc3339,
)
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings
from streams.rules_book import PRECEDENCE, RuleBook, RulesInvalid, load_rules, now_utc
from streams.rules_file import Rule

if TYPE_CHECKING:
    from streams.triage import BatchResult

log = logging.getLogger(__name__)

MODEL = "rules"
Scored = list[Classification | ClassifierError]


class RulesStage:
    """Rules before the classifier, reloaded from their file without a restart."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        book: RuleBook,
        redis: aioredis.Redis | None = None,
    ) -> None:
        assert settings.rules.path is not None
        self._settings = settings
        self._path = settings.rules.path
        self._metrics = metrics
        self._categories = set(settings.policy.categories)
        self._redis = redis
        self._book = book
        self._signature = _signature(self._path, book.files)
        self._checked = time.monotonic()
        self._loading: asyncio.Task[RuleBook] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._signals: dict[str, list[Rule]] = {}
        self._installed(book)

    @classmethod
    def build(cls, settings: Settings, metrics: Metrics) -> RulesStage | None:
        """The stage for `rules.path`, or None without one. An invalid file at start is
        refused with RulesInvalid: there are no old rules to keep."""
        if settings.rules.path is None:
            return None
        book = load_rules(settings.rules.path, set(settings.policy.categories))
        return cls(settings, metrics, book)

    @property
    def book(self) -> RuleBook:
        """The rules in force."""
        return self._book

    async def decide(
        self, posts: list[tuple[Incoming, Post]], result: BatchResult
    ) -> list[tuple[Incoming, Post]]:
        """Decide what the rules decide into `result`; the posts left for the classifier."""
        from streams.triage import Owed  # triage imports this module: bound at call time

        if self._watcher is None:
            # Started on the worker's loop with the first batch: an idle worker still
            # picks up a new file (and exports a refused one) within the interval.
            self._watcher = asyncio.ensure_future(self._watch())
        self._maybe_reload()
        book = self._book
        now = now_utc()
        hits = [self._match(book, post) for _, post in posts]
        if book.rate_rules:
            for i, extra in enumerate(await self._rates(book, [p for _, p in posts])):
                hits[i] += extra
        self._signals = {}
        rest: list[tuple[Incoming, Post]] = []
        decided_at = now_rfc3339()  # one decision time per batch
        wall = time.time()
        for (msg, post), matched in zip(posts, hits, strict=True):
            rule = self._decisive(book, matched, now, post.post_id) if matched else None
            if rule is None:
                rest.append((msg, post))
                continue
            mark = (len(result.records), result.verdicts, result.escalated, result.review)
            try:
                outcome = self._publish(result, msg, post, rule, book.version, decided_at, wall)
                # What this message owes (streams/triage.py Owed): its records, and the
                # final outcome to claim (None for an escalation, which is not final).
                result.owed.append(Owed(msg, mark[0], len(result.records), post, outcome))
            except Exception:  # this post alone: tier 1 decides it instead
                log.exception("rule %s failed on post_id=%s; passing it on", rule.id, post.post_id)
                self._metrics.rules_errors.labels("match").inc()
                del result.records[mark[0] :]
                _, result.verdicts, result.escalated, result.review = mark
                rest.append((msg, post))
        return rest

    def add_signals(self, posts: Sequence[tuple[Incoming, Post]], scored: Scored) -> Scored:
        """The classifier's scores with each matched `score` rule's weight added."""
        if not self._signals:
            return scored
        out = list(scored)
        for i, (_, post) in enumerate(posts):
            rules = self._signals.get(post.post_id)
            c = out[i]
            if rules and isinstance(c, Classification):
                scores = dict(c.scores)
                for rule in rules:
                    assert rule.category is not None
                    scores[rule.category] = min(1.0, scores.get(rule.category, 0.0) + rule.score)
                out[i] = Classification(scores, c.tokens)
        return out

    def _match(self, book: RuleBook, post: Post) -> list[int]:
        try:
            return book.match(post.text, post.author_id)
        except Exception:  # a matcher's bug on one text must not stop triage: tier 1 decides
            log.exception("rules failed on post_id=%s; passing it on", post.post_id)
            self._metrics.rules_errors.labels("match").inc()
            return []

    def _decisive(self, book: RuleBook, matched: list[int], now: Any, post_id: str) -> Rule | None:
        best: Rule | None = None
        for i in dict.fromkeys(matched):  # one hit per rule, in match order
            rule = book.rules[i]
            if not rule.active(now):
                continue
            self._metrics.rule_hits.labels(rule.id, rule.action).inc()
            if rule.action == "score":
                self._signals.setdefault(post_id, []).append(rule)
            elif best is None or PRECEDENCE[rule.action] > PRECEDENCE[best.action]:
                best = rule
        return best

    def _publish(
        self,
        result: BatchResult,
        msg: Incoming,
        post: Post,
        rule: Rule,
        version: str,
        decided_at: str,
        wall: float,
    ) -> Outcome | None:
        if rule.action == "escalate":
            self._escalate(result, msg, post, rule, version)
            return None
        policy = self._settings.policy.version
        latency_s = max(0.0, wall - msg.timestamp_s)
        verdict = Verdict(
            post_id=post.post_id,
            action="review" if rule.action == "review" else rule.action,  # type: ignore[arg-type]
            categories=[rule.category] if rule.category and rule.action != "allow" else [],
            scores={},
            tier="rules",
            model=MODEL,
            policy_version=policy,
            latency_ms=round(latency_s * 1000, 3),
            cost_usd=0.0,
            decided_at=decided_at,
            verdict_id=first_verdict_id(post.post_id),
            rule_id=rule.id,
            rule_version=version,
        )
        detail = f"rule {rule.id} (rules version {version})"
        item = None
        if rule.action == "review":
            item = ReviewItem(
                post=post.wire(),
                scores={},
                model=MODEL,
                policy_version=policy,
                reason="rule",
                detail=detail,
                proposed=verdict,
            )
            result.review += 1
            self._metrics.review.labels("rule").inc()
        value = encode(verdict)
        key = post.post_id.encode()
        result.records += review_then_verdict(self._settings.topics, key, value, item)
        result.latencies_s.append(latency_s)
        result.verdicts += 1
        self._metrics.decisions.labels("rules", verdict.action).inc()
        return Outcome(value, "rule", detail) if rule.action == "review" else Outcome(value)

    def _escalate(
        self, result: BatchResult, msg: Incoming, post: Post, rule: Rule, version: str
    ) -> None:
        escalation = Escalation(
            post=post.wire(),
            scores={},
            model=MODEL,
            policy_version=self._settings.policy.version,
            reason=f"rule:{rule.id}@{version}",
        )
        key = post.post_id.encode()
        result.records.append(
            Outgoing(self._settings.topics.escalations, key, encode(escalation), msg.timestamp_s)
        )
        result.escalated += 1

    async def _rates(self, book: RuleBook, posts: list[Post]) -> list[list[int]]:
        """Rate-rule hits per post: the author's posts in the rule's sliding window."""
        hits: list[list[int]] = [[] for _ in posts]
        by_author: dict[str, list[int]] = {}
        for n, post in enumerate(posts):
            if post.author_id is not None:
                by_author.setdefault(post.author_id, []).append(n)
        if not by_author:
            return hits
        # Wall-clock windows: every worker counts into the same ones.
        now = time.time()
        prefix = self._settings.redis.key_prefix
        plan: list[tuple[int, float, list[int]]] = []
        try:
            redis = self._client()
            pipe = redis.pipeline(transaction=False)
            for i in book.rate_rules:
                rate = book.rules[i].match.rate
                assert rate is not None
                window = int(now // rate.per_s)
                overlap = 1.0 - (now - window * rate.per_s) / rate.per_s
                for author, indices in by_author.items():
                    who = hashlib.sha256(author.encode()).hexdigest()[:20]
                    base = f"{prefix}:rules:rate:{book.rules[i].id}:{who}"
                    pipe.incrby(f"{base}:{window}", len(indices))
                    pipe.expire(f"{base}:{window}", int(2 * rate.per_s) + 1)
                    pipe.get(f"{base}:{window - 1}")
                    plan.append((i, overlap, indices))
            replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("rate rules skipped for a batch: Redis failed: %s", exc)
            self._metrics.rules_errors.labels("rate").inc()
            return hits
        for k, (i, overlap, indices) in enumerate(plan):
            rate = book.rules[i].match.rate
            assert rate is not None
            current, previous = int(replies[3 * k]), int(replies[3 * k + 2] or 0)
            before = current - len(indices) + previous * overlap
            for j, n in enumerate(indices, start=1):
                if before + j > rate.posts:
                    hits[n].append(i)
        return hits

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = connect_redis(self._settings.redis)
        return self._redis

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._settings.rules.reload_interval_s)
            try:
                self._maybe_reload()
            except Exception:  # the watcher must outlive any one bad look at the file
                log.exception("checking the rule file failed")

    def _maybe_reload(self) -> None:
        if self._loading is not None and self._loading.done():
            self._take(self._loading)
            self._loading = None
        if self._loading is not None:
            return
        if time.monotonic() - self._checked < self._settings.rules.reload_interval_s:
            return
        self._checked = time.monotonic()
        signature = _signature(self._path, self._book.files)
        if signature == self._signature:
            return
        self._signature = signature
        self._loading = asyncio.ensure_future(
            asyncio.to_thread(load_rules, self._path, self._categories)
        )

    def _take(self, loading: asyncio.Task[RuleBook]) -> None:
        try:
            book = loading.result()
        except RulesInvalid as exc:
            log.error(
                "rule file refused; the rules of version %s stay: %s", self._book.version, exc
            )
            self._metrics.rules_reloads.labels("invalid").inc()
            self._metrics.rules_invalid.set(1)
            return
        if book.digest != self._book.digest:
            log.info(
                "rules reloaded version=%s rules=%d (was %s)",
                book.version,
                len(book.rules),
                self._book.version,
            )
            self._book = book
        self._signature = _signature(self._path, book.files)
        self._installed(book)

    def _installed(self, book: RuleBook) -> None:
        self._metrics.rules_reloads.labels("ok").inc()
        self._metrics.rules_invalid.set(0)
        self._metrics.rules_loaded.set(len(book.rules))


def _signature(path: Path, files: Sequence[Path]) -> tuple[Any, ...]:
    """What changes when the rule file or a list file it names is rewritten."""
    out: list[Any] = []
    for p in (path, *files):
        try:
            st = p.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
