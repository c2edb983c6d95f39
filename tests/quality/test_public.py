"""The public sets' labels mapped onto configs/policy.yaml's categories."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from modpipe.core.errors import ConfigError
from modpipe.core.settings import load_settings
from modpipe.quality import public
from tests.conftest import CONFIG, ROOT, SHARED_DATA

CATEGORIES = set(load_settings(CONFIG).policy.categories)
TABLES = {
    "davidson": public.DAVIDSON,
    "surge": public.SURGE,
    "hatecheck": public.HATECHECK,
    "ailuminate": public.AILUMINATE,
    "aart": public.AART,
    "simplesafetytests": public.SIMPLESAFETY,
    "donotanswer": public.DONOTANSWER,
}
needs_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"labelled data not found at {SHARED_DATA} (see its README)"
)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_mapping_names_policy_categories(name: str) -> None:
    for label, categories in TABLES[name].items():
        assert set(categories) <= CATEGORIES, (name, label)


def test_hazards_outside_the_policy_are_negatives() -> None:
    for hazard in ("ipv", "prv", "spc_fin", "spc_hlt", "spc_ele", "spc_lgl"):
        assert public.AILUMINATE[hazard] == ()
    assert public.AILUMINATE["cse"] == ("sexual_minors",)
    assert public.AART["gambling"] == () and public.AART["climate change"] == ()
    assert public.AART["crimes motivated by race"] == ("hate",)
    assert public.AART["rape"] == ("sexual", "violence")


def test_donotanswer_codes_by_longest_prefix() -> None:
    assert public.donotanswer_categories(["S006sh", "S002med"]) == ("self_harm",)
    assert public.donotanswer_categories(["S006instructions"]) == ("illicit",)
    assert public.donotanswer_categories(["S008spam"]) == ()
    assert public.donotanswer_categories(["S008phish", "S005bully"]) == ("illicit", "harassment")
    assert public.donotanswer_categories(["S009private", "C006"]) == ()
    with pytest.raises(ConfigError, match="unmapped intent"):
        public.donotanswer_categories(["X123"])


def test_convabuse_majority_of_the_annotators_who_judged() -> None:
    def votes(*each: str) -> dict[str, str]:
        row = {}
        for n, vote in enumerate(each, start=1):
            for v in ("1", "0", "-1", "-2", "-3"):
                row[f"Annotator{n}_is_abuse.{v}"] = "1" if v == vote else "0"
        return row

    assert public.convabuse_abusive(votes("-1", "-3", "1")) is True
    assert public.convabuse_abusive(votes("-1", "1")) is False  # a tie is not a majority
    assert public.convabuse_abusive(votes("0", "1", "-2")) is False
    assert public.convabuse_abusive({"Annotator1_is_abuse.1": ""}) is None


@needs_data
def test_every_row_of_every_set_maps() -> None:
    rows = public.load_public(SHARED_DATA)
    by_source = Counter(r.source for r in rows)
    assert set(by_source) == set(public.LOADERS)
    assert all(set(r.categories) <= CATEGORIES for r in rows)
    assert len({r.text for r in rows}) == len(rows)
    # The shortcut guard: assistant-style prompts are not all violating.
    prompts = [r for r in rows if r.origin == "assistant_prompt"]
    negatives = sum(1 for r in prompts if r.label == 0) / len(prompts)
    assert 0.2 < negatives < 0.5
    assert Counter(c for r in rows for c in r.categories).keys() == CATEGORIES


@needs_data
def test_public_export_splits_by_text(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "modpipe", "dataset", "public", "--sets", "surge", "hatecheck"),
            *("--data-dir", str(SHARED_DATA), "--out", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    halves = {
        h: [json.loads(x) for x in (tmp_path / f"{h}.jsonl").read_text().splitlines()]
        for h in ("stream", "eval")
    }
    assert 0.4 < len(halves["eval"]) / (len(halves["eval"]) + len(halves["stream"])) < 0.6
    assert not {r["text"] for r in halves["eval"]} & {r["text"] for r in halves["stream"]}
    assert {r["source"] for r in halves["eval"]} == {"surge", "hatecheck"}


@needs_data
def test_train_mixes_public_rows_stacks_and_writes_its_bands(tmp_path: Path) -> None:
    own = tmp_path / "own.jsonl"
    rows = [{"text": f"you worthless idiot number {i}", "label": 1} for i in range(40)]
    rows += [{"text": f"lovely walk in the park number {i}", "label": 0} for i in range(40)]
    own.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, bands = tmp_path / "model", tmp_path / "bands.yaml"
    out = subprocess.run(
        [
            *(sys.executable, "-m", "modpipe", "train", "--data", str(own), "--out", str(model)),
            *("--prior", "--public", "surge", "--public-dir", str(SHARED_DATA)),
            *("--calibrate-on", str(own), "--bands-out", str(bands)),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads((model / "meta.json").read_text())
    assert meta["rows"] == 80 + 999 and meta["name"].startswith("tfidf-lr-stacked-")
    settings = load_settings(bands)
    assert settings.classifier.model_path == model.resolve()
    assert settings.routing.allow_below <= settings.routing.block_above
