"""The `vllm-guard` backend for guard families that vLLM tokenizes: Qwen3Guard-Gen and
ShieldGemma, and Llama Guard 3 with `classifier.guard_endpoint: chat`.

A family (guard_families.py) turns a post into questions; each is one request:
- chat messages to `/v1/chat/completions`, where vLLM renders them with the served model's
  own chat template (Qwen3Guard; Llama Guard 3 on chat);
- the card's text prompt to `/v1/completions`, tokenized by the server (ShieldGemma).

The family's answer words (safe/unsafe, Safe/Unsafe/Controversial, Yes/No) are looked up
once at start with the server's `/tokenize`: the first token of the word and of the word
after a space. Every request asks for the log-probabilities of exactly those ids
(`logprob_token_ids`, vLLM >= 0.26, on both endpoints), so a word outside the top few is
still read. The answer position is the first generated token that is one of them (Qwen3Guard
writes "Safety: " before its verdict); each word's log-probability there is the log-sum of
its forms. The family reads text and logprobs into P(violation) and categories.

A question that fails alone (vLLM's 400 for a prompt over the context, an answer without a
verdict) is an item error for its post; a server that does not answer fails the batch.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Literal

from classifiers.base import Classification
from classifiers.guard_families import Answer, Endpoint, GuardFamily, Question, family
from classifiers.http import VllmHttp
from classifiers.vllm_guard import token_id
from classifiers.vllm_server import check_server
from modpipe.core.cost import estimate_tokens
from modpipe.core.errors import ClassifierError, ClassifierUnavailable, ConfigError
from modpipe.core.settings import Settings


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class FamilyGuardClassifier:
    """A guard family on vLLM, prompts tokenized by the server: one request per question."""

    kind: Literal["cpu", "gpu"] = "gpu"

    def __init__(self, http: VllmHttp, guard: GuardFamily, model: str) -> None:
        self._http = http
        self.guard = guard
        self.model = model
        self._words: dict[int, str] | None = None  # answer token id -> family word
        self._checking = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> FamilyGuardClassifier:
        c = settings.classifier
        endpoint: Endpoint = "chat" if c.guard_endpoint == "chat" else "completions"
        guard = family(c.guard_family, settings.policy.llama_guard, endpoint, c.controversial)
        http = VllmHttp.for_classifier(c)
        return cls(http, guard, c.model)

    async def answer_ids(self) -> dict[int, str]:
        """The served tokenizer's ids of the family's answer words, checked once with the
        server's version and model (ConfigError when two words share a first token)."""
        async with self._checking:
            if self._words is None:
                await check_server(self._http, self.model)
                words: dict[int, str] = {}
                for word in self.guard.words:
                    for form in (word, " " + word):
                        body = {"model": self.model, "prompt": form, "add_special_tokens": False}
                        tokens = (await self._http.post("/tokenize", body)).get("tokens") or []
                        if not tokens or not isinstance(tokens[0], int):
                            raise ConfigError(f"vLLM's /tokenize gave no token for {form!r}")
                        if words.setdefault(tokens[0], word) != word:
                            raise ConfigError(
                                f"{self.model}: {word!r} and {words[tokens[0]]!r} start with "
                                f"the same token; {self.guard.name} cannot be read from it"
                            )
                self._words = words
        return self._words

    def _body(self, q: Question, ids: list[int]) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.guard.max_tokens,
            "temperature": 0,
            "logprob_token_ids": ids,
            "return_tokens_as_token_ids": True,
        }
        if q.endpoint == "chat":
            return "/v1/chat/completions", {**body, "messages": list(q.messages), "logprobs": True}
        return "/v1/completions", {**body, "prompt": q.text, "logprobs": 1}

    @staticmethod
    def _positions(choice: dict[str, Any], chat: bool) -> list[tuple[int | None, dict[int, float]]]:
        """(generated token id, {candidate id: logprob}) per generated position; the two
        endpoints put the same numbers in different shapes."""
        lp = choice.get("logprobs") or {}
        if chat:
            steps = [
                (s["token"], [(c["token"], c["logprob"]) for c in s["top_logprobs"]])
                for s in lp.get("content") or []
            ]
        else:
            names, tops = lp.get("tokens") or [], lp.get("top_logprobs") or []
            steps = [(n, list((c or {}).items())) for n, c in zip(names, tops, strict=False)]
        out: list[tuple[int | None, dict[int, float]]] = []
        for name, cands in steps:
            ids = {token_id(str(k)): v for k, v in cands}
            out.append((token_id(str(name)), {k: v for k, v in ids.items() if k is not None}))
        return out

    async def _ask(self, q: Question, words: dict[int, str]) -> tuple[Answer, int]:
        """The answer to one question and the tokens it cost."""
        path, body = self._body(q, sorted(words))
        prompt = q.text or "".join(m["content"] for m in q.messages)
        reply = await self._http.post(path, body, tokens=estimate_tokens(prompt))
        try:
            choice = reply["choices"][0]
            chat = q.endpoint == "chat"
            text = str((choice["message"]["content"] if chat else choice["text"]) or "")
            positions = self._positions(choice, chat)
            tokens = int((reply.get("usage") or {}).get("total_tokens", 0))
        except (KeyError, TypeError, IndexError, ValueError, AttributeError) as exc:
            raise ClassifierError(f"{path}: unreadable reply: {exc!r}") from exc
        found: dict[str, list[float]] = {}
        for generated, cands in positions:
            if generated in words:
                for tid, value in cands.items():
                    if tid in words and isinstance(value, int | float):
                        found.setdefault(words[tid], []).append(float(value))
                break
        first = {w: logsumexp(vs) for w, vs in found.items()}
        return Answer(text, first), tokens

    async def _post(self, text: str, words: dict[int, str]) -> Classification | ClassifierError:
        questions = self.guard.questions(text)
        asked = await asyncio.gather(
            *(self._ask(q, words) for q in questions), return_exceptions=True
        )
        answers: list[Answer] = []
        tokens = 0
        for a in asked:
            if isinstance(a, ClassifierUnavailable):
                raise a  # the server, not the post: the batch fails
            if isinstance(a, ClassifierError):
                return a
            if isinstance(a, BaseException):
                raise a
            answers.append(a[0])
            tokens += a[1]
        reading = self.guard.read(answers)
        if reading.p_violation is None:
            return ClassifierError(f"no {self.guard.name} verdict in {answers[0].text[:80]!r}")
        reason = "controversial" if reading.escalate else None
        return Classification(reading.categories, tokens, reading.p_violation, reason)

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        words = await self.answer_ids()
        return list(await asyncio.gather(*(self._post(t, words) for t in texts)))

    async def aclose(self) -> None:
        await self._http.aclose()
