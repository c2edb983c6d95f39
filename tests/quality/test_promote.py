"""`modpipe promote`: refuses a model trained on shuffled labels, accepts a better one."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import yaml

from modpipe.cli import main
from modpipe.quality.datasets import Labelled
from modpipe.quality.training import train
from tests.conftest import CONFIG, SHARED_DATA

DAVIDSON = SHARED_DATA / "davidson-hate-offensive" / "labeled_data.csv"
pytestmark = pytest.mark.skipif(
    not DAVIDSON.exists(), reason=f"labelled data not found at {DAVIDSON} (see its README)"
)
CATEGORY = {"0": "hate", "1": "harassment"}


def rows() -> list[dict[str, object]]:
    with DAVIDSON.open(newline="", encoding="utf-8") as f:
        out = [
            {
                "text": r["tweet"],
                "label": int(r["class"] in CATEGORY),
                "categories": [CATEGORY[r["class"]]] if r["class"] in CATEGORY else [],
                "lang": "en",
                "surface": "reply" if n % 3 else "post",
            }
            for n, r in enumerate(csv.DictReader(f))
        ]
    random.Random(23).shuffle(out)
    return out


def model(folder: Path, data: list[dict[str, object]], shuffle: bool = False) -> Path:
    labels = [int(str(r["label"])) for r in data]
    if shuffle:
        random.Random(5).shuffle(labels)
    train(Labelled([str(r["text"]) for r in data], labels, sha256="t"), folder, "harassment")
    return folder


def settings_file(path: Path, model_path: Path, **extra: object) -> Path:
    data = {
        "policy_file": str(CONFIG.parent / "policy.yaml"),
        "classifier": {"backend": "cpu", "model_path": str(model_path)},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_promote_refuses_shuffled_labels_and_accepts_a_better_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = rows()
    heldout, pool = data[:1500], data[1500:]
    (tmp_path / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in heldout) + "\n")
    gate = {"margin": 0.01, "min_slice_posts": 50, "min_shadow_posts": 100, "min_agreement": 0.8}
    # Production: a model trained on little data; its bands escalate what it is unsure of.
    routing = {"expected_escalation_rate": 0.4}
    active = settings_file(
        tmp_path / "active.yaml",
        model(tmp_path / "prod", pool[:300]),
        routing=routing,
        promote={**gate, "escalation_room": 0.2},
    )
    before = active.read_text()
    shadow = tmp_path / "shadow.json"
    shadow.write_text(json.dumps({"posts": 500, "agreement": 0.93}))
    common = ["--data", str(tmp_path / "heldout.jsonl"), "--shadow", str(shadow), "--json"]

    shuffled = settings_file(
        tmp_path / "shuffled.yaml", model(tmp_path / "shuf", pool[:8000], shuffle=True)
    )
    assert main(["--config", str(active), "promote", str(shuffled), *common]) == 1
    refused = json.loads(capsys.readouterr().out)
    failed = {c["check"] for c in refused["checks"] if not c["ok"]}
    assert "auprc" in failed and not refused["written"]
    assert active.read_text() == before, "a refused candidate is never written"

    better = settings_file(tmp_path / "better.yaml", model(tmp_path / "better", pool[:8000]))
    assert main(["--config", str(active), "promote", str(better), *common]) == 0
    accepted = json.loads(capsys.readouterr().out)
    assert accepted["passed"] and accepted["written"]
    checks = {c["check"]: c for c in accepted["checks"]}
    assert checks["auprc"]["candidate"] > checks["auprc"]["production"]
    assert str((tmp_path / "better").resolve()) in active.read_text()

    # The text report says why, one line per check.
    active.write_text(before)
    assert main(["--config", str(active), "promote", str(shuffled), *common[:-1]]) == 1
    out = capsys.readouterr().out
    assert "FAIL auprc" in out and "refused:" in out


def test_promote_without_a_shadow_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = rows()[:1200]
    (tmp_path / "heldout.jsonl").write_text("\n".join(json.dumps(r) for r in data[:600]) + "\n")
    m = model(tmp_path / "m", data[600:])
    active = settings_file(tmp_path / "active.yaml", m)
    candidate = settings_file(tmp_path / "candidate.yaml", m)
    args = ["--data", str(tmp_path / "heldout.jsonl"), "--json"]
    assert main(["--config", str(active), "promote", str(candidate), *args]) == 1
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert not checks["shadow"]["ok"] and checks["auprc"]["ok"]
