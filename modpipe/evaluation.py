"""What `modpipe eval` and `modpipe calibrate` run and print (the arithmetic is in
modpipe/quality.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from classifiers import build_classifier
from classifiers.datasets import Labelled
from escalation.prompt import system_prompt
from modpipe.cost import estimate_tokens
from modpipe.quality import (
    band_table,
    best_for_error,
    best_for_escalation,
    calibration_split,
    evaluate,
    hybrid_vs_frontier,
    load_frontier,
    plot,
    score,
    write_config,
)
from modpipe.settings import RoutingSettings, Settings

CHECK_KEYS = (
    "n",
    "allow_below",
    "block_above",
    "escalation_rate",
    "auto_error_rate",
    "allow_error_rate",
    "block_error_rate",
    "recall",
)


async def _scores(settings: Settings, texts: list[str]) -> list[dict[str, float]]:
    classifier = build_classifier(settings)
    try:
        return await score(classifier, texts)
    finally:
        await classifier.aclose()


def _top_score(scores: list[dict[str, float]]) -> np.ndarray:
    return np.array([max(s.values(), default=0.0) for s in scores])


def run_eval(
    settings: Settings, data: Labelled, png: Path, frontier: Path | None, as_json: bool
) -> int:
    """Score `data` with the configured classifier and report quality at the bands."""
    scores = asyncio.run(_scores(settings, data.texts))
    report = evaluate(data, scores, settings.routing)
    if frontier is not None:
        overhead = estimate_tokens(system_prompt(settings.policy)) + 10
        report["hybrid"] = hybrid_vs_frontier(
            data, scores, settings.routing, load_frontier(frontier), settings, overhead
        )
    point = (report["escalation_rate"], report["auto_error_rate"])
    plot(_top_score(scores), np.array(data.labels), point, png)
    if as_json:
        print(json.dumps(report))
        return 0
    for key, value in report.items():
        if key not in ("worst_errors", "groups", "hybrid"):
            print(f"{key:<18} {value:.4f}" if isinstance(value, float) else f"{key:<18} {value}")
    for key, value in report.get("hybrid", {}).items():
        print(f"hybrid.{key:<11} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    if "groups" in report:
        print("groups by auto-decided error (worst first):")
        ranked = sorted(report["groups"].items(), key=lambda kv: -kv[1]["auto_error_rate"])
        for name, g in ranked:
            print(
                f"  {name:<32} n={g['n']:<5} error={g['auto_error_rate']:.3f} "
                f"escalated={g['escalated']:.3f}"
            )
    print("most confident errors:")
    for e in report["worst_errors"][:10]:
        print(f"  label={e['label']} score={e['score']:.3f} {e['route']:<6} {e['text'][:90]!r}")
    print(f"plot: {png}")
    return 0


def run_calibrate(
    settings: Settings,
    data: Labelled,
    base_config: Path,
    out: Path,
    target_escalation: float | None,
    max_auto_error: float | None,
    confidence: float,
) -> int:
    """Choose bands on one half of `data`, write them as a config, report the other half."""
    scores = asyncio.run(_scores(settings, data.texts))
    fit, check = calibration_split(len(data))
    table = band_table(_top_score(scores)[fit], np.array(data.labels)[fit])
    if target_escalation is not None:
        allow, block = best_for_escalation(table, target_escalation)
    else:
        assert max_auto_error is not None
        allow, block = best_for_error(table, max_auto_error, confidence)
    bands = RoutingSettings(
        allow_below=round(min(allow, 1.0), 6), block_above=round(min(block, 1.0), 6)
    )
    write_config(base_config, out, bands.allow_below, bands.block_above)
    checked = evaluate(data.subset(check), [scores[i] for i in check], bands)
    summary = {k: checked[k] for k in CHECK_KEYS}
    print(json.dumps({"written": str(out), "check_split": summary}, indent=2))
    return 0
