"""What a human decision looks like on the wire, and which submissions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modpipe.cli.demo import console_command
from modpipe.core.records import Verdict, encode, first_verdict_id
from modpipe.core.settings import load_settings
from modpipe.core.stats import clopper_pearson_interval
from modpipe.review.accounts import Session, valid_name
from modpipe.review.desk import problem
from modpipe.review.store import item_id

CATEGORIES = {"harassment", "hate", "violence"}


def _verdict() -> Verdict:
    return Verdict(
        post_id="p1",
        action="allow",
        categories=[],
        scores={"harassment": 0.2},
        tier="small",
        model="cpu",
        policy_version="2026-01",
        latency_ms=12.5,
        cost_usd=0.0,
        decided_at="2026-11-29T12:00:00.000Z",
        verdict_id=first_verdict_id("p1"),
    )


def test_a_machine_verdict_keeps_its_exact_wire_shape() -> None:
    assert encode(_verdict()) == (
        b'{"post_id":"p1","action":"allow","categories":[],"scores":{"harassment":0.2},'
        b'"tier":"small","model":"cpu","policy_version":"2026-01","latency_ms":12.5,'
        b'"cost_usd":0.0,"decided_at":"2026-11-29T12:00:00.000Z",'
        b'"verdict_id":"' + first_verdict_id("p1").encode() + b'"}'
    )


def test_a_superseding_verdict_names_the_one_it_replaces() -> None:
    human = _verdict().model_copy(
        update={"tier": "human", "reviewer": "ann", "verdict_id": "h1", "supersedes": "x"}
    )
    wire = json.loads(encode(human))
    assert (wire["verdict_id"], wire["supersedes"]) == ("h1", "x")
    assert "supersedes" not in json.loads(encode(_verdict()))


def test_a_human_verdict_names_the_reviewer_and_reads_back() -> None:
    human = _verdict().model_copy(update={"tier": "human", "reviewer": "ann"})
    wire = json.loads(encode(human))
    assert (wire["tier"], wire["reviewer"]) == ("human", "ann")
    assert Verdict.model_validate(wire) == human
    assert "reviewer" not in json.loads(
        encode(Verdict.model_validate(json.loads(encode(_verdict()))))
    )


@pytest.mark.parametrize(
    ("decision", "refusal"),
    [
        ({"action": "maybe"}, "action must be one of"),
        ({"action": "block"}, "block needs at least one violated category"),
        ({"action": "block", "categories": ["spam"]}, "unknown categories: spam"),
        ({"action": "block", "categories": "hate"}, "categories must be a list"),
        ({"action": "allow", "categories": ["hate"]}, "allow takes no categories"),
        ({"action": "allow", "note": "x" * 2001}, "note must be text"),
    ],
)
def test_malformed_decisions_are_refused(decision: dict[str, object], refusal: str) -> None:
    why = problem(decision, CATEGORIES)
    assert why is not None and why.startswith(refusal)


@pytest.mark.parametrize(
    "decision",
    [
        {"action": "allow"},
        {"action": "block", "categories": ["hate", "violence"], "note": "threat"},
        {"action": "skip"},
    ],
)
def test_well_formed_decisions_pass(decision: dict[str, object]) -> None:
    assert problem(decision, CATEGORIES) is None


def test_item_ids_are_one_per_post_and_url_safe() -> None:
    assert item_id("p1") == item_id("p1") != item_id("p2")
    assert item_id("../../etc <x>").isalnum()


def test_csrf_and_user_names() -> None:
    session = Session("ann", "reviewer", "tok")
    assert session.csrf_ok("tok") and not session.csrf_ok("tok2") and not session.csrf_ok(None)
    assert valid_name("ann.b-c_1") and not valid_name("") and not valid_name("a b")
    assert not valid_name("x" * 65)


def test_the_two_sided_interval_is_the_exact_binomial_one() -> None:
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)
    lower, upper = clopper_pearson_interval(5, 100)
    assert lower == pytest.approx(0.016432, abs=1e-6)  # standard tables: 1.64% - 11.28%
    assert upper == pytest.approx(0.112835, abs=1e-6)
    assert clopper_pearson_interval(0, 100)[0] == 0.0
    assert clopper_pearson_interval(100, 100)[1] == 1.0


def test_the_demo_report_ends_with_the_command_that_opens_the_console() -> None:
    settings = load_settings()
    lines = console_command(settings, None).splitlines()
    assert lines[-1] == "modpipe review serve"
    assert "moderation.review" in lines[0] and "review add-user" in lines[0]
    custom = console_command(settings, Path("my.yaml")).splitlines()
    assert custom[-1] == "modpipe --config my.yaml review serve"
