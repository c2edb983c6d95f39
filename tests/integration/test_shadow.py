"""A shadow run beside a running production worker, checked against an independent count."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import yaml

from classifiers import build_classifier
from modpipe.cli.produce import publish
from modpipe.cli.shadow import candidate_settings
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from modpipe.quality.shadow_report import build_report, read_topic
from streams.app import TriageWorker
from streams.shadow import ShadowRunner
from tests.conftest import CONFIG, MakeSettings
from tests.integration.conftest import Outputs, wait_until

TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage", "buy pills"]


async def test_shadow_beside_production_matches_an_independent_count(
    make_settings: MakeSettings, tmp_path: Path, outputs: Outputs, settings: Settings
) -> None:
    production = make_settings(
        app_id=settings.app_id,
        topics=settings.topics.model_dump(),
        redis={"key_prefix": settings.redis.key_prefix},
        shadow={
            "group_id": f"{settings.app_id}-shadow",
            "topic": f"{settings.topics.posts}-shadow",
        },
    )
    # The candidate: tighter bands and a rule production does not have.
    (tmp_path / "rules.yaml").write_text(
        "version: c1\nrules:\n"
        "  - {id: pills, action: block, category: illicit, match: {terms: [pills]}}\n"
    )
    (tmp_path / "candidate.yaml").write_text(
        yaml.safe_dump(
            {
                "policy_file": str(CONFIG.parent / "policy.yaml"),
                "routing": {"allow_below": 0.2, "block_above": 0.6},
                "rules": {"path": str(tmp_path / "rules.yaml")},
            }
        )
    )
    candidate = candidate_settings(production, tmp_path / "candidate.yaml")
    n = 200
    posts = [
        json.dumps({"post_id": f"s{i}", "text": f"{TEXTS[i % 4]} {i}"}).encode() for i in range(n)
    ]
    ids = {f"s{i}" for i in range(n)}
    metrics = Metrics()
    shadow = ShadowRunner(production, candidate, build_classifier(candidate), metrics)
    worker = TriageWorker(production, build_classifier(production), Metrics())
    shadow_task = asyncio.ensure_future(shadow.run())
    worker_task = asyncio.ensure_future(worker.run())
    try:
        await wait_until(lambda: worker.ready.is_set() and shadow.ready.is_set(), 60, "both up")
        await publish(production.kafka, production.topics.posts, posts)
        await wait_until(lambda: shadow.compared >= n, 90, "every post compared")
    finally:
        worker.stop()
        shadow.stop()
        assert await asyncio.wait_for(worker_task, 60) == 0
        assert await asyncio.wait_for(shadow_task, 60) == 0
    await outputs.settle()

    # Production alone decided the posts: one first decision each, nothing from the shadow.
    assert outputs.decided() == ids and outputs.duplicates() == 0
    production_side = {
        pid: "escalate" if pid in outputs.escalations else outputs.verdicts[pid][0]["action"]
        for pid in ids
    }
    records = await read_topic(production.kafka, production.shadow.topic)
    assert {r["post_id"] for r in records} == ids and len(records) == n, "complete, once each"
    for r in records:
        assert r["production"]["action"] == production_side[r["post_id"]]
        assert r["agree"] == (r["production"]["action"] == r["candidate"]["action"])
    pills = [r for r in records if "pills" in TEXTS[int(r["post_id"][1:]) % 4]]
    assert all(r["candidate"].get("rule_id") == "pills" for r in pills)

    # The independent count, from the production topics and the shadow topic.
    agree = Counter(
        (production_side[r["post_id"]], r["candidate"]["action"] == production_side[r["post_id"]])
        for r in records
    )
    assert agree[("allow", True)] + agree[("block", True)] + agree[("escalate", True)] < n
    for (action, agreed), count in agree.items():
        counted = sum(
            s.value
            for m in metrics.shadow_posts.collect()
            for s in m.samples
            if s.name.endswith("_total")
            and s.labels["action"] == action
            and s.labels["agreement"] == ("agree" if agreed else "disagree")
        )
        assert counted == count, (action, agreed)
    # Per category too: production's first category, from production's own verdicts.
    first_category = {
        pid: "none"
        if pid in outputs.escalations
        else (outputs.verdicts[pid][0].get("categories") or ["none"])[0]
        for pid in ids
    }
    by_category = Counter(
        (first_category[r["post_id"]], "agree" if r["agree"] else "disagree") for r in records
    )
    assert len({c for c, _ in by_category}) > 1, "more than one category to tell apart"
    exported: Counter[tuple[str, str]] = Counter()
    for m in metrics.shadow_posts.collect():
        for s in m.samples:
            if s.name.endswith("_total"):
                exported[(s.labels["category"], s.labels["agreement"])] += int(s.value)
    assert exported == by_category
    # Reviewers' labels on some posts: the report judges both sides against them.
    truth = {f"s{i}": "block" if i % 4 in (1, 3) else "allow" for i in range(0, n, 5)}
    labels = [
        json.dumps(
            {
                "post": {"post_id": pid, "text": "x"},
                "action": action,
                "categories": [],
                "reviewer": "r1",
                "reason": "audit",
            }
        ).encode()
        for pid, action in truth.items()
    ]
    await publish(production.kafka, production.topics.labels, labels)
    by_id = {r["post_id"]: r for r in records}
    right: Counter[str] = Counter()
    for pid, action in truth.items():
        prod, cand = by_id[pid]["production"]["action"], by_id[pid]["candidate"]["action"]
        right["candidate_right"] += cand == action and prod != action
        right["production_right"] += prod == action and cand != action
    report = await build_report(production, examples=5)
    assert report["labels"]["labelled"] == len(truth)
    assert report["labels"]["candidate_right"] == right["candidate_right"]
    assert report["labels"]["production_right"] == right["production_right"]
    agreed_n = sum(c for (_, a), c in agree.items() if a)
    assert (report["posts"], report["agreed"]) == (n, agreed_n)
    cells = {(m["production"], m["candidate"]): m["posts"] for m in report["matrix"]}
    assert cells == Counter(
        (production_side[r["post_id"]], r["candidate"]["action"]) for r in records
    )
    assert len(report["disagreements"]) == min(5, n - agreed_n)


async def test_a_restarted_shadow_run_loses_no_waiting_post_and_pairs_none_twice(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    production = make_settings()
    (tmp_path / "candidate.yaml").write_text(
        yaml.safe_dump({"policy_file": str(CONFIG.parent / "policy.yaml")})
    )
    candidate = candidate_settings(production, tmp_path / "candidate.yaml")
    ids = [f"r{i}" for i in range(60)]

    def verdicts(chosen: list[str]) -> list[bytes]:  # production's first decisions
        return [
            json.dumps({"post_id": pid, "action": "allow", "tier": "small"}).encode()
            for pid in chosen
        ]

    def runner() -> ShadowRunner:
        return ShadowRunner(production, candidate, build_classifier(candidate), Metrics())

    await ensure_pipeline_topics(production)  # as the production worker would
    first = runner()
    task = asyncio.ensure_future(first.run())
    try:
        await wait_until(first.ready.is_set, 60, "the shadow run up")
        posts = [json.dumps({"post_id": pid, "text": f"hello {pid}"}).encode() for pid in ids]
        await publish(production.kafka, production.topics.posts, posts)
        await wait_until(lambda: first.waiting == len(ids), 60, "the candidate's side of all")
        # Production decides half before the restart, the other half while it is down.
        await publish(production.kafka, production.topics.verdicts, verdicts(ids[::2]))
        await wait_until(lambda: first.compared == 30, 60, "the first half compared")
    finally:
        first.stop()
        assert await asyncio.wait_for(task, 60) == 0
    await publish(production.kafka, production.topics.verdicts, verdicts(ids[1::2]))

    second = runner()
    task = asyncio.ensure_future(second.run())
    try:
        await wait_until(lambda: second.compared >= 30, 90, "the second half compared")
        await wait_until(lambda: second.waiting == 0, 30, "nothing left waiting")
    finally:
        second.stop()
        assert await asyncio.wait_for(task, 60) == 0
    records = await read_topic(production.kafka, production.shadow.topic)
    assert sorted(r["post_id"] for r in records) == sorted(ids), "each post once"
    assert (first.compared, second.compared) == (30, 30)
