"""vllm-guard for families vLLM tokenizes (vllm_family_guard.py), against replies in vLLM's
wire format from an httpx MockTransport: Qwen3Guard on /v1/chat/completions, ShieldGemma
on /v1/completions, the answer words asked for by token id, and per-post failures."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from classifiers import build_classifier
from classifiers.base import Classification
from classifiers.guard_families import Qwen3Guard, ShieldGemma
from classifiers.http import VllmHttp
from classifiers.registry import FAMILY_GUARD, backend_path
from classifiers.vllm_family_guard import FamilyGuardClassifier
from modpipe.core.errors import ClassifierError, ClassifierUnavailable, ConfigError

VOCAB = {
    "Safe": 10, " Safe": 11, "Unsafe": 12, " Unsafe": 13, "Controversial": 14,
    " Controversial": 15, "Yes": 20, " Yes": 21, "No": 22, " No": 23,
    "Safety": 1, ":": 2, "\n": 3, "Categories": 4, " Violent": 5, " None": 6,
}  # fmt: skip
NAMES = {v: k for k, v in VOCAB.items()}


def tid(token: str) -> str:
    return f"token_id:{VOCAB[token]}"


class FakeVllm:
    """Answers as vLLM 0.32 does; `verdicts` maps a post to (Qwen3Guard text tokens,
    the verdict position's probabilities by word id) or to a ShieldGemma P(Yes)."""

    def __init__(self, vocab: dict[str, int] = VOCAB) -> None:
        self.vocab = vocab
        self.bodies: list[tuple[str, dict[str, Any]]] = []
        self.status: dict[str, int] = {}  # post substring -> HTTP status

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/version":
            return httpx.Response(200, json={"version": "0.32.0"})
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "m", "max_model_len": 1024}]})
        body = json.loads(request.content)
        self.bodies.append((path, body))
        if path == "/tokenize":
            return httpx.Response(200, json={"tokens": [self.vocab[body["prompt"]], 99]})
        prompt = json.dumps(body.get("messages") or body.get("prompt"))
        for marker, status in self.status.items():
            if marker in prompt:
                return httpx.Response(status, json={"error": {"message": "too long"}})
        if path == "/v1/chat/completions":
            return self._qwen(body["messages"][0]["content"], body["logprob_token_ids"])
        return self._shieldgemma(body["prompt"], body["logprob_token_ids"])

    @staticmethod
    def _qwen(post: str, asked: list[int]) -> httpx.Response:
        word = {"kill": " Unsafe", "debate": " Controversial"}.get(post.split()[0], " Safe")
        category = " Violent" if word != " Safe" else " None"
        tokens = ["Safety", ":", word, "\n", "Categories", ":", category]
        verdict = {" Safe": 0.1, "Safe": 0.05, " Unsafe": 0.2, "Unsafe": 0.05}
        verdict |= {" Controversial": 0.5, "Controversial": 0.1}
        steps = []
        for token in tokens:
            probs = verdict if token == word else {}
            top = [
                {"token": f"token_id:{i}", "logprob": math.log(probs.get(NAMES[i], 1e-9))}
                for i in asked
            ]
            steps.append({"token": tid(token), "logprob": -0.1, "top_logprobs": top})
        text = "".join(tokens)
        return httpx.Response(
            200,
            json={
                "choices": [
                    {"index": 0, "message": {"content": text}, "logprobs": {"content": steps}}
                ],
                "usage": {"total_tokens": 40},
            },
        )

    @staticmethod
    def _shieldgemma(prompt: str, asked: list[int]) -> httpx.Response:
        p_yes = 0.9 if "No Harassment" in prompt and "idiot" in prompt else 0.1
        lp = {"Yes": math.log(p_yes), "No": math.log(1 - p_yes)}
        answer = "Yes" if p_yes > 0.5 else "No"
        top = {f"token_id:{i}": lp.get(NAMES[i], -30.0) for i in asked}
        logprobs = {"tokens": [tid(answer)], "top_logprobs": [top]}
        reply = {"choices": [{"index": 0, "text": answer, "logprobs": logprobs}]}
        return httpx.Response(200, json={**reply, "usage": {"total_tokens": 100}})


