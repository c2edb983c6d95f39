"""The rules stage inside the real triage worker, on the real broker and Redis."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifiers import Classification, Classifier, build_classifier
from modpipe.cli.produce import publish
from modpipe.core.errors import ClassifierError
from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from streams.app import TriageWorker
from tests.conftest import MakeSettings
from tests.integration.conftest import Outputs, run_until, wait_until

SCAM = (
    "congratulations dear user you have won a free iphone 17 pro, click the link in our bio "
    "and enter your card details to claim the prize before midnight"
)

RULES = f"""
version: "2026-12-06.1"
rules:
  - {{id: slurs, action: block, category: harassment, match: {{terms: [idiot, "total moron"]}}}}
  - {{id: wire-fraud, action: review, match: {{regex: ['wire \\$?\\d{{3,}} (usd|dollars)']}}}}
  - {{id: spam-domain, action: block, category: illicit, match: {{domains: [evil.example]}}}}
  - {{id: denied-author, action: block, category: illicit, match: {{authors: [bot-7]}}}}
  - {{id: trusted-author, action: allow, match: {{authors: [newsroom]}}}}
  - {{id: known-scam, action: block, category: illicit, match: {{texts: ["{SCAM}"]}}}}
  - id: scam-wave
    action: block
    category: illicit
    match: {{near_duplicates: {{texts: ["{SCAM}"], threshold: 0.5}}}}
  - {{id: check-me, action: escalate, match: {{terms: [crypto giveaway]}}}}
  - {{id: flood, action: review, match: {{rate: {{posts: 10, per_s: 86400}}}}}}
"""


class Counting:
    """The real classifier, remembering every text it was asked to score."""

    def __init__(self, inner: Classifier) -> None:
        self.inner = inner
        self.model = inner.model
        self.kind = inner.kind
        self.seen: list[str] = []

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        self.seen += texts
        return await self.inner.classify(texts)

    async def aclose(self) -> None:
        await self.inner.aclose()


def rules_settings(make_settings: MakeSettings, base: Settings, path: Path, text: str) -> Settings:
    """`base` (whose topics the `outputs` fixture reads) with the rule file `path`."""
    path.write_text(text)
    return make_settings(
        app_id=base.app_id,
        topics=base.topics.model_dump(),
        redis={"key_prefix": base.redis.key_prefix},
        rules={"path": str(path), "reload_interval_s": 0.2},
    )


def post(pid: str, text: str, author: str | None = None) -> bytes:
    value: dict[str, Any] = {"post_id": pid, "text": text}
    if author is not None:
        value["author_id"] = author
    return json.dumps(value).encode()


def edit(text: str, rng: random.Random, n: int = 3) -> str:
    """`text` with `n` letters replaced: a copy-paste wave's small edits."""
    chars = list(text)
    for _ in range(n):
        i = rng.randrange(len(chars))
        chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
    return "".join(chars)


