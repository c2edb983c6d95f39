"""Train, evaluate and calibrate on the shared public data sets (skipped where absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SHARED_DATA

DAVIDSON = SHARED_DATA / "davidson-hate-offensive" / "labeled_data.csv"
SURGE = SHARED_DATA / "surge-toxicity" / "toxicity_en.csv"
HATECHECK = SHARED_DATA / "hatecheck" / "test_suite_cases.csv"

pytestmark = pytest.mark.skipif(
    not DAVIDSON.exists(), reason=f"labelled data not found at {SHARED_DATA} (see its README)"
)

SURGE_ARGS = ["--data", str(SURGE), "--label-col", "is_toxic", "--positive", "Toxic"]
DAVIDSON_ARGS = [
    "--data",
    str(DAVIDSON),
    "--text-col",
    "tweet",
    "--label-col",
    "class",
    "--positive",
    "0",
    "--positive",
    "1",
]
HATECHECK_ARGS = [
    "--data",
    str(HATECHECK),
    "--text-col",
    "test_case",
    "--label-col",
    "label_gold",
    "--positive",
    "hateful",
    "--group-col",
    "functionality",
]


def modpipe(*args: str, config: Path | None = None) -> str:
    cmd = [sys.executable, "-m", "modpipe"]
    if config:
        cmd += ["--config", str(config)]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model")
    modpipe("train", *DAVIDSON_ARGS, "--out", str(out))
    return out


def test_training_writes_a_versioned_artifact(trained: Path) -> None:
    meta = json.loads((trained / "meta.json").read_text())
    assert meta["rows"] > 24_000 and len(meta["data_sha256"]) == 64
    # davidson is 83% offensive or hateful and easy in-domain: the held-out split says so.
    assert meta["heldout_auroc"] > 0.9


def test_packaged_model_on_held_out_surge(tmp_path: Path) -> None:
    png = tmp_path / "surge.png"
    report = json.loads(modpipe("eval", *SURGE_ARGS, "--json", "--png", str(png)))
    assert report["n"] == 1000
    # The packaged model and the data are fixed, so the score is too (0.843 measured): a
    # move either way means the model, the data or the scoring changed.
    assert report["auroc"] == pytest.approx(0.843, abs=0.01)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_trained_model_loads_in_the_cpu_backend(trained: Path, tmp_path: Path) -> None:
    config = tmp_path / "trained.yaml"
    base = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    base["policy_file"] = str(ROOT / "configs" / "policy.yaml")
    base["classifier"]["model_path"] = str(trained)
    config.write_text(yaml.safe_dump(base))
    report = json.loads(
        modpipe("eval", *SURGE_ARGS, "--json", "--png", str(tmp_path / "p.png"), config=config)
    )
    assert report["auroc"] > 0.65  # out of domain: twitter slang -> forum comments


def test_hatecheck_reports_per_functionality(tmp_path: Path) -> None:
    out = modpipe("eval", *HATECHECK_ARGS, "--png", str(tmp_path / "h.png"))
    assert "groups by auto-decided error" in out
    assert "counter_quote_nh" in out and "derog_neg_emote_h" in out


def test_calibrate_hits_the_escalation_target_on_held_out_data(tmp_path: Path) -> None:
    out_cfg = tmp_path / "calibrated.yaml"
    result = json.loads(
        modpipe("calibrate", *DAVIDSON_ARGS, "--target-escalation", "0.1", "--out", str(out_cfg))
    )
    check = result["check_split"]  # the half of the rows the bands were not chosen on
    assert check["n"] > 12_000
    assert abs(check["escalation_rate"] - 0.1) <= 0.01, check
    # The file is a complete config that every command accepts.
    report = json.loads(
        modpipe("eval", *SURGE_ARGS, "--json", "--png", str(tmp_path / "c.png"), config=out_cfg)
    )
    assert report["allow_below"] == check["allow_below"]


def test_calibrate_for_a_maximum_error_with_confidence(tmp_path: Path) -> None:
    result = json.loads(
        modpipe(
            "calibrate",
            *SURGE_ARGS,
            "--max-auto-error",
            "0.15",
            "--confidence",
            "0.9",
            "--out",
            str(tmp_path / "e.yaml"),
        )
    )
    check = result["check_split"]
    # The 90% bound holds on the calibration half; the check half is a fresh sample of
    # about 300 auto-decided posts, whose standard error at 0.15 is 0.02 (measured 0.151).
    auto = check["n"] * (1 - check["escalation_rate"])
    assert auto > 250
    assert check["auto_error_rate"] <= 0.15 + (0.15 * 0.85 / auto) ** 0.5
    # ...while still deciding most posts itself (measured: 37% escalated).
    assert check["escalation_rate"] < 0.5


def test_eval_compares_hybrid_with_recorded_frontier_verdicts(tmp_path: Path) -> None:
    import csv

    with SURGE.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["text"].strip()]
    # A frontier that agrees with the labels: hybrid can only approach it.
    recorded = tmp_path / "frontier.jsonl"
    recorded.write_text(
        "".join(
            json.dumps(
                {
                    "text": r["text"].strip(),
                    "action": "block" if r["is_toxic"] == "Toxic" else "allow",
                }
            )
            + "\n"
            for r in rows
        )
    )
    report = json.loads(
        modpipe(
            "eval",
            *SURGE_ARGS,
            "--json",
            "--frontier",
            str(recorded),
            "--png",
            str(tmp_path / "f.png"),
        )
    )
    hybrid = report["hybrid"]
    assert hybrid["n"] == 1000 and hybrid["frontier_accuracy"] == 1.0
    # Escalated posts get the frontier's (right) answer; auto-decided ones keep tier 1's.
    assert hybrid["hybrid_accuracy"] == pytest.approx(
        1 - report["auto_error_rate"] * (1 - report["escalation_rate"]), abs=1e-9
    )
    assert 0 < hybrid["hybrid_usd"] < hybrid["frontier_usd"]
