"""Statements of reasons from verdicts: restrictive only, the database's rules, no personal data."""

from __future__ import annotations

import pytest

from modpipe.compliance.rules import problems
from modpipe.compliance.statements import Context, build_statement, puid_for
from modpipe.core import dsa
from modpipe.core.records import Verdict, first_verdict_id
from modpipe.core.settings import Settings, load_settings
from tests.conftest import CONFIG


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(CONFIG)


def verdict(**over: object) -> Verdict:
    base: dict[str, object] = {
        "post_id": "p-1",
        "action": "block",
        "categories": ["harassment"],
        "scores": {"harassment": 0.97},
        "tier": "small",
        "model": "cpu-tfidf",
        "policy_version": "2026-11-01",
        "latency_ms": 3.0,
        "cost_usd": 0.0,
        "decided_at": "2026-12-01T10:00:00.000Z",
    }
    base.update(over)
    return Verdict.model_validate(base)


def test_only_blocks_yield_statements(settings: Settings) -> None:
    assert build_statement(verdict(action="allow", categories=[]), settings.policy) is None
    assert build_statement(verdict(action="review", tier="fallback"), settings.policy) is None
    assert build_statement(verdict(), settings.policy) is not None


@pytest.mark.parametrize(
    "category",
    ["harassment", "hate", "violence", "sexual", "sexual_minors", "self_harm", "illicit"],
)
@pytest.mark.parametrize("tier", ["small", "frontier", "cache", "human"])
def test_every_category_and_tier_passes_the_database_rules(
    settings: Settings, category: str, tier: str
) -> None:
    s = build_statement(
        verdict(categories=[category], scores={category: 0.99}, tier=tier), settings.policy
    )
    assert s is not None
    assert problems(s) == {}


def test_automation_follows_the_tier_and_source(settings: Settings) -> None:
    p = settings.policy
    machine = build_statement(verdict(tier="frontier"), p)
    assert machine and (machine["automated_detection"], machine["automated_decision"]) == (
        "Yes",
        dsa.FULLY,
    )
    human = build_statement(verdict(tier="human", model="human", reviewer="ann"), p)
    assert human and human["automated_decision"] == dsa.PARTIALLY
    appeal = build_statement(verdict(tier="human", model="appeal:upheld", reviewer="bob"), p)
    assert appeal and appeal["automated_decision"] == dsa.NOT_AUTOMATED
    flagged = build_statement(verdict(), p, Context("trusted_flagger"))
    assert flagged and flagged["source_type"] == dsa.SOURCE_TRUSTED_FLAGGER
    assert flagged["automated_detection"] == "No"
    own = build_statement(verdict(), p)
    assert own and own["source_type"] == dsa.SOURCE_VOLUNTARY


def test_illegal_ground_first_and_additions(settings: Settings) -> None:
    s = build_statement(
        verdict(
            categories=["harassment", "sexual_minors"],
            scores={"harassment": 0.99, "sexual_minors": 0.5},
        ),
        settings.policy,
    )
    assert s is not None and problems(s) == {}
    assert s["decision_ground"] == dsa.ILLEGAL
    assert s["category"] == "STATEMENT_CATEGORY_PROTECTION_OF_MINORS"
    assert s["category_addition"] == ["STATEMENT_CATEGORY_CYBER_VIOLENCE"]
    assert "incompatible_content_ground" not in s


def test_puid_is_stable_unique_and_valid() -> None:
    first = verdict()
    assert puid_for(first) == puid_for(verdict()) == "modpipe-" + first_verdict_id("p-1")
    assert puid_for(verdict(post_id="p-2")) != puid_for(first)
    human = verdict(tier="human", model="human", verdict_id="h" * 32)
    assert puid_for(human) == "modpipe-" + "h" * 32
    assert problems({"puid": "bad puid/1"})["puid"][-1] == "The puid format is invalid."


def test_no_personal_data(settings: Settings) -> None:
    v = verdict(tier="human", model="human", reviewer="reviewer-ann", post_id="author-77:post")
    s = build_statement(v, settings.policy)
    assert s is not None
    text = str(s)
    assert "reviewer-ann" not in text and "author-77" not in text


def test_validator_catches_what_the_database_refuses(settings: Settings) -> None:
    good = build_statement(verdict(), settings.policy)
    assert good is not None
    cases = {
        "category": {"category": "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"},
        "decision_facts": {"decision_facts": "x" * 5001},
        "territorial_scope": {"territorial_scope": ["US"]},
        "application_date": {"application_date": "2019-12-31"},
        "incompatible_content_ground": {"incompatible_content_ground": ""},
        "decision_visibility": {"decision_visibility": []},
        "decision_visibility_other": {"decision_visibility": ["DECISION_VISIBILITY_OTHER"]},
        "content_date": {"content_date": "2026-12-02"},
        "puid": {"puid": "p" * 501},
        "decision_ground_reference_url": {"decision_ground_reference_url": "terms page"},
    }
    for field, change in cases.items():
        assert field in problems({**good, **change}), field


def test_the_mapping_is_validated_at_start(tmp_path: object) -> None:
    from pathlib import Path

    import yaml

    from modpipe.core.errors import ConfigError

    assert isinstance(tmp_path, Path)
    policy = yaml.safe_load(Path("configs/policy.yaml").read_text())
    del policy["dsa"]["categories"]["hate"]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "c.yaml").write_text("policy_file: policy.yaml\n")
    with pytest.raises(ConfigError, match="missing \\['hate'\\]"):
        load_settings(tmp_path / "c.yaml")
    policy = yaml.safe_load(Path("configs/policy.yaml").read_text())
    policy["dsa"]["categories"]["hate"]["category"] = "STATEMENT_CATEGORY_SCOPE_OF_PLATFORM_SERVICE"
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    with pytest.raises(ConfigError, match="not a database category"):
        load_settings(tmp_path / "c.yaml")
