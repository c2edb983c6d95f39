"""The transparency report's counts against counts computed here, independently, from a
generated history published on the topics (verdicts, labels, notices, appeals)."""

from __future__ import annotations

import asyncio
import csv
import json
import random
import sys
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from modpipe.compliance.records import appeal_verdict_id
from modpipe.core.settings import Settings
from tests.conftest import MakeSettings
from tests.integration.dsa_support import dsa_settings, env_for, produce, verdict
from tests.integration.test_appeals import build

START, END = date(2026, 11, 1), date(2026, 11, 30)
MACHINE = (("small", "cpu-tfidf"), ("frontier", "gpt-4.1-mini"), ("cache", "gpt-4.1-mini"))


def at(day: int, hour: float) -> str:
    base = datetime(2026, 10, 25) + timedelta(days=day, hours=hour)
    return base.isoformat(timespec="milliseconds") + "Z"


class Generated:
    """A month of moderation, plus records outside it, and the expected counts."""

    def __init__(self, settings: Settings, seed: int = 7) -> None:
        rng = random.Random(seed)
        cats = sorted(settings.policy.categories)
        dsa = settings.policy.dsa
        assert dsa is not None
        self.verdicts: list[dict[str, Any]] = []
        self.labels: list[dict[str, Any]] = []
        self.notices: list[dict[str, Any]] = []
        self.appeals: list[dict[str, Any]] = []
        self.own: Counter[tuple[str, str]] = Counter()  # (ground, DSA category)
        self.own_auto: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self.audit: dict[tuple[str, str], list[bool]] = {}
        blocked: list[dict[str, Any]] = []
        for i in range(160):
            tier, model = rng.choice(MACHINE)
            day = rng.randrange(0, 40)  # days 0-6 and 36-39 fall outside the period
            block = rng.random() < 0.4
            cat = rng.choice(cats)
            v = verdict(f"o-{i}", "block" if block else "allow", tier=tier, model=model,
                        categories=[cat] if block else [], decided_at=at(day, 1))  # fmt: skip
            self.verdicts.append(v.model_dump(mode="json"))
            inside = START <= (datetime(2026, 10, 25) + timedelta(days=day)).date() <= END
            if inside:
                self.decisions[(tier, model)] += 1
                if block:
                    g = dsa.categories[cat]
                    self.own[(g.decision_ground, g.category)] += 1
                    self.own_auto[(g.decision_ground, g.category)] += 1
                    blocked.append(self.verdicts[-1])
                if rng.random() < 0.3:  # audited: a reviewer agrees 80% of the time
                    agree = rng.random() < 0.8
                    human_block = block if agree else not block
                    self.labels.append({
                        "post": {"post_id": v.post_id, "text": "t"},
                        "action": "block" if human_block else "allow",
                        "categories": [cat] if human_block else [], "source": "human",
                        "reviewer": "ann", "reason": "audit", "note": "",
                        "decided_at": at(day, 3)})  # fmt: skip
                    self.audit.setdefault((tier, model), []).append(agree)
        self.notice_rows: dict[str, Counter[str]] = {}
        for i in range(30):
            claimed = rng.choice([*cats, None])
            trusted = rng.random() < 0.3
            day = rng.randrange(8, 30)
            self.notices.append({"notice_id": f"n-{i}", "post": {"post_id": f"n-{i}", "text": "x"},
                                 "category": claimed, "trusted_flagger": trusted,
                                 "received_at": at(day, 0)})  # fmt: skip
            row = self.notice_rows.setdefault(claimed or "not_specified", Counter())
            row["received"] += 1
            row["trusted"] += trusted
            block = rng.random() < 0.5
            cat = rng.choice(cats)
            tier = "human" if trusted else "small"
            v = verdict(f"n-{i}", "block" if block else "allow", tier=tier,
                        model="human" if trusted else "cpu-tfidf",
                        reviewer="ann" if trusted else None,
                        categories=[cat] if block else [], decided_at=at(day, 2))  # fmt: skip
            self.verdicts.append(v.model_dump(mode="json", exclude_none=True))
            if block:
                ground = dsa.categories[cat].decision_ground
                row["illegal" if ground.endswith("ILLEGAL_CONTENT") else "tc"] += 1
            else:
                row["no_action"] += 1
            if not trusted:
                self.decisions[("small", "cpu-tfidf")] += 1
        self.outcomes: Counter[str] = Counter()
        self.restrictions = 0
        for i, target in enumerate(blocked[:12]):
            day = rng.randrange(10, 25)
            self.appeals.append({"appeal_id": f"a-{i}", "post_id": target["post_id"],
                                 "statement": "please", "received_at": at(day, 5)})  # fmt: skip
            if i < 9:
                outcome = ("upheld", "reversed", "partially_reversed")[i % 3]
                action = "allow" if outcome == "reversed" else "block"
                v = verdict(target["post_id"], action, tier="human", model=f"appeal:{outcome}",
                            reviewer="bob", categories=target["categories"] if action == "block" else [],
                            verdict_id=appeal_verdict_id(f"a-{i}"), decided_at=at(day, 11))  # fmt: skip
                self.verdicts.append(v.model_dump(mode="json", exclude_none=True))
                self.outcomes[outcome] += 1
                self.restrictions += action == "block"
        self.statements = sum(
            1 for v in self.verdicts
            if v["action"] == "block" and START.isoformat() <= v["decided_at"][:10] <= END.isoformat()
        )  # fmt: skip


