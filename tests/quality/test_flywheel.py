"""`modpipe flywheel`: calibration and the tier-1 share (the replay on real Kafka is in
tests/integration/test_dataset_build.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np

from escalation.prompt import messages
from modpipe.core.settings import load_settings
from modpipe.quality.flywheel import calibrate, tier1_share
from modpipe.quality.label_oracle import label_oracle
from tests.conftest import CONFIG


def test_a_perfect_ranking_decides_everything_and_noise_almost_nothing() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    assert tier1_share(labels * 0.8 + 0.1, labels) == 1.0
    assert tier1_share(rng.random(2000), labels) < 0.05


def test_calibration_weights_each_row_by_its_sampling_rate() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 1000)
    probs = np.clip(labels * 0.5 + rng.normal(0.25, 0.2, 1000), 0, 1)
    weights = np.where(np.arange(1000) < 100, 10, 1)  # audited rows stand for ten posts
    bands = calibrate(probs, labels, weights, 0.2)
    escalated = (probs >= bands.allow_below) & (probs < bands.block_above)
    assert 0.15 < (escalated * weights).sum() / weights.sum() <= 0.2


def test_calibration_spends_the_escalation_budget_even_when_it_could_save_it() -> None:
    labels = np.arange(1000) % 2
    probs = labels * 0.6 + np.linspace(0, 0.4, 1000)  # separable: no band needs to escalate
    bands = calibrate(probs, labels, np.ones(1000, dtype=int), 0.1)
    escalated = (probs >= bands.allow_below) & (probs < bands.block_above)
    assert 0.09 <= escalated.mean() <= 0.1


async def test_the_label_oracle_answers_the_escalators_prompt_with_the_label() -> None:
    policy = load_settings(CONFIG).policy
    answers = {"a known insult": ["harassment"], "a kind word": []}
    async with label_oracle(answers) as oracle, httpx.AsyncClient() as client:
        verdicts = {}
        for text in (*answers, "never labelled"):
            body = {"model": "gpt-4.1-mini", "messages": messages(policy, text)}
            reply = (await client.post(f"{oracle.url}/chat/completions", json=body)).json()
            verdicts[text] = json.loads(reply["choices"][0]["message"]["content"])
            assert reply["usage"]["completion_tokens"] == 30
    assert verdicts["a known insult"]["action"] == "block"
    assert verdicts["a known insult"]["categories"] == ["harassment"]
    assert verdicts["a kind word"]["action"] == "allow"
    assert verdicts["never labelled"]["action"] == "allow"


def test_no_command_imports_the_tests_package() -> None:
    code = (
        "import sys, modpipe.cli\n"
        "assert not [m for m in sys.modules if m == 'tests' or m.startswith('tests.')]"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
