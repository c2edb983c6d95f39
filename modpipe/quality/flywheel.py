"""`modpipe flywheel`: the learning loop replayed on any labelled JSONL (`text`, `label`).

The data is a stream cut into slices. Each round runs the real pipeline (the triage and
escalation workers, in this process, on real Kafka and Redis, with topics of its own:
`modpipe.quality.replay`)
on the next slice, with a frontier endpoint that answers from the labels; reviewers
label the audit sample (the loop publishes their `Label`s from the labels, as the review
console would). Then it builds the dataset from Kafka as `modpipe dataset build` does,
retrains the CPU model on the train side of everything labelled so far, recalibrates the
bands to a fixed escalation rate, and measures the new model on the evaluation set.

Calibration uses only what the loop itself labelled and never trained on: the test side
(by text hash) of the escalated posts and of the audit sample. They are drawn from the
stream with known rates (every escalated post, times the test share; every auto-decided
post, times the audit rate times the test share), so weighting each by the inverse of its
rate makes them an unbiased sample of the stream, whatever model picked them.

A retrained model and its bands are a candidate settings file (`round-N/candidate.yaml`),
never put in force directly: the promotion gate (`modpipe.quality.promote.promote`, the
code behind `modpipe promote`) judges it against the active settings (`active.yaml`, at
first a copy of the base settings) on the evaluation set and writes it as active only if
it passes. The next round runs on whatever is active. A replay has no production beside
it to shadow, so the gate's shadow check is off here (`promote.min_shadow_posts: 0`); the
escalation check holds the candidate to `escalation_rate`, the rate the bands aim for.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from modpipe.core.errors import ConfigError, ModpipeError
from modpipe.core.progress import Progress, no_progress
from modpipe.core.settings import RoutingSettings, Settings, load_settings
from modpipe.quality.bands import band_table, best_for_error, evaluate, scores_of
from modpipe.quality.dataset import Dataset, Row, build, in_test, snapshot, write
from modpipe.quality.datasets import Labelled
from modpipe.quality.promote import Heldout, Verdict, promote, write_active
from modpipe.quality.replay import review_audits, run_pipeline
from modpipe.quality.training import train

log = logging.getLogger(__name__)

MAX_ERROR = 0.05
CONFIDENCE = 0.95


@dataclass(frozen=True)
class FlywheelOptions:
    """How the replay runs; the defaults keep three rounds to a few minutes on two cores."""

    rounds: int = 3
    slice_size: int = 3000
    escalation_rate: float = 0.2
    audit_rate: float = 0.1
    out_dir: Path = Path("flywheel")
    round_timeout_s: float = 300.0
    prior: bool = True  # stack the n-gram model on the packaged profanity model


@dataclass
class Pool:
    """What the loop has labelled so far: training rows and weighted calibration rows."""

    train: list[Row] = field(default_factory=list)
    calibration: list[tuple[Row, int]] = field(default_factory=list)


def round_settings(
    active: Path, tag: str, frontier_url: str, opts: FlywheelOptions, replay: str
) -> Settings:
    """Settings for one round: the active settings file's model and bands, with topics and
    groups of the round's own."""
    overrides: dict[str, Any] = {
        "app_id": f"flywheel-{tag}",
        "kafka": {"partitions": 2},
        "topics": {
            name: f"flywheel-{tag}-{name}"
            for name in ("posts", "verdicts", "escalations", "review", "dlq", "labels")
        },
        "triage": {"audit_rate": opts.audit_rate, "state_dir": str(opts.out_dir / "faust")},
        "escalation": {
            "group_id": f"flywheel-{tag}-escalator",
            "provider": "chat",
            "base_url": frontier_url,
            "daily_budget_usd": 1e9,
        },
        "redis": {"key_prefix": f"flywheel-{replay}"},  # the cache carries over rounds
        "metrics": {"port": 0, "escalator_port": 0},
        "classifier": {"backend": "cpu"},
        # The frontier budget of the replay is sized for this rate, and no production runs
        # beside the replay for a shadow run to compare with.
        "routing": {"expected_escalation_rate": opts.escalation_rate},
        "promote": {"min_shadow_posts": 0},
    }
    return load_settings(active, overrides)


