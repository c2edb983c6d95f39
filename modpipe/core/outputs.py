"""A post's output records in their one order, and the fallback verdict.

When people must decide a post, its review item goes out before its verdict: a reviewer
has the post before the platform is told. Triage (a classifier failure, an audit sample,
a recorded outcome published again) and the escalator (no provider, a failed or
unaffordable call, a recorded outcome) build these records here and nowhere else.
"""

from __future__ import annotations

from modpipe.core.records import (
    Outgoing,
    ReviewItem,
    Scores,
    Verdict,
    encode,
    first_verdict_id,
    now_rfc3339,
)
from modpipe.core.settings import TopicSettings


def fallback_verdict(
    *,
    post_id: str,
    scores: Scores,
    model: str,
    policy_version: str,
    latency_ms: float,
    cost_usd: float,
    decided_at: str | None = None,
) -> Verdict:
    """The first final verdict of a post no machine could decide: `review`, tier
    `fallback`, with the scores known so far."""
    return Verdict(
        post_id=post_id,
        action="review",
        categories=[],
        scores=scores,
        tier="fallback",
        model=model,
        policy_version=policy_version,
        latency_ms=latency_ms,
        cost_usd=cost_usd,
        decided_at=decided_at or now_rfc3339(),
        verdict_id=first_verdict_id(post_id),
    )


def review_then_verdict(
    topics: TopicSettings, key: bytes, verdict: bytes, item: ReviewItem | None
) -> list[Outgoing]:
    """The records of a post's outcome: its review item when people decide it, then its
    verdict."""
    out = [] if item is None else [Outgoing(topics.review, key, encode(item))]
    out.append(Outgoing(topics.verdicts, key, verdict))
    return out
