"""`modpipe train`: a fast, strong CPU baseline from labelled posts.

Word 1-2-grams and character 2-5-grams (TF-IDF, sublinear) feed a logistic regression,
whose probabilities are close to calibrated on the training distribution. The artifact
is a directory: `model.skops` (the scikit-learn pipeline, in a format whose loading
cannot run code) and `meta.json` (name, data hash, sizes, held-out metrics), loaded by
the `cpu` backend via `classifier.model_path`.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline, make_union

from classifiers.cpu import save_model
from modpipe.quality.datasets import Labelled


def build_pipeline(prior: bool = False, folds: int = 5) -> Any:
    """The untrained estimator: texts in, predict_proba out.

    With `prior`, the n-gram model is stacked with the packaged profanity model (frozen,
    never refitted): a final logistic regression weighs the two, so a few hundred labelled
    posts refine the packaged model instead of starting from nothing (the learning loop's
    first rounds).
    """
    ngrams = _ngram_pipeline()
    if not prior:
        return ngrams
    from profanity_check import profanity_check as packaged
    from sklearn.ensemble import StackingClassifier
    from sklearn.frozen import FrozenEstimator

    profanity = FrozenEstimator(make_pipeline(packaged.vectorizer, packaged.model))
    return StackingClassifier(
        [("ngrams", ngrams), ("profanity", profanity)],
        final_estimator=LogisticRegression(),
        cv=folds,
        stack_method="predict_proba",
    )


def _ngram_pipeline() -> Any:
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True),
        TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            min_df=3,
            max_features=300_000,
            sublinear_tf=True,
        ),
    )
    return make_pipeline(features, LogisticRegression(C=4.0, max_iter=2000))


def split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffled train and held-out indices."""
    index = list(range(n))
    random.Random(seed).shuffle(index)
    cut = int(n * (1 - holdout))
    return index[:cut], index[cut:]


def train(
    data: Labelled,
    out: Path,
    category: str,
    holdout: float = 0.2,
    seed: int = 13,
    prior: bool = False,
    test: Labelled | None = None,
) -> dict[str, Any]:
    """Fit on `data` less a held-out split (or all of it when `test` is given), measure
    on the split or `test`, save to `out`."""
    if test is None:
        train_idx, test_idx = split(len(data), holdout, seed)
        fit, test = data.subset(train_idx), data.subset(test_idx)
    else:
        fit = data
    started = time.perf_counter()
    # Stacking needs every class in each of its folds: fewer folds for a rare class.
    minority = min(sum(fit.labels), len(fit) - sum(fit.labels))
    prior = prior and minority >= 2
    model = build_pipeline(prior, min(5, minority)).fit(fit.texts, fit.labels)
    seconds = time.perf_counter() - started
    probs = model.predict_proba(test.texts)[:, 1]
    both = len(set(test.labels)) == 2
    meta = {
        "name": f"tfidf-lr{'-stacked' if prior else ''}-{data.sha256[:8]}",
        "category": category,
        "data_sha256": data.sha256,
        "rows": len(data),
        "train_rows": len(fit),
        "heldout_rows": len(test),
        "positive_rate": sum(data.labels) / len(data),
        "heldout_auroc": float(roc_auc_score(test.labels, probs)) if both else None,
        "heldout_auprc": float(average_precision_score(test.labels, probs)) if both else None,
        "train_seconds": round(seconds, 1),
        "seed": seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