def table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_report_counts_equal_the_generated_history(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = dsa_settings(make_settings)
    g = Generated(settings)
    t = settings.topics
    await produce(
        settings, t.verdicts, [(v["post_id"], json.dumps(v).encode()) for v in g.verdicts]
    )
    await produce(settings, t.labels, [("l", json.dumps(x).encode()) for x in g.labels])
    await produce(settings, t.notices, [("n", json.dumps(x).encode()) for x in g.notices])
    await produce(settings, t.appeals, [("a", json.dumps(x).encode()) for x in g.appeals])
    await build(settings)  # the statements of reasons

    out = tmp_path / "report"
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modpipe", "transparency", "report",
        "--from", str(START), "--to", str(END), "--out", str(out),
        env=env_for(settings), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed, _ = await asyncio.wait_for(command.communicate(), 120)
    assert command.returncode == 0
    assert str(out / "part7_complaints.csv") in printed.decode()

    own = {(r["ground"], r["category"]): r for r in table(out / "part5_6_own_initiative.csv")}
    expected = {
        ("illegal_content" if gr.endswith("ILLEGAL_CONTENT") else "terms_and_conditions", c): n
        for (gr, c), n in g.own.items()
    }
    assert {k: int(r["measures"]) for k, r in own.items()} == expected
    assert {k: int(r["solely_automated"]) for k, r in own.items()} == expected  # all machine

    notices = {r["notice_category"]: r for r in table(out / "part4_notices.csv")}
    assert set(notices) == set(g.notice_rows)
    for cat, row in g.notice_rows.items():
        got = notices[cat]
        assert int(got["notices_received"]) == row["received"]
        assert int(got["from_trusted_flaggers"]) == row["trusted"]
        assert int(got["actions_under_law"]) == row["illegal"]
        assert int(got["actions_under_terms"]) == row["tc"]
        assert int(got["no_action"]) == row["no_action"]
        assert float(got["median_hours_notice_to_decision"]) == 2.0

    complaints = {r["measure"]: r for r in table(out / "part7_complaints.csv")}
    assert int(complaints["received"]["count"]) == len(g.appeals)
    for outcome in ("upheld", "reversed", "partially_reversed"):
        assert int(complaints[outcome]["count"]) == g.outcomes[outcome]
    assert int(complaints["omitted_undecided"]["count"]) == len(g.appeals) - sum(
        g.outcomes.values()
    )
    assert int(complaints["restrictions_after_complaint"]["count"]) == g.restrictions
    assert float(complaints["decided"]["median_hours_received_to_decided"]) == 6.0

    means = {(r["tier"], r["classifier"]): r for r in table(out / "part8_automated_means.csv")
             if r["scope"] == "total"}  # fmt: skip
    for key, n in g.decisions.items():
        assert int(means[key]["decisions"]) == n
    for key, agreements in g.audit.items():
        row = means[key]
        assert int(row["audited"]) == len(agreements)
        assert float(row["accuracy"]) == round(sum(agreements) / len(agreements), 4)
        assert float(row["accuracy_ci95_low"]) <= float(row["accuracy"]) <= float(
            row["accuracy_ci95_high"])  # fmt: skip

    summary = (out / "summary.md").read_text()
    assert f"**{len(g.notices)} notices**" in summary
    assert f"**{g.statements} statements of reasons**" in summary
    assert (out / "decisions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