def guard_on(fake: FakeVllm, family: Any) -> FamilyGuardClassifier:
    http = VllmHttp("http://vllm", 5.0, 1, 4, transport=httpx.MockTransport(fake.handler))
    return FamilyGuardClassifier(http, family, "m")


async def test_qwen3guard_reads_the_verdict_word_asked_for_by_id() -> None:
    fake = FakeVllm()
    out = await guard_on(fake, Qwen3Guard()).classify(["kill them", "hello", "debate this"])
    unsafe, safe, controversial = out
    # P(Unsafe) + P(Controversial) over the three words, each the sum of its two forms.
    assert isinstance(unsafe, Classification)
    assert unsafe.p_violation == pytest.approx(0.85 / 1.0)
    assert unsafe.scores == {"violence": pytest.approx(0.85)} and unsafe.escalate is None
    assert isinstance(safe, Classification) and safe.scores == {} and safe.escalate is None
    assert safe.p_violation == pytest.approx(0.85)  # the allow keeps the model's number
    assert isinstance(controversial, Classification) and controversial.escalate == "controversial"
    assert unsafe.tokens == 40
    chat = [b for path, b in fake.bodies if path == "/v1/chat/completions"]
    assert chat[1]["messages"] == [{"role": "user", "content": "hello"}]
    assert chat[1]["logprobs"] is True and chat[1]["return_tokens_as_token_ids"] is True
    assert chat[1]["logprob_token_ids"] == sorted(
        VOCAB[w] for w in VOCAB if w.strip() in Qwen3Guard.words
    )


async def test_controversial_routes_as_configured() -> None:
    out = await guard_on(FakeVllm(), Qwen3Guard(controversial="unsafe")).classify(["debate x"])
    assert isinstance(out[0], Classification) and out[0].escalate is None
    assert out[0].scores == {"violence": pytest.approx(0.85)}


async def test_shieldgemma_asks_each_policy_on_completions() -> None:
    fake = FakeVllm()
    (result,) = await guard_on(fake, ShieldGemma()).classify(["you idiot"])
    assert isinstance(result, Classification)
    assert result.scores == pytest.approx(
        {"violence": 0.1, "harassment": 0.9, "hate": 0.1, "sexual": 0.1}
    )
    assert result.p_violation == pytest.approx(0.9) and result.tokens == 400
    sent = [b for path, b in fake.bodies if path == "/v1/completions"]
    assert len(sent) == 4 and all(b["logprobs"] == 1 for b in sent)
    assert all(b["max_tokens"] == 1 for b in sent)  # only the first token is read
    assert all("Human Question: you idiot" in b["prompt"] for b in sent)


async def test_a_post_the_server_refuses_costs_only_itself() -> None:
    fake = FakeVllm()
    fake.status["toolong"] = 400
    out = await guard_on(fake, Qwen3Guard()).classify(["toolong post", "hello"])
    assert isinstance(out[0], ClassifierError) and "HTTP 400" in str(out[0])
    assert isinstance(out[1], Classification)


async def test_a_server_error_fails_the_batch() -> None:
    fake = FakeVllm()
    fake.status["hello"] = 503
    with pytest.raises(ClassifierUnavailable):
        await guard_on(fake, Qwen3Guard()).classify(["hello", "kill it"])


async def test_words_with_one_first_token_are_refused_at_start() -> None:
    fake = FakeVllm({**VOCAB, "Unsafe": VOCAB["Safe"]})
    with pytest.raises(ConfigError, match="same token"):
        await guard_on(fake, Qwen3Guard()).classify(["hello"])


def test_configuration_chooses_the_family_and_its_path(make_settings) -> None:
    def built(**classifier: Any) -> Any:
        settings = make_settings(classifier={"backend": "vllm-guard", **classifier})
        return settings, backend_path(settings)

    assert built()[1] == "classifiers.vllm_guard:GuardClassifier"
    assert built(guard_endpoint="chat")[1] == FAMILY_GUARD
    settings, path = built(guard_family="qwen3guard", controversial="safe")
    assert path == FAMILY_GUARD
    clf = build_classifier(settings)
    assert clf.backend.guard.name == "qwen3guard"  # type: ignore[attr-defined]
    assert built(guard_family="shieldgemma")[1] == FAMILY_GUARD
