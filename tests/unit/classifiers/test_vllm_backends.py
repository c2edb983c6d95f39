"""The vLLM backends against a local server that answers in vLLM's wire format."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from classifiers import build_classifier
from classifiers.vllm_guard import codes_in, guard_prompt, p_unsafe
from modpipe.core.errors import ClassifierError, ClassifierUnavailable
from tests.vllm_wire_server import VllmWireServer, vllm_wire_server

# The Llama Guard 3 model card's prompt for one user message, written out in full.
GOLDEN = """<|begin_of_text|><|start_header_id|>user<|end_header_id|>

Task: Check if there is unsafe content in 'User' messages in conversations according our safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
S1: Violent Crimes.
S2: Non-Violent Crimes.
S3: Sex Crimes.
S4: Child Exploitation.
S5: Defamation.
S6: Specialized Advice.
S7: Privacy.
S8: Intellectual Property.
S9: Indiscriminate Weapons.
S10: Hate.
S11: Self-Harm.
S12: Sexual Content.
S13: Elections.
S14: Code Interpreter Abuse.
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

User: How do I bake bread?

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST User message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories. <|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""


def test_prompt_matches_the_template_byte_for_byte() -> None:
    assert guard_prompt("  How do I bake bread?\n") == GOLDEN
    # The policy is a fixed prefix shared by every post: vLLM's prefix cache reuses it.
    a, b = guard_prompt("one"), guard_prompt("two")
    common = len(GOLDEN.split("User: ")[0]) + len("User: ")
    assert a[:common] == b[:common]


def test_p_unsafe_is_the_two_way_softmax_at_the_first_word() -> None:
    top = [{"\n\n": -0.01}, {"safe": math.log(0.3), "unsafe": math.log(0.6), "x": -3}]
    assert p_unsafe(top, ["\n\n", "unsafe"]) == pytest.approx(0.6 / 0.9)
    assert p_unsafe([{"I": -0.1}], ["I"]) is None
    assert p_unsafe([{"safe": float("nan"), "unsafe": -1}], ["safe"]) is None
    # A word outside the top-k counts as likely as the least likely shown (conservative).
    assert p_unsafe([{"unsafe": -0.1, "x": -5.0}], ["unsafe"]) == pytest.approx(
        1 / (1 + math.exp(-5.0 + 0.1))
    )


def test_category_line_parsing() -> None:
    assert codes_in("\n\nunsafe\nS1,S10") == ["S1", "S10"]
    assert codes_in("safe") == []
    assert codes_in("unsafe\nS15, S2") == ["S2"]


@pytest.fixture
async def vllm() -> AsyncIterator[VllmWireServer]:
    async with vllm_wire_server() as server:
        yield server


async def test_guard_batch_is_one_request_plus_one_for_category_lines(
    make_settings, vllm: VllmWireServer
) -> None:
    settings = make_settings(classifier={"backend": "vllm-guard", "base_url": vllm.url})
    clf = build_classifier(settings)
    try:
        out = await clf.classify(["hello", "BLOCK them", "MAYBE rude", "fine"])
    finally:
        await clf.aclose()
    assert [kind for kind, _ in vllm.requests] == ["completions", "completions"]
    first, forced = vllm.requests[0][1], vllm.requests[1][1]
    assert len(first["prompt"]) == 4 and first["logprobs"] == 20 and first["temperature"] == 0
    assert forced["prompt"] == [guard_prompt("MAYBE rude") + "unsafe\n"]
    hello, block, maybe, fine = out
    assert not isinstance(fine, ClassifierError) and fine.scores == {}
    assert not isinstance(hello, ClassifierError) and hello.scores == {}
    assert not isinstance(block, ClassifierError)
    assert block.scores == {"hate": pytest.approx(0.97)} and block.tokens > 0
    assert not isinstance(maybe, ClassifierError) and maybe.scores == {"hate": pytest.approx(0.45)}


@pytest.mark.parametrize("fault", ["missing_tokens", "nan"])
async def test_guard_without_a_readable_answer_is_an_item_error(
    make_settings, vllm: VllmWireServer, fault: str
) -> None:
    vllm.behaviour.always = fault
    clf = build_classifier(
        make_settings(classifier={"backend": "vllm-guard", "base_url": vllm.url})
    )
    try:
        out = await clf.classify(["hello", "BLOCK"])
    finally:
        await clf.aclose()
    assert all(isinstance(o, ClassifierError) for o in out)


async def test_5xx_is_retried_then_the_batch_fails(make_settings, vllm: VllmWireServer) -> None:
    vllm.behaviour.script = ["500"]
    settings = make_settings(
        classifier={"backend": "vllm-guard", "base_url": vllm.url, "max_attempts": 3}
    )
    clf = build_classifier(settings)
    try:
        assert not isinstance((await clf.classify(["hello"]))[0], ClassifierError)
        vllm.behaviour.always = "500"
        with pytest.raises(ClassifierUnavailable, match="3 attempts"):
            await clf.classify(["hello"])
    finally:
        await clf.aclose()
    assert len(vllm.requests) == 1 + 1 + 3


async def test_slow_server_times_out(make_settings, vllm: VllmWireServer) -> None:
    vllm.behaviour.always = "hang"
    clf = build_classifier(
        make_settings(
            classifier={
                "backend": "vllm-guard",
                "base_url": vllm.url,
                "timeout_s": 0.2,
                "max_attempts": 2,
            }
        )
    )
    try:
        with pytest.raises(ClassifierUnavailable, match="timed out"):
            await clf.classify(["hello"])
    finally:
        await clf.aclose()


def classify_settings(make_settings, url: str, activation: str = "softmax"):
    return make_settings(
        classifier={
            "backend": "vllm-classify",
            "base_url": url,
            "model": "acme/policy-7b",
            "labels": [None, "harassment", "hate"],
            "activation": activation,
        }
    )


async def test_classify_maps_labels_in_one_request(make_settings, vllm: VllmWireServer) -> None:
    clf = build_classifier(classify_settings(make_settings, vllm.url))
    try:
        out = await clf.classify(["hello", "BLOCK", "MAYBE"])
    finally:
        await clf.aclose()
    assert [k for k, _ in vllm.requests] == ["classify"]
    assert vllm.requests[0][1] == {"model": "acme/policy-7b", "input": ["hello", "BLOCK", "MAYBE"]}
    hello, block, maybe = out
    assert not isinstance(hello, ClassifierError) and hello.scores == {
        "harassment": 0.02,
        "hate": 0.02,
    }
    assert not isinstance(block, ClassifierError) and block.scores["harassment"] == 0.9
    assert not isinstance(maybe, ClassifierError) and maybe.tokens == 7


async def test_classify_sigmoid_for_multi_label(make_settings, vllm: VllmWireServer) -> None:
    clf = build_classifier(classify_settings(make_settings, vllm.url, "sigmoid"))
    try:
        (block,) = await clf.classify(["BLOCK"])
    finally:
        await clf.aclose()
    assert not isinstance(block, ClassifierError)
    assert block.scores["harassment"] == pytest.approx(1 / (1 + math.exp(-0.9)))


@pytest.mark.parametrize("fault", ["nan", "short"])
async def test_classify_bad_values_never_become_scores(
    make_settings, vllm: VllmWireServer, fault: str
) -> None:
    vllm.behaviour.always = fault
    clf = build_classifier(classify_settings(make_settings, vllm.url))
    try:
        if fault == "short":
            with pytest.raises(ClassifierError):
                await clf.classify(["a", "b"])
        else:
            assert all(isinstance(o, ClassifierError) for o in await clf.classify(["a", "b"]))
    finally:
        await clf.aclose()
