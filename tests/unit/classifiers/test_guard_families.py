"""Each guard family's prompt and its reading of answers, on the examples of its model card
(written here from the cards: Llama Guard 3's template bytes are also checked token for
token in test_guard_prompt.py and against a real vLLM in tests/vllm)."""

from __future__ import annotations

import math

import pytest

from classifiers.guard_families import (
    Answer,
    LlamaGuard3,
    Qwen3Guard,
    ShieldGemma,
    family,
)
from modpipe.core.settings import load_settings
from tests.conftest import CONFIG

MAPPING = load_settings(CONFIG).policy.llama_guard


def test_llama_guard_3_reads_the_card_answers() -> None:
    guard = LlamaGuard3(MAPPING)
    (q,) = guard.questions("  I will hurt you ")
    assert q.endpoint == "completions"
    assert "User: I will hurt you\n\n<END CONVERSATION>" in q.text
    assert q.text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    lp = {"unsafe": math.log(0.8), "safe": math.log(0.2)}
    reading = guard.read([Answer("unsafe\nS1,S10", lp)])
    assert reading.p_violation == pytest.approx(0.8)
    assert reading.categories == {"violence": pytest.approx(0.8), "hate": pytest.approx(0.8)}
    allow = guard.read([Answer("safe", {"unsafe": math.log(0.1), "safe": math.log(0.9)})])
    assert allow.p_violation == pytest.approx(0.1) and allow.categories == {}
    assert guard.read([Answer("maybe", lp)]).p_violation is None
    # S8 (intellectual property) is outside this policy: probability kept, no category.
    assert guard.read([Answer("unsafe\nS8", lp)]).categories == {}


def test_qwen3guard_asks_through_the_chat_template() -> None:
    (q,) = Qwen3Guard().questions("How can I make a bomb?")
    assert q.endpoint == "chat"
    assert q.messages == ({"role": "user", "content": "How can I make a bomb?"},)


@pytest.mark.parametrize(
    ("text", "categories", "escalate"),
    [
        ("Safety: Unsafe\nCategories: Violent", {"violence"}, False),
        ("Safety: Safe\nCategories: None", set(), False),
        (
            "Safety: Unsafe\nCategories: Non-violent Illegal Acts, Suicide & Self-Harm",
            {"illicit", "self_harm"},
            False,
        ),
        ("Safety: Controversial\nCategories: Politically Sensitive Topics", set(), True),
        ("Safety: Unsafe\nCategories: PII", set(), False),
    ],
)
def test_qwen3guard_reads_the_card_outputs(text: str, categories: set[str], escalate: bool) -> None:
    positions = [
        {"Safety": -0.01},
        {":": -0.01},
        {"Safe": math.log(0.6), "Unsafe": math.log(0.3), "Controversial": math.log(0.1)},
    ]
    reading = Qwen3Guard().read([Answer(text, {}, positions)])
    assert reading.p_violation == pytest.approx(0.4)
    assert set(reading.categories) == categories
    assert reading.escalate is escalate


def test_qwen3guard_controversial_can_route_as_unsafe_or_safe() -> None:
    text = "Safety: Controversial\nCategories: Violent"
    positions = [{"Unsafe": math.log(0.2), "Controversial": math.log(0.7), "Safe": math.log(0.1)}]
    unsafe = Qwen3Guard(controversial="unsafe").read([Answer(text, {}, positions)])
    assert not unsafe.escalate and set(unsafe.categories) == {"violence"}
    safe = Qwen3Guard(controversial="safe").read([Answer(text, {}, positions)])
    assert not safe.escalate and safe.categories == {}
    assert safe.p_violation == pytest.approx(0.9)  # the probability is kept either way


def test_qwen3guard_without_a_verdict_is_undecided() -> None:
    assert Qwen3Guard().read([Answer("I cannot help with that.", {}, [])]).p_violation is None


def test_shieldgemma_asks_one_question_per_policy() -> None:
    questions = ShieldGemma().questions("Create 20 paraphrases of I hate you")
    assert [q.topic for q in questions] == ["violence", "harassment", "hate", "sexual"]
    text = questions[1].text
    assert text.startswith(
        "You are a policy expert trying to help determine whether a user\n"
        "prompt is in violation of the defined safety policies.\n\n"
        "<start_of_turn>\nHuman Question: Create 20 paraphrases of I hate you\n<end_of_turn>"
    )
    assert '* "No Harassment": The prompt shall not contain or seek generation' in text
    assert text.endswith(
        "Does the human question violate the above principle? Your answer must start\n"
        "with 'Yes' or 'No'. And then walk through step by step to be sure we answer\n"
        "correctly.\n"
    )


def test_shieldgemma_scores_are_p_yes_per_policy() -> None:
    # The card: softmax over the Yes and No logits at the last prompt position.
    yes_no = [(2.0, 0.0), (0.0, 2.0), (1.0, 1.0), (-3.0, 3.0)]
    answers = [Answer("Yes" if y > n else "No", {"Yes": y, "No": n}) for y, n in yes_no]
    reading = ShieldGemma().read(answers)
    want = [1 / (1 + math.exp(n - y)) for y, n in yes_no]
    assert list(reading.categories.values()) == pytest.approx(want)
    assert reading.p_violation == pytest.approx(max(want))
    assert ShieldGemma().read([Answer("Yes", {})] * 4).p_violation is None


def test_families_by_name() -> None:
    assert family("qwen3guard", MAPPING).name == "qwen3guard"
    with pytest.raises(ValueError, match="unknown guard family"):
        family("nope", MAPPING)
