"""The promotion gate's escalation and shadow checks, on scores made up for them."""

from __future__ import annotations

import numpy as np

from modpipe.core.settings import PromoteSettings, load_settings
from modpipe.quality.promote import Heldout, gate
from tests.conftest import CONFIG

RULES = PromoteSettings(min_shadow_posts=200, min_agreement=0.9)


def scored(p: np.ndarray) -> list[dict[str, float]]:
    return [{"harassment": float(x)} for x in p]


def data(n: int = 400) -> tuple[Heldout, np.ndarray]:
    labels = np.arange(n) % 2
    return Heldout(
        [f"post {i}" for i in range(n)], labels.tolist(), [["category:none"]] * n
    ), labels


def checks(shadow: dict | None, cand: np.ndarray, prod: np.ndarray, held: Heldout) -> dict:
    settings = load_settings(CONFIG)  # bands 0.35 and 0.92, 10% expected escalation
    verdict = gate(settings, settings, held, scored(prod), scored(cand), shadow, RULES)
    return {c["check"]: c["ok"] for c in verdict.checks} | {"passed": verdict.passed}


def test_a_candidate_escalating_past_the_budgets_room_is_refused() -> None:
    held, y = data()
    prod = y * 0.95 + 0.02  # decides everything, rightly
    # 20% of posts in the band (> 10% + 2%), ranked as before: only escalation is worse
    unsure = np.where(np.arange(len(y)) % 5 == 0, np.where(y == 1, 0.9, 0.4), prod)
    shadow = {"posts": 500, "agreement": 0.95}
    assert checks(shadow, prod, prod, held)["passed"]
    got = checks(shadow, unsure, prod, held)
    assert not got["escalation_rate"] and got["auprc"] and not got["passed"]


def test_the_shadow_check_wants_enough_posts_and_agreement_or_labels_that_explain() -> None:
    held, y = data()
    p = y * 0.95 + 0.02
    assert checks({"posts": 500, "agreement": 0.95}, p, p, held)["shadow"]
    assert not checks({"posts": 100, "agreement": 0.99}, p, p, held)["shadow"], "too few"
    assert not checks({"posts": 500, "agreement": 0.7}, p, p, held)["shadow"]
    explained = {"candidate_right": 40, "production_right": 3}
    assert checks({"posts": 500, "agreement": 0.7, "labels": explained}, p, p, held)["shadow"]
    wrong = {"candidate_right": 3, "production_right": 40}
    assert not checks({"posts": 500, "agreement": 0.7, "labels": wrong}, p, p, held)["shadow"]
    assert not checks(None, p, p, held)["shadow"], "no shadow report"
