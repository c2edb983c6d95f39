"""The loop closed on a real vLLM: `modpipe finetune` on a tiny base -> the merged model
directory -> `--runner pooling` -> the worker's vllm-classify, with labels and activation
read from that directory. The served scores must equal the trained model's in transformers
within 1e-4: no train/serve skew in tokenisation, BOS, truncation or activation."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
import yaml

from classifiers import build_classifier
from classifiers.base import Classification
from modpipe.core.settings import deep_merge
from tests.vllm import reference
from tests.vllm.conftest import CLASSIFY_NAME, FINETUNE_MAX_LENGTH, training_rows
from tests.vllm.server import VllmServer


def served_settings(make_settings, server: VllmServer, model_dir: Path):
    """The settings `modpipe finetune` wrote, pointed at the test's server."""
    written = yaml.safe_load((model_dir / "modpipe.yaml").read_text())
    return make_settings(
        **deep_merge(written, {"classifier": {"base_url": server.url, "model": CLASSIFY_NAME}})
    )


async def test_served_scores_equal_the_trained_model(
    make_settings, classify_server: VllmServer, classify_dir: Path
) -> None:
    settings = served_settings(make_settings, classify_server, classify_dir)
    assert settings.classifier.labels == []  # nothing configured twice
    categories = list(settings.policy.categories)
    texts = [str(r["text"]) for r in training_rows(12, seed=7)]
    texts += ["", "Ünïcödé 🚀 42 <|eot_id|> text", "word " * 400]  # empty, special, truncated
    clf = build_classifier(settings)
    try:
        out = await clf.classify(texts)
    finally:
        await clf.aclose()
    for text, result in zip(texts, out, strict=True):
        assert isinstance(result, Classification), (text[:40], result)
        logits = reference.class_logits(classify_dir, text, FINETUNE_MAX_LENGTH)
        want = [1 / (1 + math.exp(-v)) for v in logits]  # problem_type: multi-label
        got = [result.scores[c] for c in categories]
        assert got == pytest.approx(want, abs=1e-4), text[:40]
        assert result.p_violation == pytest.approx(max(want), abs=1e-4)
    # What the fine-tune learned survives serving: the last word decides.
    for row, result in zip(training_rows(12, seed=7), out, strict=False):
        assert isinstance(result, Classification)
        assert (result.scores["violence"] > 0.5) == ("violence" in row["categories"])
        assert (result.scores["hate"] > 0.5) == ("hate" in row["categories"])


def test_classify_wire_shape(classify_server: VllmServer) -> None:
    reply = httpx.post(
        f"{classify_server.root}/classify",
        json={"model": CLASSIFY_NAME, "input": ["a", "b c"], "use_activation": False},
        timeout=60,
    ).json()
    assert [d["index"] for d in reply["data"]] == [0, 1]
    assert all(len(d["probs"]) == 7 for d in reply["data"])
    assert reply["usage"]["prompt_tokens"] > 0
