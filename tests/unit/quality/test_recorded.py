"""`modpipe eval` and `calibrate` on recorded tier-1 outputs (`--recorded`): verdicts and
escalations carrying p_violation, joined with labels on post_id; the model is not called
(the configured vLLM is a port nothing listens on)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from modpipe.cli import main
from modpipe.core.errors import ConfigError
from modpipe.quality.datasets import load_labelled
from modpipe.quality.recorded import RECORDED, join, load_recorded
from tests.conftest import CONFIG


def verdict(pid: str, p: float | None, tier: str = "small", action: str = "allow") -> dict:
    record = {"post_id": pid, "action": action, "categories": [], "scores": {}, "tier": tier}
    return record | ({"p_violation": p} if p is not None else {})


def escalation(pid: str, p: float | None) -> dict:
    post = {"post_id": pid, "text": f"post {pid}"}
    reason = "borderline" if p is not None else "classifier_failed"
    return {"post": post, "scores": {}, "model": "m", "reason": reason, "p_violation": p}


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Path, dict[str, float]]:
    """200 labelled posts; the tier's p is high for violating ones, with some overlap."""
    rng = random.Random(3)
    labels, records, truth = [], [], {}
    for i in range(200):
        pid, label = f"p{i}", int(i % 3 == 0)
        p = min(1.0, max(0.0, rng.gauss(0.75 if label else 0.2, 0.15)))
        labels.append({"post_id": pid, "text": f"post {pid}", "label": label})
        truth[pid] = round(p, 4)
        if 0.35 <= p < 0.92:
            records.append(escalation(pid, truth[pid]))
            records.append(verdict(pid, None, tier="frontier"))  # tier 2's answer: no p
        else:
            records.append(verdict(pid, truth[pid], action="allow" if p < 0.35 else "block"))
    records.append(escalation("p1", None))  # a classifier failure (a redelivery): skipped
    records.append(verdict("unlabelled", 0.5))
    data = tmp_path / "labels.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in labels))
    out = tmp_path / "recorded.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return data, out, truth


def test_recorded_outputs_join_labels_on_post_id(recorded) -> None:
    data_path, out, truth = recorded
    found = load_recorded(out)
    assert found.p["p5"] == truth["p5"] and "unlabelled" in found.p
    frontier = sum(1 for r in out.read_text().splitlines() if '"frontier"' in r)
    assert found.skipped == frontier + 1
    data, scores = join(load_labelled(data_path), found)
    assert len(data) == 200
    assert [s[RECORDED] for s in scores] == [truth[pid] for pid in data.ids]


def test_a_file_that_is_not_records_is_refused(tmp_path: Path, recorded) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(verdict("p1", 1.5)) + "\n")
    with pytest.raises(ConfigError, match="not a probability"):
        load_recorded(bad)
    data_path = recorded[0]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(verdict("zz", 0.3)) + "\n")
    with pytest.raises(ConfigError, match="post_id"):
        join(load_labelled(data_path), load_recorded(other))


def modpipe(tmp_path: Path, *args: str) -> int:
    config = tmp_path / "vllm.yaml"
    base = yaml.safe_load(CONFIG.read_text())
    base["policy_file"] = str((CONFIG.parent / base.get("policy_file", "policy.yaml")).resolve())
    base["classifier"] = {"backend": "vllm-guard", "base_url": "http://127.0.0.1:9/v1"}
    config.write_text(yaml.safe_dump(base))
    return main(["--config", str(config), *args])


def test_eval_reads_the_recorded_probabilities(recorded, tmp_path: Path, capsys) -> None:
    data, out, truth = recorded
    png = tmp_path / "e.png"
    assert (
        modpipe(
            tmp_path,
            "eval",
            "--data",
            str(data),
            "--recorded",
            str(out),
            "--json",
            "--png",
            str(png),
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 200
    # At the configured bands (0.35, 0.92) the recorded numbers give exactly the routes.
    escalated = sum(1 for p in truth.values() if 0.35 <= p < 0.92)
    assert report["escalation_rate"] == pytest.approx(escalated / 200)
    assert 0.9 < report["auroc"] <= 1.0


def test_calibrate_chooses_bands_from_recorded_outputs(recorded, tmp_path: Path, capsys) -> None:
    data, out, _ = recorded
    written = tmp_path / "bands.yaml"
    args = ["calibrate", "--data", str(data), "--recorded", str(out)]
    assert modpipe(tmp_path, *args, "--target-escalation", "0.2", "--out", str(written)) == 0
    summary = json.loads(capsys.readouterr().out)["check_split"]
    bands = yaml.safe_load(written.read_text())["routing"]
    assert 0.0 < bands["allow_below"] <= bands["block_above"] <= 1.0
    assert summary["n"] == 100 and summary["escalation_rate"] <= 0.3
