"""The classifier interface every backend implements. It imports no backend (see registry)."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
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

    `escalate`: a reason to send the text to the next tier whatever the bands say (a
    guard's own "Controversial"), or None.
    """

    scores: Scores
    tokens: int
    p_violation: float | None = None
    escalate: str | None = None


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


def score_problem(scores: Scores, categories: Collection[str]) -> str | None:
    """Why `scores` cannot be routed, or None: a score that is not a finite number in
    [0, 1], or a category the policy does not know. Routing compares with `>=`, which a
    NaN fails both ways: unchecked, it would read as allow."""
    for category, p in scores.items():
        if category not in categories:
            return f"score for unknown category {category[:60]!r}"
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            return f"score for {category} is not a finite number: {p!r}"
        if not 0.0 <= p <= 1.0:
            return f"score for {category} is outside [0, 1]: {p!r}"
    return None


def checked(
    outcomes: Sequence[Classification | ClassifierError], categories: Collection[str]
) -> list[Classification | ClassifierError]:
    """`outcomes` with each unusable Classification turned into an item ClassifierError,
    which triage escalates (or sends to review) and never allows."""
    out: list[Classification | ClassifierError] = []
    for outcome in outcomes:
        if isinstance(outcome, Classification):
            problem = score_problem(outcome.scores, categories)
            if problem is not None:
                outcome = ClassifierError(f"unusable scores: {problem}")
        out.append(outcome)
    return out


class CheckedClassifier:
    """A backend behind the score check: what every caller of `build_classifier` gets."""

    def __init__(self, backend: Classifier, categories: Collection[str]) -> None:
        self.backend = backend
        self.model = backend.model
        self.kind = backend.kind
        self._categories = frozenset(categories)

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        """The backend's results, each unusable one an item error."""
        return checked(await self.backend.classify(texts), self._categories)

    async def aclose(self) -> None:
        await self.backend.aclose()
