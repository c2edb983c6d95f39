"""`modpipe finetune` end to end on CPU: a tiny randomly initialised Llama built here from a
config (no hub download), LoRA-tuned as a multi-label classifier, merged, saved, reloaded."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytest.importorskip("peft", reason="needs the finetune extra: pip install -e '.[finetune]'")

from classifiers.vllm_classify import labels_from_model
from modpipe.cli import main
from modpipe.core.settings import load_settings
from modpipe.quality.finetune import predict, served_labels
from tests.conftest import CONFIG

BENIGN = ["lunch", "garden", "music", "coffee", "weekend", "sunset"]
VIOLENT = ["stab", "shoot", "beat"]
HATEFUL = ["vermin", "subhuman"]
FILLER = ["the", "a", "my", "friend", "today", "was", "really", "about"]


def tiny_llama(where: Path) -> Path:
    """A two-layer Llama with random weights and a word-level tokenizer, saved to `where`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>", *FILLER, *BENIGN, *VIOLENT, *HATEFUL]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(where)
    tokenizer.save_pretrained(where)
    return where


def toy_rows(n: int, seed: int) -> list[dict]:
    """Separable posts: the last word decides the categories."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lead = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 5)))
        kind = i % 3
        word = rng.choice((BENIGN, VIOLENT, HATEFUL)[kind])
        cats = [[], ["violence"], ["hate"]][kind]
        rows.append({"text": f"{lead} {word}", "label": int(bool(cats)), "categories": cats})
    return rows


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A model this small runs ~8x faster on one thread than on two shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_finetune_learns_merges_and_reloads(tmp_path: Path, one_thread: None) -> None:
    base = tiny_llama(tmp_path / "base")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in toy_rows(96, seed=1)))
    out = tmp_path / "model"
    args = ["finetune", "--base", str(base), "--data", str(data), "--out", str(out)]
    args += ["--epochs", "8", "--batch-size", "16", "--learning-rate", "0.01", "--lora-rank", "4"]
    assert main(["--config", str(CONFIG), *args]) == 0

    report = json.loads((out / "finetune.json").read_text())
    assert report["last_loss"] < 0.5 * report["first_loss"]
    # A plain merged checkpoint, labelled with the policy's categories.
    categories = list(load_settings(CONFIG).policy.categories)
    assert served_labels(out) == categories
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["problem_type"] == "multi_label_classification"
    assert not (out / "adapter_config.json").exists()
    serving = yaml.safe_load((out / "modpipe.yaml").read_text())["classifier"]
    assert serving["backend"] == "vllm-classify"
    # Labels and activation come from the model's own config.json, not a second copy.
    assert serving["model_dir"] == str(out.resolve()) and "labels" not in serving
    labels, activation = labels_from_model(Path(serving["model_dir"]), categories)
    assert labels == categories and activation == "sigmoid"

    # The saved model reloads with the predictions the merged model gave in memory ...
    reloaded = predict(out, report["probe_texts"])
    flat = lambda rows: [p for row in rows for p in row]  # noqa: E731
    assert flat(reloaded) == pytest.approx(flat(report["probe_scores"]), abs=1e-5)
    # ... and it learned the toy task, on posts it was not trained on.
    unseen = toy_rows(12, seed=2)
    scores = predict(out, [r["text"] for r in unseen])
    violence, hate = categories.index("violence"), categories.index("hate")
    for row, s in zip(unseen, scores, strict=True):
        assert (s[violence] > 0.5) == ("violence" in row["categories"]), (row, s)
        assert (s[hate] > 0.5) == ("hate" in row["categories"]), (row, s)
