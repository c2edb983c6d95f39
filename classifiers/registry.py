"""Which module serves each `classifier.backend`, imported only when chosen.

The interface (base.py) knows no backend. Adding one: a module with a class that has
`from_settings(settings)` and satisfies `Classifier`, one line in BACKENDS, and the name in
the `classifier.backend` setting's Literal.
"""

from __future__ import annotations

import importlib
from typing import cast

from classifiers.base import CheckedClassifier, Classifier
from modpipe.core.settings import Settings

BACKENDS: dict[str, str] = {
    "cpu": "classifiers.cpu:CpuClassifier",
    "vllm-guard": "classifiers.vllm_guard:GuardClassifier",
    "vllm-classify": "classifiers.vllm_classify:SequenceClassifier",
}


def build_classifier(settings: Settings) -> Classifier:
    """The backend named by `classifier.backend`, built from settings, its scores checked."""
    module, _, name = BACKENDS[settings.classifier.backend].partition(":")
    backend = getattr(importlib.import_module(module), name)
    built = cast(Classifier, backend.from_settings(settings))
    return CheckedClassifier(built, settings.policy.categories)
