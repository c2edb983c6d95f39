"""The `vllm-guard` backend: Llama Guard 3 on vLLM's `/v1/completions`.

The prompt is the model card's template, byte for byte: the fixed policy first (so
vLLM's prefix cache serves it from memory for every post), the post last as the only
`User` turn. P(unsafe) is the softmax over the `safe` and `unsafe` logprobs at the
first non-whitespace generated position. The category line (S-codes) is read from the
same generation, or from a second short one forced after "unsafe" when the model said
safe but the post is above the allow line; S-codes map onto the policy through
`llama_guard` in configs/policy.yaml. A post without a usable answer is an item error
(escalated by triage), never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from classifiers.base import Classification
from classifiers.http import VllmHttp
from modpipe.core.errors import ClassifierError
from modpipe.core.settings import Settings

GUARD_CATEGORIES = (
    "S1: Violent Crimes.",
    "S2: Non-Violent Crimes.",
    "S3: Sex Crimes.",
    "S4: Child Exploitation.",
    "S5: Defamation.",
    "S6: Specialized Advice.",
    "S7: Privacy.",
    "S8: Intellectual Property.",
    "S9: Indiscriminate Weapons.",
    "S10: Hate.",
    "S11: Self-Harm.",
    "S12: Sexual Content.",
    "S13: Elections.",
    "S14: Code Interpreter Abuse.",
)
PROMPT_HEAD = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Task: Check if there is unsafe content in 'User' messages in conversations according "
    "our safety policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + "\n".join(GUARD_CATEGORIES) + "\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n"
    "User: "
)
PROMPT_TAIL = (
    "\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above "
    "conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated "
    "categories. <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
)
TOP_LOGPROBS = 20
_CODES = re.compile(r"\bS(1[0-4]|[1-9])\b")


def guard_prompt(text: str) -> str:
    """Llama Guard 3's prompt for one post (the chat template trims the message)."""
    return PROMPT_HEAD + text.strip() + PROMPT_TAIL


def p_unsafe(top_logprobs: Sequence[dict[str, float]], tokens: Sequence[str]) -> float | None:
    """Softmax of `unsafe` over {safe, unsafe} at the first non-whitespace position; None
    when neither is among the top logprobs there or a logprob is not a number."""
    for position, token in enumerate(tokens):
        if not token.strip():
            continue
        candidates = top_logprobs[position] if position < len(top_logprobs) else {}
        by_word: dict[str, float] = {}
        for tok, lp in (candidates or {}).items():
            word = tok.strip().lower()
            if word in ("safe", "unsafe"):
                by_word[word] = max(lp, by_word.get(word, -math.inf))
        if not by_word or any(not math.isfinite(v) for v in by_word.values()):
            return None
        # A word missing from the top-k is at most as likely as the least likely shown.
        floor = min(candidates.values())
        safe, unsafe = by_word.get("safe", floor), by_word.get("unsafe", floor)
        return 1.0 / (1.0 + math.exp(safe - unsafe))
    return None


def codes_in(text: str) -> list[str]:
    """The S-codes on the category line of a generation."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    rest = lines[1:] if lines and lines[0].lower() in ("safe", "unsafe") else lines
    return [f"S{m}" for line in rest[:1] for m in _CODES.findall(line)]


class GuardClassifier:
    """Llama Guard on vLLM: one completions request per batch, a second for category lines."""

    kind: Literal["cpu", "gpu"] = "gpu"

    def __init__(
        self, http: VllmHttp, model: str, mapping: dict[str, str | None], allow_below: float
    ) -> None:
        self._http = http
        self.model = model
        self._mapping = mapping
        self._allow_below = allow_below

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardClassifier:
        c = settings.classifier
        bands = settings.routing
        lowest = min([bands.allow_below, *(b.allow_below for b in bands.per_category.values())])
        http = VllmHttp(c.base_url, c.timeout_s, c.max_attempts, c.max_in_flight)
        return cls(http, c.model, settings.policy.llama_guard, lowest)

    async def _complete(self, prompts: list[str], max_tokens: int) -> list[dict[str, Any]]:
        reply = await self._http.post(
            "/completions",
            {
                "model": self.model,
                "prompt": prompts,
                "max_tokens": max_tokens,
                "temperature": 0,
                "logprobs": TOP_LOGPROBS,
            },
        )
        try:
            choices = sorted(reply["choices"], key=lambda ch: ch["index"])
        except (KeyError, TypeError) as exc:
            raise ClassifierError(f"completions reply has no choices: {exc!r}") from exc
        if len(choices) != len(prompts):
            raise ClassifierError(f"{len(choices)} choices for {len(prompts)} prompts")
        usage = reply.get("usage") or {}
        share = int(usage.get("total_tokens", 0)) // max(1, len(prompts))
        for ch in choices:
            ch["_tokens"] = share
        return choices

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        prompts = [guard_prompt(t) for t in texts]
        choices = await self._complete(prompts, max_tokens=10)
        results: list[Classification | ClassifierError] = []
        need_codes: list[int] = []
        parsed: list[tuple[float, list[str], int] | None] = []
        for i, ch in enumerate(choices):
            logprobs = ch.get("logprobs") or {}
            p = p_unsafe(logprobs.get("top_logprobs") or [], logprobs.get("tokens") or [])
            codes = codes_in(ch.get("text", ""))
            parsed.append(None if p is None else (p, codes, ch["_tokens"]))
            if p is not None and p >= self._allow_below and not codes:
                need_codes.append(i)
        if need_codes:
            forced = await self._complete([prompts[i] + "unsafe\n" for i in need_codes], 8)
            for i, ch in zip(need_codes, forced, strict=True):
                p, _, tokens = parsed[i]  # type: ignore[misc]
                parsed[i] = (p, codes_in("unsafe\n" + ch.get("text", "")), tokens + ch["_tokens"])
        for item in parsed:
            if item is None:
                results.append(ClassifierError("no safe/unsafe logprob at the first position"))
                continue
            p, codes, tokens = item
            if p >= self._allow_below and not codes:
                results.append(ClassifierError("unsafe without a category line"))
                continue
            categories = {self._mapping.get(c) for c in codes} - {None}
            results.append(Classification({c: p for c in categories if c}, tokens))
        return results

    async def aclose(self) -> None:
        await self._http.aclose()
