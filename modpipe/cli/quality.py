"""`modpipe train`, `eval` and `calibrate`: the quality loop's commands (the work is in
modpipe/quality/)."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from escalation.prompt import system_prompt
from modpipe.core.cost import estimate_tokens
from modpipe.core.errors import ConfigError
from modpipe.core.settings import RoutingSettings, Settings, config_path, load_settings
from modpipe.quality.bands import (
    band_table,
    best_for_error,
    best_for_escalation,
    calibration_split,
    evaluate,
    hybrid_vs_frontier,
    load_frontier,
    plot,
    scores_of,
    write_config,
)
from modpipe.quality.datasets import Labelled, load_labelled
from modpipe.quality.public import LOADERS, load_public
from modpipe.quality.recorded import join, load_recorded
from modpipe.quality.training import train

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


def _scored(
    settings: Settings, data: Labelled, recorded: Path | None
) -> tuple[Labelled, list[dict[str, float]]]:
    """`data` and its scores: the configured classifier's, or the tier's recorded
    `p_violation` joined on post_id (only the posts that have one)."""
    if recorded is None:
        return data, asyncio.run(scores_of(settings, data.texts))
    found = load_recorded(recorded)
    joined, scores = join(data, found)
    print(
        f"recorded outputs: {len(joined)} of {len(data)} labelled posts joined "
        f"({found.skipped} records without the small tier's p_violation skipped)",
        file=sys.stderr,
    )
    return joined, scores


def _top_score(scores: list[dict[str, float]]) -> np.ndarray:
    return np.array([max(s.values(), default=0.0) for s in scores])


def run_eval(
    settings: Settings,
    data: Labelled,
    png: Path,
    frontier: Path | None,
    as_json: bool,
    recorded: Path | None = None,
) -> int:
    """Score `data` with the configured classifier (or read the tier's recorded outputs)
    and report quality at the bands."""
    data, scores = _scored(settings, data, recorded)
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
    recorded: Path | None = None,
) -> int:
    """Choose bands on one half of `data` (scored, or the tier's recorded outputs), write
    them as a config, report the other half."""
    data, scores = _scored(settings, data, recorded)
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
    model = settings.classifier.model_path if settings.classifier.backend == "cpu" else None
    write_config(base_config, out, bands.allow_below, bands.block_above, model)
    checked = evaluate(data.subset(check), [scores[i] for i in check], bands)
    summary = {k: checked[k] for k in CHECK_KEYS}
    print(json.dumps({"written": str(out), "check_split": summary}, indent=2))
    return 0


def _data(args: argparse.Namespace) -> Labelled:
    positive = tuple(args.positive or ("1", "true", "True"))
    return load_labelled(args.data, args.text_col, args.label_col, positive, args.group_col)


def _with_public(data: Labelled, args: argparse.Namespace) -> Labelled:
    if not args.public:
        return data
    names = None if "all" in args.public else list(args.public)
    rows = load_public(args.public_dir, names)
    print(f"mixed in {len(rows)} public rows ({', '.join(names or ['all'])})")
    return Labelled(
        data.texts + [r.text for r in rows],
        data.labels + [r.label for r in rows],
        sha256=hashlib.sha256(f"{data.sha256}+{sorted(names or ['all'])}".encode()).hexdigest(),
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    if (args.bands_out is None) != (args.calibrate_on is None):
        raise ConfigError("give --bands-out and --calibrate-on together")
    data = _with_public(_data(args), args)
    meta = train(data, args.out, settings.policy.cpu_category, prior=args.prior)
    print(json.dumps(meta, indent=2))
    if args.bands_out:  # a new model needs bands of its own
        trained = load_settings(args.config, {"classifier": {"model_path": str(args.out)}})
        run_calibrate(
            trained,
            load_labelled(args.calibrate_on),
            config_path(args.config),
            args.bands_out,
            args.target_escalation,
            None,
            0.95,
        )
        print(f"use it with: modpipe --config {args.bands_out} ...")
    else:
        print(f"use it with: MODPIPE_CLASSIFIER__MODEL_PATH={args.out}")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    return run_eval(settings, _data(args), args.png, args.frontier, args.json, args.recorded)


def cmd_calibrate(settings: Settings, args: argparse.Namespace) -> int:
    if (args.target_escalation is None) == (args.max_auto_error is None):
        raise ConfigError("give either --target-escalation or --max-auto-error")
    return run_calibrate(
        settings,
        _data(args),
        config_path(args.config),
        args.out,
        args.target_escalation,
        args.max_auto_error,
        args.confidence,
        args.recorded,
    )


def data_args(p: argparse.ArgumentParser) -> None:
    """Where labelled data comes from and which columns hold what."""
    p.add_argument("--data", type=Path, required=True, help="labelled JSONL or CSV")
    p.add_argument("--text-col", default="text")
    p.add_argument("--label-col", default="label")
    p.add_argument(
        "--positive",
        action="append",
        default=None,
        help="a label value meaning violating (repeatable; default 1, true)",
    )
    p.add_argument("--group-col", help="report per-group quality (e.g. functionality)")


def recorded_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recorded",
        type=Path,
        help="tier-1 verdicts and escalations (JSONL, with p_violation) to use instead of "
        "scoring: joined with --data on post_id",
    )


def register(sub: Any) -> None:
    s = sub.add_parser("train", help="train the CPU classifier on labelled data")
    data_args(s)
    s.add_argument("--out", type=Path, required=True, help="model directory to write")
    s.add_argument(
        "--public",
        action="append",
        choices=[*sorted(LOADERS), "all"],
        help="mix in a public set mapped onto the policy (repeatable)",
    )
    s.add_argument("--public-dir", type=Path, default=Path("../shared/data"))
    s.add_argument("--prior", action="store_true", help="stack on the packaged profanity model")
    s.add_argument("--calibrate-on", type=Path, help="labelled JSONL to choose bands on")
    s.add_argument("--bands-out", type=Path, help="settings file to write with the new bands")
    s.add_argument("--target-escalation", type=float, default=0.1)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="quality of tier 1 at the configured bands")
    data_args(s)
    s.add_argument("--frontier", type=Path, help="recorded frontier verdicts (JSONL)")
    s.add_argument("--png", type=Path, default=Path("eval.png"))
    s.add_argument("--json", action="store_true")
    recorded_arg(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("calibrate", help="choose bands from labelled data")
    data_args(s)
    s.add_argument("--target-escalation", type=float)
    s.add_argument("--max-auto-error", type=float)
    s.add_argument("--confidence", type=float, default=0.95)
    s.add_argument("--out", type=Path, required=True, help="settings file to write")
    recorded_arg(s)
    s.set_defaults(func=cmd_calibrate)
