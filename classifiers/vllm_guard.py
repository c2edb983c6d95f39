"""The `vllm-guard` backend: Llama Guard 3 on vLLM's `/v1/completions`.

Each prompt is sent as token ids built here (guard_prompt.py): the model card's template,
one BOS, a post that cannot inject special tokens. The fixed policy comes first, so vLLM's
prefix cache serves it from memory for every post. P(unsafe) is the two-way softmax of the
`unsafe` and `safe` logprobs at the first generated word, both asked for by token id
(`logprob_token_ids`, vLLM >= 0.26). The category line (S-codes) is read from the same
generation, or from a second one forced after "unsafe" when the model said safe but the
post is above the allow line; S-codes map onto the policy through `llama_guard` in
configs/policy.yaml. A post without a usable answer, or too long for the served context,
is an item error (escalated by triage) that costs only itself, never a guess.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from typing import Any, Literal

from classifiers.base import Classification
from classifiers.guard_prompt import MAX_TOKENS, GuardPrompt, guard_text, load_tokenizer
from classifiers.http import VllmHttp
from classifiers.vllm_server import ServedModel, check_server
from modpipe.core.errors import ClassifierError, ConfigError
from modpipe.core.settings import Settings

_CODES = re.compile(r"\bS(1[0-4]|[1-9])\b")
_ID = "token_id:"
# Words, digits, accents, an emoji and CJK: enough to tell two tokenizers apart.
TOKENIZER_PROBE = "Is this the same tokenizer? Ünïcödé 42 🚀 日本語"


def token_id(name: str) -> int | None:
    """The id in vLLM's `token_id:N` form (return_tokens_as_token_ids)."""
    return int(name[len(_ID) :]) if name.startswith(_ID) and name[len(_ID) :].isdigit() else None


def p_unsafe(logprobs: dict[str, Any], prompt: GuardPrompt) -> float | None:
    """Softmax of `unsafe` over {safe, unsafe} at the first non-whitespace generated token;
    None when that token is neither word, or a logprob is missing or not a number."""
    tokens = logprobs.get("tokens") or []
    top = logprobs.get("top_logprobs") or []
    for position, name in enumerate(tokens):
        token = token_id(str(name))
        if token is None:
            return None
        if not prompt.token_name(token).strip():
            continue
        if token not in (prompt.safe_id, prompt.unsafe_id) or position >= len(top):
            return None
        candidates = top[position] or {}
        safe = candidates.get(f"{_ID}{prompt.safe_id}")
        unsafe = candidates.get(f"{_ID}{prompt.unsafe_id}")
        if not isinstance(safe, int | float) or not isinstance(unsafe, int | float):
            return None
        if not (math.isfinite(safe) and math.isfinite(unsafe)):
            return None
        # vLLM clamps logprobs at -9999, so the difference may overflow exp().
        diff = min(max(safe - unsafe, -700.0), 700.0)
        return 1.0 / (1.0 + math.exp(diff))
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
        self,
        http: VllmHttp,
        prompt: GuardPrompt,
        model: str,
        mapping: dict[str, str | None],
        allow_below: float,
    ) -> None:
        self._http = http
        self._prompt = prompt
        self.model = model
        self._mapping = mapping
        self._allow_below = allow_below
        self._served: ServedModel | None = None
        self._checking = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardClassifier:
        c = settings.classifier
        bands = settings.routing
        lowest = min([bands.allow_below, *(b.allow_below for b in bands.per_category.values())])
        prompt = GuardPrompt(load_tokenizer(c.tokenizer_path))
        http = VllmHttp.for_classifier(c)
        return cls(http, prompt, c.model, settings.policy.llama_guard, lowest)

    async def served(self) -> ServedModel:
        """The server's version and context length, and its tokenizer, checked once."""
        async with self._checking:
            if self._served is None:
                served = await check_server(self._http, self.model)
                await self._check_tokenizer()
                self._served = served
        return self._served

    async def _check_tokenizer(self) -> None:
        """The ids built here must be the served model's: vLLM's `/tokenize` of a rendered
        prompt (no BOS added: the text has its own) must give the same ids."""
        text = guard_text(TOKENIZER_PROBE)
        reply = await self._http.post(
            "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
        )
        theirs, ours = reply.get("tokens"), self._prompt.ids(TOKENIZER_PROBE)
        if theirs != ours:
            raise ConfigError(
                f"{self.model}'s tokenizer on the server is not the one in use here "
                "(classifier.tokenizer_path): vllm-guard needs a Llama 3 tokenizer model"
            )

    async def _complete(self, prompts: list[list[int]]) -> list[dict[str, Any]]:
        reply = await self._http.post(
            "/v1/completions",
            {
                "model": self.model,
                "prompt": prompts,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "logprobs": 1,
                "logprob_token_ids": [self._prompt.safe_id, self._prompt.unsafe_id],
                "return_tokens_as_token_ids": True,
                # The ids carry their own BOS; a text prompt would get a second one.
                "add_special_tokens": False,
            },
            tokens=sum(map(len, prompts)),
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
        # A 200 reply of the wrong shape is the service failing, not a bug to stop on:
        # the batch goes where triage.on_classifier_failure says, like a 5xx.
        try:
            return await self._classify(texts)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            raise ClassifierError(f"unreadable reply from vLLM: {exc!r}") from exc

    async def _classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        served = await self.served()
        # A prompt over the context fails vLLM's whole request (HTTP 400), so a long post
        # stays out of the batch; the forced pass adds its own tokens to the same prompt.
        budget = served.max_model_len - MAX_TOKENS - len(self._prompt.forced_ids)
        results: list[Classification | ClassifierError | None] = [None] * len(texts)
        prompts: dict[int, list[int]] = {}
        for i, text in enumerate(texts):
            ids = self._prompt.ids(text)
            if len(ids) > budget:
                results[i] = ClassifierError(
                    f"post is a {len(ids)}-token prompt; the served context allows {budget}"
                )
            else:
                prompts[i] = ids
        order = list(prompts)
        choices = await self._complete([prompts[i] for i in order]) if order else []
        parsed: dict[int, tuple[float, list[str], int]] = {}
        need_codes: list[int] = []
        for i, ch in zip(order, choices, strict=True):
            p = p_unsafe(ch.get("logprobs") or {}, self._prompt)
            if p is None:
                results[i] = ClassifierError("no safe/unsafe answer at the first position")
                continue
            parsed[i] = (p, codes_in(ch.get("text", "")), ch["_tokens"])
            if p >= self._allow_below and not parsed[i][1]:
                need_codes.append(i)
        if need_codes:
            forced = await self._complete(
                [prompts[i] + self._prompt.forced_ids for i in need_codes]
            )
            for i, ch in zip(need_codes, forced, strict=True):
                p, _, tokens = parsed[i]
                parsed[i] = (p, codes_in("unsafe\n" + ch.get("text", "")), tokens + ch["_tokens"])
        for i, (p, codes, tokens) in parsed.items():
            if p >= self._allow_below and not codes:
                results[i] = ClassifierError("unsafe without a category line")
                continue
            categories = {self._mapping.get(c) for c in codes} - {None}
            results[i] = Classification({c: p for c in categories if c}, tokens, p_violation=p)
        return [r if r is not None else ClassifierError("not classified") for r in results]

    async def aclose(self) -> None:
        await self._http.aclose()
