"""The `vllm-classify` backend: a sequence-classification fine-tune on vLLM's `/classify`.

One request per batch (`input` is the list of texts); `data[i].probs` are the class
probabilities in the model's label order. `classifier.labels` names each class's policy
category (or null for a non-violating class). With `activation: sigmoid` the values are
taken as logits of a multi-label head (served without vLLM's softmax) and squashed one
by one; with `softmax` they are used as they come.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from classifiers.base import Classification
from classifiers.http import VllmHttp
from modpipe.core.errors import ClassifierError
from modpipe.core.settings import Settings


def server_root(base_url: str) -> str:
    """vLLM serves /classify beside /v1, not under it."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


class SequenceClassifier:
    """A fine-tuned classifier; class probabilities mapped onto policy categories."""

    kind: Literal["cpu", "gpu"] = "gpu"

    def __init__(
        self,
        http: VllmHttp,
        model: str,
        labels: list[str | None],
        activation: Literal["softmax", "sigmoid"],
    ) -> None:
        self._http = http
        self.model = model
        self._labels = labels
        self._activation = activation

    @classmethod
    def from_settings(cls, settings: Settings) -> SequenceClassifier:
        c = settings.classifier
        if not c.labels:
            raise ClassifierError("vllm-classify needs classifier.labels (one per class)")
        http = VllmHttp(server_root(c.base_url), c.timeout_s, c.max_attempts, c.max_in_flight)
        return cls(http, c.model, list(c.labels), c.activation)

    def _scores(self, probs: object) -> dict[str, float] | ClassifierError:
        if not isinstance(probs, list) or len(probs) != len(self._labels):
            return ClassifierError(f"expected {len(self._labels)} class probabilities")
        values = []
        for v in probs:
            if not isinstance(v, int | float) or not math.isfinite(v):
                return ClassifierError("a class probability is not a finite number")
            values.append(1 / (1 + math.exp(-v)) if self._activation == "sigmoid" else float(v))
        if any(not 0.0 <= v <= 1.0 for v in values):
            return ClassifierError("a class probability is outside [0, 1]")
        scores: dict[str, float] = {}
        for label, v in zip(self._labels, values, strict=True):
            if label is not None:
                scores[label] = max(scores.get(label, 0.0), v)
        return scores

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        reply = await self._http.post("/classify", {"model": self.model, "input": list(texts)})
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