async def test_each_match_kind_decides_as_tier_rules(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", RULES)
    posts = {
        "term": post("term", "you are a total   MORON"),
        "leet": post("leet", "what an 1d10t"),
        "regex": post("regex", "please wire $5000 usd today"),
        "domain": post("domain", "cheap stuff at https://shop.evil.example/deal"),
        "deny": post("deny", "hello there", "bot-7"),
        "allow": post("allow", "you are a fucking idiot", "newsroom"),
        "known": post("known", SCAM.upper()),
        "near": post("near", edit(SCAM, random.Random(1))),
        "escalate": post("escalate", "join our crypto giveaway"),
        "plain": post("plain", "have a nice day"),
    }
    await publish(settings.kafka, settings.topics.posts, list(posts.values()))
    classifier = Counting(build_classifier(settings))
    worker = TriageWorker(settings, classifier, Metrics())
    code = await run_until(worker, lambda: outputs.decided() >= set(posts), "all posts decided")
    assert code == 0
    await outputs.settle()
    expect = {
        "term": ("slurs", "block"),
        "leet": ("slurs", "block"),
        "regex": ("wire-fraud", "review"),
        "domain": ("spam-domain", "block"),
        "deny": ("denied-author", "block"),
        # Block outranks allow: a trusted author's slur is still blocked.
        "allow": ("slurs", "block"),
        "known": ("known-scam", "block"),
        "near": ("scam-wave", "block"),
    }
    for pid, (rule, action) in expect.items():
        (verdict,) = outputs.verdicts[pid]
        assert (verdict["tier"], verdict["rule_id"], verdict["action"]) == ("rules", rule, action)
        assert verdict["rule_version"] == "2026-12-06.1"
    assert outputs.review["regex"][0]["reason"] == "rule"
    (escalation,) = outputs.escalations["escalate"]
    assert escalation["reason"] == "rule:check-me@2026-12-06.1"
    (plain,) = outputs.verdicts["plain"]
    assert plain["tier"] == "small" and "rule_id" not in plain
    assert classifier.seen == ["have a nice day"], "rules-decided posts never reach tier 1"
    hits = worker.metrics.rule_hits
    assert hits.labels("slurs", "block")._value.get() == 3
    assert hits.labels("trusted-author", "allow")._value.get() == 1


async def test_an_author_whitelisted_by_rule_skips_the_classifier(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", RULES)
    await publish(settings.kafka, settings.topics.posts, [post("a", "breaking news", "newsroom")])
    classifier = Counting(build_classifier(settings))
    worker = TriageWorker(settings, classifier, Metrics())
    assert await run_until(worker, lambda: "a" in outputs.decided(), "the post decided") == 0
    (verdict,) = outputs.verdicts["a"]
    assert (verdict["tier"], verdict["action"], verdict["rule_id"]) == (
        "rules",
        "allow",
        "trusted-author",
    )
    assert classifier.seen == []


async def test_reload_without_restart_and_an_invalid_file_is_refused(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    path = tmp_path / "rules.yaml"
    v1 = 'version: "v1"\nrules:\n  - {id: a, action: block, category: illicit, match: {terms: [aardvark]}}\n'
    settings = rules_settings(make_settings, settings, path, v1)
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    task = asyncio.ensure_future(worker.run())
    try:
        await wait_until(worker.ready.is_set, 60, "partitions assigned")
        path.write_text(
            v1.replace('"v1"', '"v2"')
            + ("  - {id: z, action: block, category: illicit, match: {terms: [zebra]}}\n")
        )
        # A post every half second until one is decided by the new rule: within 10 s.
        sent = 0

        def by_zebra() -> bool:
            return any(
                v[0].get("rule_id") == "z" for pid, v in outputs.verdicts.items() if "zebra" in pid
            )

        async def keep_posting() -> None:
            nonlocal sent
            while True:
                await publish(
                    settings.kafka, settings.topics.posts, [post(f"zebra-{sent}", "a zebra")]
                )
                sent += 1
                await asyncio.sleep(0.5)

        poster = asyncio.ensure_future(keep_posting())
        try:
            await wait_until(by_zebra, 10, "the reloaded rule deciding a post")
        finally:
            poster.cancel()
        assert worker.metrics.rules_invalid._value.get() == 0

        path.write_text("version: v3\nrules: [{id: broken, action: explode}]\n")
        await wait_until(
            lambda: worker.metrics.rules_invalid._value.get() == 1, 10, "the refusal exported"
        )
        await publish(settings.kafka, settings.topics.posts, [post("after", "zebra again")])
        await wait_until(lambda: "after" in outputs.verdicts, 30, "the post after the refusal")
        (verdict,) = outputs.verdicts["after"]
        assert (verdict["rule_id"], verdict["rule_version"]) == ("z", "v2"), "old rules stay"
        assert worker.metrics.rules_reloads.labels("invalid")._value.get() == 1
    finally:
        worker.stop()
        assert await asyncio.wait_for(task, 60) == 0


async def test_a_copy_paste_wave_is_blocked_without_the_classifier(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", RULES)
    rng = random.Random(23)
    wave = {f"w{i}": edit(SCAM, rng, n=rng.randint(1, 4)) for i in range(1000)}
    assert len(set(wave.values())) > 900, "small edits make (nearly) every copy unique"
    await publish(settings.kafka, settings.topics.posts, [post(p, t) for p, t in wave.items()])
    classifier = Counting(build_classifier(settings))
    worker = TriageWorker(settings, classifier, Metrics())
    assert await run_until(worker, lambda: outputs.decided() >= set(wave), "the wave") == 0
    await outputs.settle()
    rules = {outputs.verdicts[p][0].get("rule_id") for p in wave}
    # An edit that happens to leave the exact text is the known-content rule's: fine too.
    assert rules <= {"scam-wave", "known-scam"} and "scam-wave" in rules
    assert all(outputs.verdicts[p][0]["action"] == "block" for p in wave)
    assert classifier.seen == []


async def test_the_rate_rule_reviews_a_flooding_author(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", RULES)
    flood = [post(f"f{i}", f"buy my mixtape number {i}", "flooder") for i in range(30)]
    calm = [post(f"c{i}", f"a calm remark {i}", "calm") for i in range(5)]
    await publish(settings.kafka, settings.topics.posts, flood + calm)
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    everyone = {f"f{i}" for i in range(30)} | {f"c{i}" for i in range(5)}
    assert await run_until(worker, lambda: outputs.decided() >= everyone, "all decided") == 0
    await outputs.settle()
    reviewed = {p for p in everyone if outputs.verdicts[p][0].get("rule_id") == "flood"}
    assert len(reviewed) == 20, "the first 10 in the window pass, the other 20 are reviewed"
    assert {
        (outputs.verdicts[p][0]["tier"], outputs.verdicts[p][0]["action"]) for p in reviewed
    } == {("rules", "review")}
    assert all(p.startswith("f") for p in reviewed)
    assert {p for p in outputs.review if outputs.review[p][0]["reason"] == "rule"} == reviewed


async def test_a_hostile_regex_cannot_stall_the_worker(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    # Catastrophic backtracking in Python's re (hours on these posts); linear in RE2.
    hostile = (
        'version: "h"\nrules:\n'
        "  - {id: evil, action: review, match: {regex: ['(x+x+)+y', '^(a|a)*$', '(.*a){20}']}}\n"
    )
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", hostile)
    posts = {f"h{i}": "x" * 60_000 if i % 2 else "a" * 30_000 + "!" for i in range(6)}
    posts["ok"] = "have a nice day"
    await publish(settings.kafka, settings.topics.posts, [post(p, t) for p, t in posts.items()])
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    assert await run_until(worker, lambda: outputs.decided() >= set(posts), "all decided") == 0
    await outputs.settle()
    for i in range(6):
        rule = outputs.verdicts[f"h{i}"][0].get("rule_id")
        assert rule == (None if i % 2 else "evil"), "RE2 matched what it should, and only that"


async def test_a_post_the_rules_decided_gets_its_first_outcome_again(
    make_settings: MakeSettings, settings: Settings, tmp_path: Path, outputs: Outputs
) -> None:
    # The rules' outcome is claimed like tier 1's: a post seen again (here published twice,
    # in batches the rules decide whole) is answered with the first verdict, byte for byte.
    settings = rules_settings(make_settings, settings, tmp_path / "rules.yaml", RULES)
    await publish(settings.kafka, settings.topics.posts, [post("dup", "you idiot")])
    await publish(settings.kafka, settings.topics.posts, [post("dup", "you idiot")])
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    done = lambda: len(outputs.verdicts.get("dup", [])) >= 2  # noqa: E731
    assert await run_until(worker, done, "both deliveries answered") == 0
    first, second = outputs.verdicts["dup"][:2]
    assert first == second and first["rule_id"] == "slurs"
    assert first["verdict_id"] and first["tier"] == "rules"
