"""The providers through the real openai SDK over httpx.MockTransport: the wire format both
ways and every failure translated into modpipe's errors, with no server and no socket."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from escalation.providers import ChatProvider, ModerationProvider
from modpipe.core.cost import CostModel
from modpipe.core.errors import InvalidOutput, ProviderError, ProviderUnavailable
from modpipe.core.settings import Settings

Handler = Callable[[httpx.Request], httpx.Response]


def sdk(handler: Handler) -> openai.AsyncOpenAI:
    """The SDK as the product builds it (no SDK retries), its HTTP answered by `handler`."""
    return openai.AsyncOpenAI(
        api_key="test",
        base_url="http://provider.test/v1",
        max_retries=0,
        # openai 3.x annotates http_client as httpx2's client; an httpx one works the same.
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),  # type: ignore[arg-type]
    )


def chat(settings: Settings, handler: Handler) -> ChatProvider:
    return ChatProvider(sdk(handler), "gpt-4.1-mini", settings.policy, CostModel(settings.prices))


def completion(content: str | None, refusal: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4.1-mini",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "refusal": refusal},
            }
        ],
        "usage": {"prompt_tokens": 400, "completion_tokens": 30, "total_tokens": 430},
        **extra,
    }


def answer(**kw: Any) -> str:
    return json.dumps(
        {"action": "block", "categories": ["harassment"], "confidence": 0.9, "rationale": "r"} | kw
    )


async def test_chat_sends_the_strict_schema_and_reads_the_verdict(settings: Settings) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/chat/completions"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=completion(answer()))

    provider = chat(settings, handler)
    verdict = await provider.decide("you idiot")
    await provider.aclose()
    body = seen[0]
    assert body["model"] == "gpt-4.1-mini" and body["temperature"] == 0
    assert body["response_format"]["json_schema"]["strict"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '"you idiot"' in body["messages"][1]["content"]
    assert (verdict.action, verdict.categories) == ("block", ["harassment"])
    assert verdict.scores == {"harassment": 0.9}
    assert (verdict.input_tokens, verdict.output_tokens) == (400, 30)
    expected = CostModel(settings.prices).frontier_usd("gpt-4.1-mini", 400, 30)
    assert verdict.cost_usd == pytest.approx(expected) and verdict.cost_usd > 0


@pytest.mark.parametrize(
    ("response", "status", "retry_after"),
    [
        (httpx.Response(429, headers={"retry-after-ms": "250"}, json={}), "429", 0.25),
        (httpx.Response(429, headers={"retry-after": "2"}, json={}), "429", 2.0),
        (httpx.Response(429, json={}), "429", None),
        (httpx.Response(503, headers={"retry-after": "1"}, json={}), "5xx", 1.0),
        (httpx.Response(500, json={"error": {"message": "boom"}}), "5xx", None),
    ],
)
async def test_overload_is_retryable_with_the_servers_retry_after(
    settings: Settings, response: httpx.Response, status: str, retry_after: float | None
) -> None:
    provider = chat(settings, lambda request: response)
    with pytest.raises(ProviderUnavailable) as info:
        await provider.decide("x")
    assert (info.value.status, info.value.retry_after) == (status, retry_after)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("error", "status"),
    [(httpx.ConnectError("refused"), "connection"), (httpx.ReadTimeout("slow"), "timeout")],
)
async def test_transport_failures_are_retryable(
    settings: Settings, error: Exception, status: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(ProviderUnavailable) as info:
        await chat(settings, handler).decide("x")
    assert info.value.status == status


async def test_a_rejected_request_is_not_retried(settings: Settings) -> None:
    provider = chat(settings, lambda r: httpx.Response(400, json={"error": {"message": "bad"}}))
    with pytest.raises(ProviderError) as info:
        await provider.decide("x")
    assert not isinstance(info.value, ProviderUnavailable) and not info.value.retryable


@pytest.mark.parametrize(
    ("response", "needle"),
    [
        (httpx.Response(200, json=completion(None, refusal="I can't")), "refused"),
        (httpx.Response(200, json=completion("{not json")), "schema"),
        (httpx.Response(200, json=completion(answer(categories=["spam"]))), "unknown"),
        (httpx.Response(200, json={**completion(answer()), "choices": []}), "no choices"),
        (
            httpx.Response(
                200,
                content=b'{"id": "x", "choices": [',
                headers={"content-type": "application/json"},
            ),
            "unreadable",
        ),
    ],
)
async def test_bad_replies_are_invalid_output(
    settings: Settings, response: httpx.Response, needle: str
) -> None:
    with pytest.raises(InvalidOutput, match=needle):
        await chat(settings, lambda request: response).decide("x")


def moderation_reply(scores: dict[str, float]) -> dict[str, Any]:
    return {
        "id": "modr-1",
        "model": "omni-moderation-latest",
        "results": [
            {
                "flagged": False,
                "categories": {c: s >= 0.5 for c, s in scores.items()},
                "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in scores},
            }
        ],
    }


async def test_moderation_scores_fold_onto_the_policy(settings: Settings) -> None:
    theirs = dict.fromkeys(settings.policy.openai_moderation, 0.01)
    theirs["harassment"] = 0.97
    provider = ModerationProvider(
        sdk(lambda request: httpx.Response(200, json=moderation_reply(theirs))),
        "omni-moderation-latest",
        settings.policy,
        block_above=0.5,
    )
    verdict = await provider.decide("x")
    ours = settings.policy.openai_moderation["harassment"]
    assert verdict.action == "block" and verdict.categories == [ours]
    assert verdict.scores[ours] == 0.97 and set(verdict.scores) <= set(settings.policy.categories)
    assert verdict.cost_usd == 0.0


async def test_moderation_without_mapped_categories_is_invalid(settings: Settings) -> None:
    provider = ModerationProvider(
        sdk(lambda request: httpx.Response(200, json=moderation_reply({"made-up": 0.9}))),
        "omni-moderation-latest",
        settings.policy,
        block_above=0.5,
    )
    with pytest.raises(InvalidOutput, match="none of the mapped"):
        await provider.decide("x")


@pytest.mark.parametrize(
    ("content", "refusal", "retryable_for_reasoning"),
    [
        (None, "I can't", False),
        ("{not json", None, True),
        (answer(categories=["spam"]), None, True),
    ],
)
async def test_a_bad_reply_carries_its_bill_and_is_final_at_temperature_zero(
    settings: Settings, content: str | None, refusal: str | None, retryable_for_reasoning: bool
) -> None:
    reply = completion(content, refusal=refusal)
    expected = CostModel(settings.prices).frontier_usd("gpt-4.1-mini", 400, 30)
    with pytest.raises(InvalidOutput) as info:
        await chat(settings, lambda r: httpx.Response(200, json=reply)).decide("x")
    assert info.value.billed_usd == pytest.approx(expected) and expected > 0
    assert (info.value.billed_input_tokens, info.value.billed_output_tokens) == (400, 30)
    assert info.value.retryable is False  # temperature 0: the same post, the same reply
    reasoning = ChatProvider(
        sdk(lambda r: httpx.Response(200, json=reply)),
        "gpt-4.1-mini",
        settings.policy,
        CostModel(settings.prices),
        family="reasoning",
    )
    with pytest.raises(InvalidOutput) as info:
        await reasoning.decide("x")
    assert info.value.retryable is retryable_for_reasoning  # a refusal is final anyway


async def test_reasoning_models_get_max_completion_tokens_and_no_temperature(
    settings: Settings,
) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if "temperature" in body or "max_tokens" in body:  # what reasoning models answer
            return httpx.Response(
                400, json={"error": {"message": "Unsupported parameter: 'max_tokens'"}}
            )
        return httpx.Response(200, json=completion(answer()))

    provider = ChatProvider(
        sdk(handler), "o4-mini", settings.policy, CostModel(settings.prices), family="reasoning"
    )
    verdict = await provider.decide("x")
    assert verdict.action == "block"
    assert seen[0]["max_completion_tokens"] == 300 and "temperature" not in seen[0]


def test_the_family_is_chosen_by_configuration(make_settings: Any) -> None:
    from escalation.providers import build_provider

    settings = make_settings(
        escalation={"provider": "chat", "base_url": "http://x.test/v1", "model_family": "reasoning"}
    )
    provider = build_provider(settings)
    assert isinstance(provider, ChatProvider) and provider.family == "reasoning"


def test_a_paid_provider_without_a_key_is_a_start_error(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from escalation.providers import build_provider
    from modpipe.core.errors import ConfigError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = make_settings(escalation={"provider": "chat"})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_provider(settings)


def test_the_prompt_and_schema_are_part_of_the_cache_key(make_settings: Any) -> None:
    # A verdict obtained under one prompt is never served under another.
    from escalation import prompt

    settings = make_settings()
    policy = settings.policy
    changed = policy.model_copy(
        update={"categories": {**policy.categories, "harassment": "reworded"}}
    )
    assert prompt.fingerprint(policy) != prompt.fingerprint(changed)
    a = ChatProvider(sdk(lambda r: httpx.Response(500)), "m", policy, CostModel(settings.prices))
    b = ChatProvider(sdk(lambda r: httpx.Response(500)), "m", changed, CostModel(settings.prices))
    assert a.fingerprint != b.fingerprint
    reasoning = ChatProvider(
        sdk(lambda r: httpx.Response(500)), "m", policy, CostModel(settings.prices), "reasoning"
    )
    assert reasoning.fingerprint != a.fingerprint  # the server samples: another shape
    mod = ModerationProvider(sdk(lambda r: httpx.Response(500)), "m", policy, 0.5)
    stricter = ModerationProvider(sdk(lambda r: httpx.Response(500)), "m", policy, 0.4)
    assert mod.fingerprint != stricter.fingerprint
