"""Trained CPU models are skops files: loaded without running code, foreign types and old
joblib pickles refused with a message that says what to do."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pytest
import skops.io

from classifiers.cpu import MODEL_FILE, VOCABULARIES_FILE, CpuClassifier, load_model, save_model
from modpipe.core.errors import ConfigError
from modpipe.quality.datasets import Labelled
from modpipe.quality.training import build_pipeline, train

TEXTS = ["you idiot", "nice day", "go away loser", "lovely walk", "stupid jerk", "good soup"] * 8
LABELS = [1, 0, 1, 0, 1, 0] * 8


class NotAModel:
    """A type outside scikit-learn, NumPy and SciPy."""


@pytest.mark.parametrize("prior", [False, True], ids=["ngrams", "stacked"])
def test_a_trained_model_round_trips_as_skops(tmp_path: Path, prior: bool) -> None:
    meta = train(Labelled(TEXTS, LABELS, sha256="0" * 64), tmp_path, "harassment", prior=prior)
    assert (tmp_path / MODEL_FILE).is_file() and not (tmp_path / "model.joblib").exists()
    # The n-gram vocabularies are JSON beside it, not entries in the skops file.
    vocabularies = json.loads((tmp_path / VOCABULARIES_FILE).read_text())
    assert "idiot" in vocabularies[0] or "idiot" in vocabularies[1]
    loaded = CpuClassifier.load(tmp_path, "harassment")
    assert loaded.model == meta["name"]
    probs = loaded.predict(["you stupid idiot", "a lovely day"])
    assert probs[0] > probs[1]


@pytest.mark.parametrize("prior", [False, True], ids=["ngrams", "stacked"])
def test_a_saved_model_scores_exactly_as_before_saving(tmp_path: Path, prior: bool) -> None:
    fitted = build_pipeline(prior, folds=2).fit(TEXTS, LABELS)
    texts = ["you stupid idiot", "a lovely day", "jerk soup", "unseen words only"]
    before = fitted.predict_proba(texts)[:, 1]
    save_model(fitted, tmp_path)
    assert list(fitted.predict_proba(texts)[:, 1]) == list(before)  # left as it was
    assert list(load_model(tmp_path).predict_proba(texts)[:, 1]) == list(before)


def test_an_old_joblib_model_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"name": "old"}')
    joblib.dump({"anything": 1}, tmp_path / "model.joblib")
    with pytest.raises(
        ConfigError, match=r"model.joblib, a pickle .* retrain it with `modpipe train`"
    ):
        CpuClassifier.load(tmp_path, "harassment")


def test_a_model_file_naming_other_types_is_refused(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text('{"name": "foreign"}')
    skops.io.dump({"model": NotAModel()}, tmp_path / MODEL_FILE)
    with pytest.raises(
        ConfigError, match=r"outside scikit-learn, NumPy and SciPy, refused: .*NotAModel"
    ):
        CpuClassifier.load(tmp_path, "harassment")
