"""The rules stage's cost: triage with a large rule set against triage without rules.

    flock /tmp/modpipe-bench.lock python -m bench.rules [--posts 20000] [--rounds 3]

One run, one broker, one classifier (the configured one, `cpu` by default): the triage
worker decides the same posts with no rules and with 10,000 terms, 500 regexes, 100,000
known hashes, 1,000 domains and 1,000 authors, alternating round by round; the ratio of
the medians is the figure (issue 23 asks for >= 0.9). No rule matches a bench post, so
every post still pays for the classifier: the ratio is the stage's cost alone, not a saving
from posts the rules decided. It also times the stage alone (microseconds per post, in
memory) and, apart, a near-duplicate rule (MinHash LSH), whose cost is per post too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, posts, publish_all
from bench.triage import triage_rate
from classifiers import build_classifier
from modpipe.core.kafka import ensure_topics
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, parse_post
from modpipe.core.settings import load_settings
from streams.rules import RulesStage
from streams.triage import BatchResult


def write_rules(folder: Path, near_duplicates: bool = False) -> Path:
    """A large rule file whose rules match none of the bench posts."""
    rng = random.Random(23)
    letters = "bcdfghjklmnpqrstvwxz"
    terms = ["".join(rng.choice(letters) for _ in range(rng.randint(5, 9))) for _ in range(10_000)]
    (folder / "terms.txt").write_text("\n".join(terms) + "\n")
    hashes = [f"{rng.getrandbits(256):064x}" for _ in range(100_000)]
    (folder / "hashes.txt").write_text("\n".join(hashes) + "\n")
    regexes = [f"order\\s+#?{i:03d}[a-z]{{2}}\\d{{4,}}" for i in range(500)]
    domains = [f"{''.join(rng.choice(letters) for _ in range(8))}.example" for _ in range(1000)]
    authors = [f"bench-author-{i}" for i in range(1000)]
    rules: list[dict[str, Any]] = [
        {"id": "terms", "action": "block", "category": "harassment",
         "match": {"terms_file": "terms.txt"}},
        {"id": "regexes", "action": "review", "match": {"regex": regexes}},
        {"id": "known", "action": "block", "category": "illicit",
         "match": {"hashes_file": "hashes.txt"}},
        {"id": "domains", "action": "block", "category": "illicit", "match": {"domains": domains}},
        {"id": "authors", "action": "block", "category": "illicit", "match": {"authors": authors}},
    ]  # fmt: skip
    if near_duplicates:
        wave = "congratulations you have won a free phone, click the link to claim it today"
        rules.append(
            {
                "id": "wave",
                "action": "block",
                "category": "illicit",
                "match": {"near_duplicates": {"texts": [wave], "threshold": 0.6}},
            }
        )
    path = folder / ("rules-near.yaml" if near_duplicates else "rules.yaml")
    path.write_text(json.dumps({"version": "bench", "rules": rules}))  # JSON is YAML
    return path


def wave_sized(n: int) -> list[tuple[bytes, bytes]]:
    """Posts as long as the near-duplicate rule's text, about other things: the case where
    its size bounds cannot skip the MinHash."""
    rng = random.Random(5)
    words = [
        "the",
        "bus",
        "was",
        "late",
        "again",
        "today",
        "and",
        "my",
        "coffee",
        "went",
        "cold",
        "while",
        "i",
        "waited",
    ]
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(16))[:76]
        out.append((f"b{i}".encode(), json.dumps({"post_id": f"b{i}", "text": text}).encode()))
    return out


async def stage_us_per_post(
    path: Path, n: int, records: list[tuple[bytes, bytes]] | None = None
) -> float:
    """The rules stage alone over `n` parsed posts in batches of 256: microseconds a post."""
    settings = load_settings(None, {"rules": {"path": str(path)}})
    stage = RulesStage.build(settings, Metrics())
    assert stage is not None
    batch = [
        (Incoming(k, v, "posts", 0, i, time.time()), parse_post(v, 65536))
        for i, (k, v) in enumerate(records or posts(n))
    ]
    started = time.perf_counter()
    for i in range(0, n, 256):
        rest = await stage.decide(batch[i : i + 256], BatchResult())
        assert len(rest) == len(batch[i : i + 256]), "a bench post matched a rule"
    return (time.perf_counter() - started) / n * 1e6


async def run(n: int, rounds: int, config: Path | None) -> dict[str, Any]:
    base = load_settings(config)
    bench = Bench(base, config, base.triage.batch_max)
    folder = Path(tempfile.mkdtemp(prefix="modpipe-bench-rules-"))
    started = time.perf_counter()
    rules_path = write_rules(folder)
    near_path = write_rules(folder, near_duplicates=True)
    load_s = time.perf_counter() - started
    topic = f"bench-{bench.tag}-posts"
    await ensure_topics(base.kafka, [topic], 4)
    await publish_all(base.kafka.bootstrap, topic, posts(n))
    without: list[float] = []
    with_rules: list[float] = []
    for r in range(rounds):
        for name, out, extra in (
            (f"plain{r}", without, {}),
            (f"rules{r}", with_rules, {"rules": {"path": str(rules_path)}}),
        ):
            settings = bench.variant(name, posts_topic=topic, **extra)
            out.append(await triage_rate(settings, build_classifier(settings), n))
    return {
        "posts": n,
        "rounds": rounds,
        "classifier": base.classifier.backend,
        "rule_set": "10,000 terms, 500 regexes, 100,000 hashes, 1,000 domains, 1,000 authors",
        "posts_per_s_without_rules": [round(x) for x in without],
        "posts_per_s_with_rules": [round(x) for x in with_rules],
        "ratio_of_medians": round(statistics.median(with_rules) / statistics.median(without), 3),
        "stage_us_per_post": round(await stage_us_per_post(rules_path, n), 2),
        "stage_us_per_post_with_near_duplicates": round(await stage_us_per_post(near_path, n), 2),
        "stage_us_per_post_with_near_duplicates_wave_sized_posts": round(
            await stage_us_per_post(near_path, n, wave_sized(n)), 2
        ),
        "write_rule_files_s": round(load_s, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--posts", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--config", type=Path, default=None)
    args = p.parse_args()
    print(json.dumps(asyncio.run(run(args.posts, args.rounds, args.config)), indent=2))


if __name__ == "__main__":
    main()
