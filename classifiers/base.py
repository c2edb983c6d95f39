"""The classifier interface every backend implements. It imports no backend (see registry)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from modpipe.core.errors import ClassifierError

Scores = dict[str, float]


@dataclass(frozen=True, slots=True)
class Classification:
    """Scores for one text, and the tokens the backend spent on it (for the cost model).

    `p_violation`: the backend's own probability that the text violates the policy at all,
    kept even when it allows (a guard's P(unsafe); for a classifier head, one minus the
    non-violating classes' share, or the highest label under sigmoid). None where the
    backend has no such number. It rides on verdicts and escalations so that the tier can
    be evaluated and calibrated on what it actually said.
    """

    scores: Scores
    tokens: int
    p_violation: float | None = None


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
