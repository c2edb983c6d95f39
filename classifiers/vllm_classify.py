"""The `vllm-classify` backend: a sequence-classification fine-tune on vLLM's `/classify`.

One request per batch (`input` is the list of texts). The request asks for raw logits
(`use_activation: false`) and `classifier.activation` turns them into probabilities here,
whatever vLLM would have applied: its pooler picks sigmoid for a model whose config says
`problem_type: multi_label_classification`, softmax otherwise, so taking its output and
squashing it again would apply an activation twice. `softmax`: one exclusive class per text
(a single-label head, trained with cross-entropy); `sigmoid`: each class on its own (a
multi-label head, trained with binary cross-entropy). `classifier.labels` names each class's
policy category in class-index order (null for a non-violating class).

`truncate_prompt_tokens: -1` makes vLLM cut a text longer than the served context to the
context instead of failing the whole batch with HTTP 400; such a post is judged on its first
`max_model_len` tokens, as the fine-tune was trained.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Literal

from classifiers.base import Classification
from classifiers.http import VllmHttp, server_root
from classifiers.vllm_server import ServedModel, check_server
from modpipe.core.errors import ClassifierError, ConfigError
from modpipe.core.settings import Settings

Activation = Literal["softmax", "sigmoid"]


def activate(logits: list[float], activation: Activation) -> list[float]:
    """Class probabilities from raw logits (softmax shifted by the maximum for stability)."""
    if activation == "sigmoid":
        return [1 / (1 + math.exp(-min(max(v, -700.0), 700.0))) for v in logits]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


class SequenceClassifier:
    """A fine-tuned classifier; class probabilities mapped onto policy categories."""

    kind: Literal["cpu", "gpu"] = "gpu"

    def __init__(
        self, http: VllmHttp, model: str, labels: list[str | None], activation: Activation
    ) -> None:
        self._http = http
        self.model = model
        self._labels = labels
        self._activation = activation
        self._served: ServedModel | None = None
        self._checking = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SequenceClassifier:
        c = settings.classifier
        if not c.labels:
            raise ConfigError("vllm-classify needs classifier.labels (one per class)")
        if c.activation == "softmax" and len(c.labels) < 2:
            raise ConfigError("classifier.activation softmax needs two or more labels")
        http = VllmHttp(server_root(c.base_url), c.timeout_s, c.max_attempts, c.max_in_flight)
        return cls(http, c.model, list(c.labels), c.activation)

    async def served(self) -> ServedModel:
        """The server's version and context length, checked once."""
        async with self._checking:
            if self._served is None:
                self._served = await check_server(self._http, self.model)
        return self._served

    def _scores(self, logits: object) -> dict[str, float] | ClassifierError:
        if not isinstance(logits, list) or len(logits) != len(self._labels):
            return ClassifierError(f"expected {len(self._labels)} class logits")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in logits):
            return ClassifierError("a class logit is not a finite number")
        scores: dict[str, float] = {}
        for label, v in zip(self._labels, activate(logits, self._activation), strict=True):
            if label is not None:
                scores[label] = max(scores.get(label, 0.0), v)
        return scores

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        # A 200 reply of the wrong shape is the service failing, not a bug to stop on:
        # the batch goes where triage.on_classifier_failure says, like a 5xx.
        try:
            return await self._classify(texts)
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            raise ClassifierError(f"unreadable reply from vLLM: {exc!r}") from exc

    async def _classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        await self.served()
        reply = await self._http.post(
            "/classify",
            {
                "model": self.model,
                "input": list(texts),
                "use_activation": False,
                "truncate_prompt_tokens": -1,
            },
        )
        data = reply.get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise ClassifierError(f"/classify returned {type(data).__name__} for {len(texts)}")
        usage = reply.get("usage") or {}
        share = int(usage.get("prompt_tokens", 0)) // max(1, len(texts))
        results: list[Classification | ClassifierError] = []
        for item in sorted(data, key=lambda d: d.get("index", 0)):
            scores = self._scores(item.get("probs"))
            results.append(
                scores if isinstance(scores, ClassifierError) else Classification(scores, share)
            )
        return results

    async def aclose(self) -> None:
        await self._http.aclose()