def candidate_file(active: Path, out: Path, model: Path, bands: RoutingSettings | None) -> Path:
    """The active settings with the retrained model and, when calibrated, its bands."""
    data = yaml.safe_load(active.read_text()) or {}
    data["classifier"] = {
        **(data.get("classifier") or {}),
        "backend": "cpu",
        "model_path": str(model.resolve()),
    }
    if bands is not None:
        data["routing"] = {
            **(data.get("routing") or {}),
            "allow_below": bands.allow_below,
            "block_above": bands.block_above,
            "per_category": {},
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


async def gate_round(
    production: Settings,
    active: Path,
    round_dir: Path,
    model: Path,
    bands: RoutingSettings | None,
    heldout: Heldout,
) -> tuple[Verdict, bool]:
    """The round's retrained model as a candidate through the promotion gate; written as
    `active` only if it passes."""
    candidate = candidate_file(active, round_dir / "candidate.yaml", model, bands)
    verdict, promoted = await promote(
        production, candidate, heldout, None, active, source="the flywheel's evaluation set"
    )
    log.info(
        "round candidate %s model=%s checks=%s",
        "promoted" if promoted else "refused",
        model,
        ";".join(f"{c['check']}={'ok' if c['ok'] else 'FAIL'}" for c in verdict.checks),
    )
    return verdict, promoted


def _labelled(rows: list[Row]) -> Labelled:
    return Labelled([r.text for r in rows], [r.label for r in rows], sha256=f"{len(rows):08d}")


def tier1_share(probs: np.ndarray, labels: np.ndarray) -> float:
    """The largest share of posts tier 1 can decide with auto-decided error <= 5% at 95%
    confidence (Clopper-Pearson), over every pair of bands; 0 when none qualifies."""
    table = band_table(probs, labels)
    try:
        allow, block = best_for_error(table, MAX_ERROR, CONFIDENCE)
    except ConfigError:
        return 0.0
    return float(1 - np.mean((probs >= allow) & (probs < block)))


def calibrate(
    probs: np.ndarray, labels: np.ndarray, weights: np.ndarray, rate: float
) -> RoutingSettings:
    """Bands with the fewest (weighted) auto-decided errors among those escalating at most
    `rate` of the stream, and of those the one escalating most: the frontier budget is
    fixed, and what it labels is what the next round learns from, so none of it is saved
    when fewer escalations would do as well."""
    table = band_table(np.repeat(probs, weights), np.repeat(labels, weights))
    ok = table.escalated <= rate * table.n
    if not ok.any():
        raise ConfigError(f"no bands escalate at most {rate:.1%}")
    errors = np.where(ok, table.errors, np.iinfo(np.int64).max)
    i = np.unravel_index(np.argmin(errors - table.escalated / (table.n + 1)), errors.shape)
    allow, block = float(table.allow[i]), float(table.block[i])
    return RoutingSettings(allow_below=min(allow, 1.0), block_above=min(block, 1.0))


async def measure(settings: Settings, evalset: Labelled) -> dict[str, Any]:
    """The model and bands in `settings` on the evaluation set."""
    scores = await scores_of(settings, evalset.texts)
    report = evaluate(evalset, scores, settings.routing)
    probs = np.array([max(s.values(), default=0.0) for s in scores])
    return {
        "auroc": round(report["auroc"], 4),
        "auprc": round(report["auprc"], 4),
        "auto_error_rate": round(report["auto_error_rate"], 4),
        "escalation_rate": round(report["escalation_rate"], 4),
        "tier1_share_at_5pct": round(tier1_share(probs, np.array(evalset.labels)), 4),
        "allow_below": settings.routing.allow_below,
        "block_above": settings.routing.block_above,
    }


async def run_flywheel(
    base: Path,
    data: Labelled,
    evalset: Labelled,
    frontier_url: str,
    opts: FlywheelOptions,
    on_round: Callable[[dict[str, Any]], None] = lambda _: None,
    progress: Progress = no_progress,
    heldout: Heldout | None = None,
) -> list[dict[str, Any]]:
    """Round 0 (the starting model and bands) and `opts.rounds` rounds of the loop; the
    rounds done are counted to `progress`. The gate judges each round's candidate on
    `heldout` (the evaluation set, with its slices where the caller read them; by default
    `evalset` as one slice)."""
    slice_size = min(opts.slice_size, len(data) // opts.rounds)
    if slice_size < 50:
        raise ConfigError(f"--data has {len(data)} rows: too few for {opts.rounds} rounds")
    if heldout is None:
        heldout = Heldout(evalset.texts, evalset.labels, [["category:none"]] * len(evalset))
    replay = uuid.uuid4().hex[:8]
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    active = opts.out_dir / "active.yaml"
    write_active(base, active, f"the flywheel's starting settings, from {base}")
    settings = round_settings(active, f"{replay}-r0", frontier_url, opts, replay)
    category = settings.policy.cpu_category
    seen = Pool()
    first = {
        **await measure(settings, evalset),
        "round": 0,
        "frontier_calls": 0,
        "frontier_cost_usd": 0.0,
    }
    rounds = [first]
    progress("flywheel rounds", 0, opts.rounds)
    on_round(first)
    loop = _Loop(active, data, evalset, frontier_url, opts, heldout, replay, category)
    for r in range(1, opts.rounds + 1):
        result = await _run_round(loop, r, range((r - 1) * slice_size, r * slice_size), seen)
        rounds.append(result)
        on_round(result)
        progress("flywheel rounds", r, opts.rounds)
    (opts.out_dir / "rounds.json").write_text(json.dumps({"rounds": rounds}, indent=2) + "\n")
    return rounds


@dataclass(frozen=True)
class _Loop:
    """What every round of one replay shares."""

    active: Path
    data: Labelled
    evalset: Labelled
    frontier_url: str
    opts: FlywheelOptions
    heldout: Heldout
    replay: str
    category: str


async def _run_round(loop: _Loop, r: int, rows: range, seen: Pool) -> dict[str, Any]:
    """Round `r` on the data's `rows`: the pipeline, the reviewers, the dataset, the
    retrained candidate through the gate, and the active model measured."""
    opts, active, replay = loop.opts, loop.active, loop.replay
    tag = f"{replay}-r{r}"
    settings = round_settings(active, tag, loop.frontier_url, opts, replay)
    posts = [(f"{tag}-{i}", loop.data.texts[i]) for i in rows]
    truth = {f"{tag}-{i}": loop.data.labels[i] for i in rows}
    started = time.monotonic()
    await run_pipeline(settings, posts, opts.round_timeout_s)
    audited = await review_audits(settings, truth, loop.category)
    snap = await snapshot(settings)
    dataset = build(snap, settings)
    write(dataset, opts.out_dir / f"round-{r}" / "dataset")
    frontier = [v for _, v in snap.verdicts if v.get("tier") == "frontier"]
    pipeline_s = time.monotonic() - started
    _accumulate(seen, dataset, settings, opts.audit_rate)
    gate: dict[str, Any] = {"promoted": False, "gate": []}
    retrained = _retrain(seen, opts, r, loop.category)
    if retrained is not None:
        verdict, promoted = await gate_round(
            settings, active, opts.out_dir / f"round-{r}", *retrained, loop.heldout
        )
        gate = {"promoted": promoted, "gate": verdict.checks}
    measured = await measure(
        round_settings(active, tag, loop.frontier_url, opts, replay), loop.evalset
    )
    return {
        **measured,
        "round": r,
        "posts": len(posts),
        "escalated": len(snap.escalations),
        "audited": audited,
        "train_rows": len(seen.train),
        "frontier_calls": len(frontier),
        "frontier_cost_usd": round(sum(float(v.get("cost_usd", 0.0)) for v in frontier), 6),
        "pipeline_seconds": round(pipeline_s, 1),
        **gate,
    }


def _accumulate(seen: Pool, dataset: Dataset, settings: Settings, audit_rate: float) -> None:
    # The audit sample is split by the same text hash as the escalated posts: its train
    # side shows the model the confident region that escalations never cover, its test side
    # stays unseen and, weighted, stands for every auto-decided post.
    share = settings.learning.test_share
    audit_test = [row for row in dataset.audit if in_test(row.text, share)]
    audit_train = [row for row in dataset.audit if not in_test(row.text, share)]
    seen.train += dataset.train + audit_train
    seen.calibration += [(row, max(1, round(1 / share))) for row in dataset.test]
    audit_weight = max(1, round(1 / (audit_rate * share))) if audit_rate > 0 else 1
    seen.calibration += [(row, audit_weight) for row in audit_test]


def _retrain(
    seen: Pool, opts: FlywheelOptions, r: int, category: str
) -> tuple[Path, RoutingSettings | None] | None:
    """A model trained on everything labelled so far and its bands (None: keep the active
    bands); None when no model could be trained."""
    if len({row.label for row in seen.train}) < 2:
        log.warning("round %d: the labelled posts are all one class so far; model kept", r)
        return None
    calibration = [row for row, _ in seen.calibration]
    out = opts.out_dir / f"round-{r}" / "model"
    checks = _labelled(calibration) if len({x.label for x in calibration}) == 2 else None
    try:
        train(
            _labelled(seen.train),
            out,
            category,
            prior=opts.prior,
            test=checks or _labelled(seen.train),
        )
    except ValueError as exc:  # scikit-learn on very few rows: e.g. no n-gram left
        log.warning("round %d: training failed (%s); model kept", r, exc)
        return None
    if not calibration:
        log.warning("round %d: nothing to calibrate on yet; bands kept", r)
        return out, None
    from classifiers.cpu import CpuClassifier

    probs = np.array(CpuClassifier.load(out, category).predict([row.text for row in calibration]))
    labels = np.array([row.label for row in calibration])
    weights = np.array([w for _, w in seen.calibration])
    try:
        return out, calibrate(probs, labels, weights, opts.escalation_rate)
    except ModpipeError as exc:
        log.warning("round %d: calibration failed (%s); bands kept", r, exc)
        return out, None
