"""The CPU backend: a linear model over n-grams, in process.

By default it is the model packaged with `alt-profanity-check` (a linear SVM on
TF-IDF features, calibrated, trained on public toxicity data), which scores offensive
language and maps onto one policy category. `modpipe train` writes a model directory
that this backend loads instead (see modpipe/quality/training.py).

A trained model is a skops file (`model.skops`): loading it builds only the types it
names, and only scikit-learn, NumPy and SciPy types are accepted, so a model file cannot
run code. A pickle (`model.joblib`, what `modpipe train` wrote before) could, so it is
refused with a message saying to retrain.
"""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from classifiers.base import Classification
from modpipe.core.cost import estimate_tokens
from modpipe.core.errors import ClassifierError, ConfigError
from modpipe.core.settings import Settings

PACKAGED_MODEL = "alt-profanity-check"
MODEL_FILE = "model.skops"
VOCABULARIES_FILE = "vocabularies.json"
_VOCABULARY_MARK = "_modpipe_vocabulary"  # on a saved vectorizer: its place in that file
_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.")


def save_model(estimator: Any, model_dir: Path) -> Path:
    """Write `estimator` as `model_dir/model.skops` (compressed); its path.

    The vectorizers' vocabularies go beside it as JSON (`vocabularies.json`): skops writes
    a dict entry by entry, which took 4 of the 4.5 minutes `modpipe train` spent on 25,000
    posts (500,000 n-grams); JSON takes a second and cannot run code either.
    """
    path = model_dir / MODEL_FILE
    import skops.io  # here, not at import: skops imports all of scikit-learn (~500 MB)

    vectorizers = [e for e in _estimators(estimator) if _has_vocabulary(e)]
    vocabularies = [e.vocabulary_ for e in vectorizers]
    try:
        for number, vectorizer in enumerate(vectorizers):
            del vectorizer.vocabulary_
            setattr(vectorizer, _VOCABULARY_MARK, number)
        skops.io.dump(estimator, path, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
    finally:  # the caller's estimator is left as it was
        for vectorizer, vocabulary in zip(vectorizers, vocabularies, strict=True):
            delattr(vectorizer, _VOCABULARY_MARK)
            vectorizer.vocabulary_ = vocabulary
    as_json = [{term: int(column) for term, column in v.items()} for v in vocabularies]
    (model_dir / VOCABULARIES_FILE).write_text(json.dumps(as_json, ensure_ascii=False))
    return path


def load_model(model_dir: Path) -> Any:
    """The estimator in `model_dir`, built from scikit-learn, NumPy and SciPy types only."""
    path = model_dir / MODEL_FILE
    if not path.exists() and (model_dir / "model.joblib").exists():
        raise ConfigError(
            f"classifier.model_path {model_dir} holds model.joblib, a pickle that can run "
            "code when loaded; modpipe loads only model.skops: retrain it with `modpipe "
            "train` (same data and options)"
        )
    import skops.io  # here, not at import: skops imports all of scikit-learn (~500 MB)

    named = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in named if not t.startswith(_TRUSTED_MODULES)]
    if foreign:
        raise ConfigError(
            f"classifier.model_path {model_dir}: {MODEL_FILE} names types outside "
            f"scikit-learn, NumPy and SciPy, refused: {', '.join(sorted(foreign))}"
        )
    estimator = skops.io.load(path, trusted=named)
    marked = [e for e in _estimators(estimator) if hasattr(e, _VOCABULARY_MARK)]
    if marked:
        vocabularies = json.loads((model_dir / VOCABULARIES_FILE).read_text())
        for vectorizer in marked:
            vectorizer.vocabulary_ = vocabularies[getattr(vectorizer, _VOCABULARY_MARK)]
            delattr(vectorizer, _VOCABULARY_MARK)
    return estimator


def _has_vocabulary(item: Any) -> bool:
    return isinstance(getattr(item, "vocabulary_", None), dict)


def _estimators(estimator: Any) -> list[Any]:
    """`estimator` and every scikit-learn estimator inside it (pipelines, unions, stacks)."""
    from sklearn.base import BaseEstimator

    found: list[Any] = []
    seen: set[int] = set()
    stack = [estimator]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BaseEstimator):
            found.append(item)
            # Not into dicts: vocabularies themselves, and name->estimator views of lists.
            stack.extend(v for v in vars(item).values() if not isinstance(v, dict))
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


class CpuClassifier:
    """Any scikit-learn estimator with `predict_proba` over raw texts."""

    kind: Literal["cpu", "gpu"] = "cpu"

    def __init__(self, estimator: Any, category: str, model: str) -> None:
        self._estimator = estimator
        self._category = category
        self.model = model

    @classmethod
    def from_settings(cls, settings: Settings) -> CpuClassifier:
        """The backend `classifier.backend: cpu` names."""
        return cls.load(settings.classifier.model_path, settings.policy.cpu_category)

    @classmethod
    def load(cls, model_dir: Path | None, category: str) -> CpuClassifier:
        """The model in `model_dir` (from `modpipe train`), else the packaged one."""
        if model_dir is None:
            from profanity_check import profanity_check as packaged
            from sklearn.pipeline import make_pipeline

            estimator = make_pipeline(packaged.vectorizer, packaged.model)
            return cls(estimator, category, PACKAGED_MODEL)
        try:
            meta = json.loads((model_dir / "meta.json").read_text())
            estimator = load_model(model_dir)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(
                f"classifier.model_path {model_dir}: cannot load model: {exc}"
            ) from exc
        return cls(estimator, meta.get("category", category), meta["name"])

    def predict(self, texts: Sequence[str]) -> list[float]:
        """P(violating) per text, synchronously."""
        return [float(p) for p in self._estimator.predict_proba(list(texts))[:, 1]]

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        # A worker thread keeps the event loop (Kafka heartbeats, fetches) responsive.
        probs = await asyncio.to_thread(self.predict, texts)
        return [
            Classification({self._category: p}, estimate_tokens(t), p_violation=p)
            for p, t in zip(probs, texts, strict=True)
        ]

    async def aclose(self) -> None:
        return None
