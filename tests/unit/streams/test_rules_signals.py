"""The rules stage inside Triage.process with a fake classifier: no Kafka, no Redis."""

from __future__ import annotations

import json
from pathlib import Path

from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming
from streams.triage import Triage
from tests.conftest import MakeSettings
from tests.unit.streams.test_triage import FakeClassifier

RULES = """
version: s1
rules:
  - {id: hint, action: score, category: harassment, score: 0.5, match: {terms: [jerk]}}
  - {id: gone, action: block, category: harassment, match: {terms: [old]},
     expires: 2020-01-01T00:00:00Z}
  - {id: ban, action: block, category: harassment, match: {terms: [banned]}}
"""


def msg(pid: str, text: str) -> Incoming:
    return Incoming(pid.encode(), json.dumps({"post_id": pid, "text": text}).encode(), "p", 0, 0, 0)


async def test_score_rules_add_a_signal_and_expired_rules_are_ignored(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    settings = make_settings(rules={"path": str(tmp_path / "rules.yaml")})
    classifier = FakeClassifier()
    triage = Triage(settings, classifier, Metrics())
    result = await triage.process(
        [msg("a", "p=0.5 you jerk"), msg("b", "p=0.1 old news"), msg("c", "p=0.1 banned word")]
    )
    verdicts = {
        v["post_id"]: v
        for r in result.records
        if r.topic == settings.topics.verdicts
        for v in [json.loads(r.value)]
    }
    # 0.5 from the classifier + 0.5 from the score rule: over the block line.
    assert verdicts["a"]["action"] == "block" and verdicts["a"]["tier"] == "small"
    assert verdicts["a"]["scores"]["harassment"] == 1.0
    assert verdicts["b"]["tier"] == "small", "an expired rule decides nothing"
    assert (verdicts["c"]["tier"], verdicts["c"]["rule_id"]) == ("rules", "ban")
    assert classifier.batches == [["p=0.5 you jerk", "p=0.1 old news"]]
