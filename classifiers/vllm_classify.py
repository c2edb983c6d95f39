"""The `vllm-classify` backend: a sequence-classification fine-tune on vLLM's `/classify`.

One request per batch (`input` is the list of texts). The request asks for raw logits
(`use_activation: false`) and `classifier.activation` turns them into probabilities here,
whatever vLLM would have applied: its pooler picks sigmoid for a model whose config says
`problem_type: multi_label_classification`, softmax otherwise, so taking its output and
squashing it again would apply an activation twice. `softmax`: one exclusive class per text
(a single-label head, trained with cross-entropy); `sigmoid`: each class on its own (a
multi-label head, trained with binary cross-entropy). `classifier.labels` names each class's
policy category in class-index order (null for a non-violating class).

Labels and activation come from the served model's own directory where
`classifier.model_dir` names it (`labels_from_model`): `id2label` gives each class's
category (a policy category, or a non-violating name such as `none`), `problem_type:
multi_label_classification` means sigmoid, anything else softmax, exactly as vLLM and
transformers read the same config. There is then no second copy to keep in sync.

Each result also carries `p_violation`: under softmax one minus the non-violating classes'
share, under sigmoid the highest violating label.

`truncate_prompt_tokens: -1` makes vLLM cut a text longer than the served context to the
context instead of failing the whole batch with HTTP 400; such a post is judged on its first
`max_model_len` tokens, as the fine-tune was trained.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from classifiers.base import Classification
from classifiers.http import VllmHttp
from classifiers.vllm_server import ServedModel, check_server
from modpipe.core.errors import ClassifierError, ConfigError
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

Activation = Literal["softmax", "sigmoid"]
# id2label names read as "no violation" (case-insensitive).
NON_VIOLATING = {"none", "safe", "benign", "ok", "clean", "neutral", "negative", "not_violating"}


def labels_from_model(
    model_dir: Path, categories: Sequence[str]
) -> tuple[list[str | None], Activation]:
    """Each class's policy category (None: non-violating) from the model's `id2label`, and
    the activation its `problem_type` implies; ConfigError for a label outside the policy."""
    path = model_dir / "config.json" if model_dir.is_dir() else model_dir
    try:
        config = json.loads(path.read_text())
        id2label = {int(k): str(v) for k, v in config["id2label"].items()}
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"classifier.model_dir: no readable id2label in {path}: {exc}") from exc
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise ConfigError(f"classifier.model_dir: id2label of {path} is not 0..n-1")
    labels: list[str | None] = []
    for i in range(len(id2label)):
        name = id2label[i]
        if name in categories:
            labels.append(name)
        elif name.lower() in NON_VIOLATING:
            labels.append(None)
        else:
            raise ConfigError(
                f"classifier.model_dir: class {i} of {path} is {name!r}, neither a policy "
                f"category {sorted(categories)} nor a non-violating name {sorted(NON_VIOLATING)}"
            )
    multi = config.get("problem_type") == "multi_label_classification"
    return labels, "sigmoid" if multi else "softmax"


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
        labels: list[str | None] = list(c.labels)
        activation: Activation = c.activation
        if c.model_dir is not None:
            if labels:
                raise ConfigError(
                    "classifier.labels and classifier.model_dir both set: the model's "
                    "id2label is the one copy; leave labels empty"
                )
            labels, activation = labels_from_model(c.model_dir, list(settings.policy.categories))
            if activation != c.activation:
                log.info(
                    "classifier.activation %s ignored: %s's problem_type means %s",
                    c.activation,
                    c.model_dir,
                    activation,
                )
        if not labels:
            raise ConfigError(
                "vllm-classify needs classifier.model_dir (the model directory) "
                "or classifier.labels (one per class)"
            )
        if activation == "softmax" and len(labels) < 2:
            raise ConfigError("classifier.activation softmax needs two or more labels")
        http = VllmHttp.for_classifier(c)
        return cls(http, c.model, labels, activation)

    async def served(self) -> ServedModel:
        """The server's version and context length, checked once."""
        async with self._checking:
            if self._served is None:
                self._served = await check_server(self._http, self.model)
        return self._served

    def _scores(self, logits: object, tokens: int) -> Classification | ClassifierError:
        if not isinstance(logits, list) or len(logits) != len(self._labels):
            return ClassifierError(f"expected {len(self._labels)} class logits")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in logits):
            return ClassifierError("a class logit is not a finite number")
        scores: dict[str, float] = {}
        probs = activate(logits, self._activation)
        violating = [v for label, v in zip(self._labels, probs, strict=True) if label is not None]
        for label, v in zip(self._labels, probs, strict=True):
            if label is not None:
                scores[label] = max(scores.get(label, 0.0), v)
        if self._activation == "softmax":
            p_violation = min(1.0, sum(violating))
        else:
            p_violation = max(violating, default=0.0)
        return Classification(scores, tokens, p_violation=p_violation)

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
            # Before tokenizing, ~4 characters a token sizes the timeout well enough.
            tokens=sum(len(t) // 4 + 1 for t in texts),
        )
        data = reply.get("data")
        if not isinstance(data, list) or len(data) != len(texts):
            raise ClassifierError(f"/classify returned {type(data).__name__} for {len(texts)}")
        usage = reply.get("usage") or {}
        share = int(usage.get("prompt_tokens", 0)) // max(1, len(texts))
        return [
            self._scores(item.get("probs"), share)
            for item in sorted(data, key=lambda d: d.get("index", 0))
        ]

    async def aclose(self) -> None:
        await self._http.aclose()
