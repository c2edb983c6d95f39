"""Which module serves each `classifier.backend`, imported only when chosen.

The interface (base.py) knows no backend. Adding one: a module with a class that has
`from_settings(settings)` and satisfies `Classifier`, one line in BACKENDS, and the name in
the `classifier.backend` setting's Literal.

`vllm-guard` has two modules: Llama Guard 3 on token ids built here (vllm_guard.py, the
default), and every family that vLLM tokenizes (vllm_family_guard.py): Qwen3Guard,
ShieldGemma, and Llama Guard 3 with `classifier.guard_endpoint: chat`.
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
FAMILY_GUARD = "classifiers.vllm_family_guard:FamilyGuardClassifier"


def backend_path(settings: Settings) -> str:
    """`module:Class` of the backend the classifier settings choose."""
    c = settings.classifier
    ids = c.guard_family == "llama-guard-3" and c.guard_endpoint == "ids"
    if c.backend == "vllm-guard" and not ids:
        return FAMILY_GUARD
    return BACKENDS[c.backend]


def build_classifier(settings: Settings) -> Classifier:
    """The backend named by `classifier.backend`, built from settings, its scores checked."""
    module, _, name = backend_path(settings).partition(":")
    backend = getattr(importlib.import_module(module), name)
    built = cast(Classifier, backend.from_settings(settings))
    return CheckedClassifier(built, settings.policy.categories)
