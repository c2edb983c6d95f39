"""Frontier providers behind one interface, through the official `openai` SDK.

- `chat`: a chat model with strict structured outputs (escalation/prompt.py);
- `moderation`: the free `/v1/moderations` endpoint, its scores mapped onto the policy.

Both take any OpenAI-compatible `base_url`. The SDK's own retries are off: the caller
(escalation/frontier.py) retries within the post's deadline so that every attempt is
counted, fed to the circuit breaker, and bounded. openai errors become modpipe errors
here and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import openai

from escalation import prompt
from modpipe.core.cost import CostModel
from modpipe.core.errors import ConfigError, InvalidOutput, ProviderError, ProviderUnavailable
from modpipe.core.settings import Policy, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_OUTPUT_TOKENS = 300
"""The reply cap of a chat call (a verdict is far shorter); the budget reserves it.
For a reasoning model the cap includes its reasoning tokens, which are billed as output."""


@dataclass(frozen=True, slots=True)
class ProviderVerdict:
    """A frontier decision on one post and what it cost."""

    action: Literal["allow", "block"]
    categories: list[str]
    scores: dict[str, float]
    rationale: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Provider(Protocol):
    """A model that decides one post."""

    name: str
    model: str
    paid: bool
    fingerprint: str  # a hash of what shapes its verdicts besides the text (the cache key)

    async def decide(self, text: str) -> ProviderVerdict:
        """Decide `text`; raises ProviderError subclasses on failure."""
        ...

    async def aclose(self) -> None: ...


def _retry_after(response: object) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:
                return None
    return None


async def translate_errors(call: Callable[[], Awaitable[T]]) -> T:
    """Run an SDK call, turning openai's exceptions into modpipe's."""
    try:
        return await call()
    except openai.APITimeoutError as exc:
        raise ProviderUnavailable(f"timed out: {exc}", status="timeout") from exc
    except openai.APIConnectionError as exc:
        raise ProviderUnavailable(f"connection failed: {exc}", status="connection") from exc
    except openai.RateLimitError as exc:
        raise ProviderUnavailable(
            "rate limited (429)", status="429", retry_after=_retry_after(exc.response)
        ) from exc
    except openai.APIStatusError as exc:
        if exc.status_code >= 500:
            raise ProviderUnavailable(
                f"server error {exc.status_code}",
                status="5xx",
                retry_after=_retry_after(exc.response),
            ) from exc
        raise ProviderError(f"request rejected ({exc.status_code}): {exc.message}") from exc
    except (openai.APIResponseValidationError, ValueError) as exc:
        raise InvalidOutput(f"unreadable response: {exc}") from exc


def _client(settings: Settings) -> openai.AsyncOpenAI:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    if key is None and settings.provider == "chat" and settings.escalation.base_url is None:
        # Without this, every call is a 401 and every escalation quietly goes to review.
        raise ConfigError(
            "escalation.provider is chat on the OpenAI API but OPENAI_API_KEY is not set; "
            "set it, or choose escalation.provider: none (every escalation to review)"
        )
    return openai.AsyncOpenAI(
        api_key=key or "unused",  # a self-hosted base_url may take none
        base_url=settings.escalation.base_url,
        timeout=settings.escalation.timeout_s,
        max_retries=0,
    )


class ChatProvider:
    """A chat model answering the strict verdict schema.

    `family` picks the request's parameters: `chat` models get `max_tokens` and
    temperature 0, so a reply that breaks the schema (or a refusal) would come back the
    same and is not retried; `reasoning` models reject both and get
    `max_completion_tokens` (reasoning included) and their own sampling, so only a
    refusal is final. A failed attempt the server answered carries its billed usage.
    """

    name = "chat"
    paid = True

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        model: str,
        policy: Policy,
        cost: CostModel,
        family: Literal["chat", "reasoning"] = "chat",
    ) -> None:
        self._client = client
        self.model = model
        self._policy = policy
        self._cost = cost
        self._response_format = prompt.response_format(policy)
        self.family = family
        self.fingerprint = f"{prompt.fingerprint(policy)}:{family}"
        self._limits: dict[str, Any] = (
            {"max_completion_tokens": MAX_OUTPUT_TOKENS}
            if family == "reasoning"
            else {"max_tokens": MAX_OUTPUT_TOKENS, "temperature": 0}
        )

    async def decide(self, text: str) -> ProviderVerdict:
        completion = await translate_errors(
            lambda: self._client.chat.completions.create(  # type: ignore[call-overload]
                model=self.model,
                messages=prompt.messages(self._policy, text),
                response_format=self._response_format,
                **self._limits,
            )
        )
        usage = completion.usage
        tokens_in = usage.prompt_tokens if usage else 0
        tokens_out = usage.completion_tokens if usage else 0
        cost_usd = self._cost.frontier_usd(self.model, tokens_in, tokens_out)
        refusal: str | None = None
        try:
            if not completion.choices:
                raise InvalidOutput("reply has no choices")
            message = completion.choices[0].message
            refusal = getattr(message, "refusal", None)
            answer = prompt.parse_answer(message.content, refusal, self._policy)
        except InvalidOutput as exc:
            # Billed all the same; and asked again, the same model at temperature 0 (or
            # any model that refused) answers the same.
            exc.billed_usd = cost_usd
            exc.billed_input_tokens = tokens_in
            exc.billed_output_tokens = tokens_out
            exc.retryable = self.family == "reasoning" and not refusal
            raise
        return ProviderVerdict(
            action=answer.action,
            categories=sorted(answer.categories),
            scores={c: answer.confidence for c in answer.categories},
            rationale=answer.rationale,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost_usd=cost_usd,
        )

    async def aclose(self) -> None:
        await self._client.close()


class ModerationProvider:
    """OpenAI's moderation endpoint, its categories folded onto the policy (max per category)."""

    name = "moderation"
    paid = False

    def __init__(
        self, client: openai.AsyncOpenAI, model: str, policy: Policy, block_above: float
    ) -> None:
        self._client = client
        self.model = model
        self._mapping = policy.openai_moderation
        self._block_above = block_above
        shape = json.dumps([sorted(self._mapping.items()), block_above, sorted(policy.categories)])
        self.fingerprint = hashlib.sha256(shape.encode()).hexdigest()[:32]

    async def decide(self, text: str) -> ProviderVerdict:
        response = await translate_errors(
            lambda: self._client.moderations.create(model=self.model, input=text)
        )
        if not response.results:
            raise InvalidOutput("moderation reply has no results")
        raw = response.results[0].category_scores.model_dump(by_alias=True)
        scores: dict[str, float] = {}
        for theirs, ours in self._mapping.items():
            value = raw.get(theirs)
            if value is None:
                continue
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise InvalidOutput(f"moderation score for {theirs} is not a probability")
            scores[ours] = max(scores.get(ours, 0.0), float(value))
        if not scores:
            raise InvalidOutput("moderation reply has none of the mapped categories")
        violated = sorted(c for c, p in scores.items() if p >= self._block_above)
        return ProviderVerdict(
            action="block" if violated else "allow",
            categories=violated,
            scores=scores,
            rationale="",
            input_tokens=0,
            output_tokens=0,
            cost_usd=0.0,
        )

    async def aclose(self) -> None:
        await self._client.close()


def build_provider(settings: Settings) -> Provider | None:
    """The configured provider, or None for `none` (every escalation goes to review)."""
    kind = settings.provider
    if kind == "none":
        return None
    client = _client(settings)
    if kind == "chat":
        return ChatProvider(
            client,
            settings.escalation.model,
            settings.policy,
            CostModel(settings.prices),
            settings.escalation.model_family,
        )
    return ModerationProvider(
        client,
        settings.escalation.moderation_model,
        settings.policy,
        settings.escalation.moderation_block_above,
    )
