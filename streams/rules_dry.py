"""Rules without Kafka or Redis: what a rule file would decide on a file of posts.

`modpipe rules test` and `modpipe promote` use it. Rate rules count each author's posts in
file order as if the file were one window (a dry run has no clock worth trusting); every
other match is exactly the worker's (the same compiled RuleBook and precedence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from modpipe.core.records import Post
from streams.rules_book import PRECEDENCE, RuleBook, now_utc
from streams.rules_file import Rule


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the rules do with one post: a decisive rule, or tier 1 (`rule` None)."""

    rule: Rule | None
    signals: tuple[str, ...] = ()  # `score` rules that matched

    @property
    def label(self) -> str:
        """`block by slurs`, or `tier 1` for a post the rules pass on."""
        return "tier 1" if self.rule is None else f"{self.rule.action} by {self.rule.id}"


@dataclass(slots=True)
class DryRun:
    """Per post outcomes and per rule hits (every matching rule, decisive or not)."""

    outcomes: list[Outcome]
    hits: dict[str, list[int]] = field(default_factory=dict)  # rule id -> post indices


def dry_run(book: RuleBook, posts: Sequence[Post], now: datetime | None = None) -> DryRun:
    """Apply `book` to `posts` in order."""
    now = now or now_utc()
    counts: dict[tuple[int, str], int] = {}
    run = DryRun([])
    for n, post in enumerate(posts):
        matched = list(dict.fromkeys(book.match(post.text, post.author_id)))
        for i in book.rate_rules:
            rate = book.rules[i].match.rate
            if post.author_id is None or rate is None:
                continue
            key = (i, post.author_id)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > rate.posts:
                matched.append(i)
        best: Rule | None = None
        signals: list[str] = []
        for i in matched:
            rule = book.rules[i]
            if not rule.active(now):
                continue
            run.hits.setdefault(rule.id, []).append(n)
            if rule.action == "score":
                signals.append(rule.id)
            elif best is None or PRECEDENCE[rule.action] > PRECEDENCE[best.action]:
                best = rule
        run.outcomes.append(Outcome(best, tuple(signals)))
    return run
