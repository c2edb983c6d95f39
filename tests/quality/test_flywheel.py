"""`modpipe flywheel`: calibration, the tier-1 share, and each round's model through the
promotion gate (the replay on real Kafka is in tests/integration/test_dataset_build.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from escalation.prompt import messages
from modpipe.cli.flywheel import _row
from modpipe.core.settings import RoutingSettings, load_settings
from modpipe.quality.flywheel import (
    FlywheelOptions,
    calibrate,
    gate_round,
    round_settings,
    tier1_share,
)
from modpipe.quality.label_oracle import label_oracle
from modpipe.quality.promote import Heldout
from tests.conftest import CONFIG
from tests.quality.test_promote import DAVIDSON, model, rows, settings_file

ROUND = {
    "round": 1,
    "auroc": 0.9,
    "auprc": 0.8,
    "auto_error_rate": 0.05,
    "escalation_rate": 0.2,
    "tier1_share_at_5pct": 0.5,
    "frontier_calls": 10,
    "frontier_cost_usd": 0.01,
}


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


def test_the_flywheels_candidate_becomes_active_only_through_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not DAVIDSON.exists():
        pytest.skip(f"labelled data not found at {DAVIDSON} (see its README)")
    data = rows()
    held, pool = data[:1000], data[1000:]
    heldout = Heldout(
        [str(r["text"]) for r in held],
        [int(str(r["label"])) for r in held],
        [[f"category:{(r['categories'] or ['none'])[0]}", f"surface:{r['surface']}"] for r in held],
    )
    active = settings_file(
        tmp_path / "active.yaml",
        model(tmp_path / "prod", pool[:300]),
        promote={"margin": 0.01, "min_slice_posts": 50, "escalation_room": 0.2},
    )
    before = active.read_text()
    opts = FlywheelOptions(escalation_rate=0.4, out_dir=tmp_path)
    production = round_settings(active, "t", "http://127.0.0.1:9", opts, "t")

    shuffled = model(tmp_path / "shuffled", pool[:2000], shuffle=True)
    verdict, promoted = asyncio.run(
        gate_round(production, active, tmp_path / "round-1", shuffled, None, heldout)
    )
    assert not promoted and not verdict.passed
    assert "auprc" in {c["check"] for c in verdict.checks if not c["ok"]}
    assert active.read_text() == before, "a refused candidate is never put in force"
    assert str(shuffled.resolve()) in (tmp_path / "round-1" / "candidate.yaml").read_text()
    _row({**ROUND, "promoted": promoted, "gate": verdict.checks})
    out = capsys.readouterr().out
    assert "candidate refused" in out and "FAIL auprc" in out, out

    better = model(tmp_path / "better", pool[:2000])
    bands = RoutingSettings(allow_below=0.1, block_above=0.9)
    verdict, promoted = asyncio.run(
        gate_round(production, active, tmp_path / "round-2", better, bands, heldout)
    )
    assert promoted and verdict.passed, [c["detail"] for c in verdict.checks if not c["ok"]]
    checks = {c["check"]: c for c in verdict.checks}
    assert checks["auprc"]["candidate"] > checks["auprc"]["production"]
    next_round = round_settings(active, "t2", "http://127.0.0.1:9", opts, "t")
    assert next_round.classifier.model_path == better.resolve()
    assert (next_round.routing.allow_below, next_round.routing.block_above) == (0.1, 0.9)
    _row({**ROUND, "promoted": promoted, "gate": verdict.checks})
    assert "candidate promoted" in capsys.readouterr().out
