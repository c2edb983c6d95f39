"""The classifier interface and the factory that picks a backend from settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from modpipe.errors import ClassifierError
from modpipe.settings import Settings

Scores = dict[str, float]


@dataclass(frozen=True, slots=True)
class Classification:
    """Scores for one text, and the tokens the backend spent on it (for the cost model)."""

    scores: Scores
    tokens: int


class Classifier(Protocol):
    """Scores a batch; each item is its own result, so one bad text never fails a batch."""

    model: str
    kind: Literal["cpu", "gpu"]

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        """Score `texts`, in order. Raises ClassifierError only when the whole batch failed."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads."""
        ...


def build_classifier(settings: Settings) -> Classifier:
    """The backend named by `classifier.backend`."""
    backend = settings.classifier.backend
    if backend == "cpu":
        from classifiers.cpu import CpuClassifier

        return CpuClassifier.load(settings.classifier.model_path, settings.policy.cpu_category)
    if backend == "vllm-guard":
        from classifiers.vllm_guard import GuardClassifier

        return GuardClassifier.from_settings(settings)
    from classifiers.vllm_classify import SequenceClassifier

    return SequenceClassifier.from_settings(settings)
