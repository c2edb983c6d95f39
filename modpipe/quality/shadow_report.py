"""`modpipe shadow report`: a shadow run's records against production and reviewers' labels.

Reads `shadow.topic` and the labels topic from their beginnings (both are small beside the
posts). The last shadow record of a post wins (a restarted run may compare it twice).
Against labels, only decided actions count (allow, block): a `review` or `escalate` on
either side is neither right nor wrong.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer

from modpipe.core.errors import StackError
from modpipe.core.kafka import consumer_options, topic_partitions
from modpipe.core.settings import KafkaSettings, Settings


async def read_topic(
    kafka: KafkaSettings, topic: str, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Every JSON object on `topic` now, in partition order (bad values skipped)."""
    parts = await topic_partitions(kafka, [topic])
    consumer = AIOKafkaConsumer(**consumer_options(kafka, None))
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        left = {tp for tp in parts if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for messages in (await consumer.getmany(*left, timeout_ms=500)).values():
                for m in messages:
                    try:
                        value = json.loads(m.value or b"")
                    except ValueError:
                        value = None
                    if isinstance(value, dict):
                        out.append(value)
            # Positions, not the last offset seen: transaction markers take offsets too.
            left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
        if left:
            raise StackError(f"{topic}: not read to its end within {timeout_s:.0f}s")
    finally:
        await consumer.stop()
    return out


def _human_actions(labels: list[dict[str, Any]]) -> dict[str, str]:
    """post_id -> a reviewer's allow or block, the last label of each post."""
    human: dict[str, str] = {}
    for label in labels:
        post = label.get("post") or {}
        if "post_id" in post and label.get("action") in ("allow", "block"):
            human[str(post["post_id"])] = label["action"]
    return human


def _rates(counter: Counter[tuple[str, bool]]) -> dict[str, dict[str, float]]:
    """Per key: its posts and the share of them on which the two sides agreed."""
    keys = sorted({k for k, _ in counter})
    return {
        k: {
            "posts": counter[k, True] + counter[k, False],
            "agreement": counter[k, True] / (counter[k, True] + counter[k, False]),
        }
        for k in keys
    }


def report(
    records: list[dict[str, Any]], labels: list[dict[str, Any]], examples: int = 10
) -> dict[str, Any]:
    """Confusion matrices, agreement per action and category, and disagreements to read."""
    latest = {r["post_id"]: r for r in records if "post_id" in r}
    human = _human_actions(labels)
    matrix: Counter[tuple[str, str]] = Counter()
    per_action: Counter[tuple[str, bool]] = Counter()
    per_category: Counter[tuple[str, bool]] = Counter()
    vs_labels = {"production": Counter[str](), "candidate": Counter[str]()}
    cand_right = prod_right = 0
    disagreements: list[dict[str, Any]] = []
    for post_id, r in latest.items():
        prod, cand = r["production"]["action"], r["candidate"]["action"]
        agree = prod == cand
        matrix[prod, cand] += 1
        per_action[prod, agree] += 1
        cats = r["production"].get("categories") or ["none"]
        per_category[cats[0], agree] += 1
        truth = human.get(post_id)
        if truth is not None:
            for side, action in (("production", prod), ("candidate", cand)):
                if action in ("allow", "block"):
                    vs_labels[side]["right" if action == truth else "wrong"] += 1
                else:
                    vs_labels[side]["undecided"] += 1
            if not agree:
                cand_right += cand == truth and prod != truth
                prod_right += prod == truth and cand != truth
        if not agree and len(disagreements) < examples:
            disagreements.append(
                {
                    "post_id": post_id,
                    "production": r["production"],
                    "candidate": r["candidate"],
                    "label": truth,
                }
            )
    n = len(latest)
    agreed = sum(v for (_, a), v in per_action.items() if a)

    return {
        "posts": n,
        "agreed": agreed,
        "agreement": agreed / n if n else 0.0,
        "matrix": [
            {"production": p, "candidate": c, "posts": v} for (p, c), v in sorted(matrix.items())
        ],
        "by_action": _rates(per_action),
        "by_category": _rates(per_category),
        "labels": {
            "labelled": sum(1 for p in latest if p in human),
            "production": dict(vs_labels["production"]),
            "candidate": dict(vs_labels["candidate"]),
            "candidate_right": cand_right,
            "production_right": prod_right,
        },
        "disagreements": disagreements,
    }


async def build_report(settings: Settings, examples: int) -> dict[str, Any]:
    """The report from the shadow and labels topics."""
    records = await read_topic(settings.kafka, settings.shadow.topic)
    labels = await read_topic(settings.kafka, settings.topics.labels)
    return report(records, labels, examples)
