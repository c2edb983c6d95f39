"""`modpipe eval` and `modpipe calibrate`: quality per tier and bands from evidence.

A post is violating (label 1) or not. Tier 1 routes it with the configured bands;
auto-decided posts are scored against their labels, escalated ones are left to tier 2.
For band search each post is reduced to its highest category score.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import average_precision_score, roc_auc_score

from classifiers import Classifier, build_classifier
from modpipe.core.cost import CostModel, estimate_tokens
from modpipe.core.errors import ConfigError
from modpipe.core.settings import RoutingSettings, Settings
from modpipe.core.stats import clopper_pearson_upper
from modpipe.quality.datasets import Labelled
from streams.routing import route

BATCH = 512
GRID = 241


async def score(classifier: Classifier, texts: list[str]) -> list[dict[str, float]]:
    """Category scores for every text, batched like the triage worker does."""
    out: list[dict[str, float]] = []
    for start in range(0, len(texts), BATCH):
        for item in await classifier.classify(texts[start : start + BATCH]):
            if isinstance(item, Exception):
                raise item
            out.append(item.scores)
    return out


async def scores_of(settings: Settings, texts: list[str]) -> list[dict[str, float]]:
    """`score` with the classifier `settings` configure, closed after."""
    classifier = build_classifier(settings)
    try:
        return await score(classifier, texts)
    finally:
        await classifier.aclose()


@dataclass(frozen=True)
class BandTable:
    """Every (allow_below, block_above) pair on a grid, with its counts."""

    allow: np.ndarray
    block: np.ndarray
    escalated: np.ndarray
    errors: np.ndarray
    auto: np.ndarray
    n: int


def band_table(probs: np.ndarray, labels: np.ndarray) -> BandTable:
    """Counts for each pair of thresholds taken at quantiles of `probs`."""
    grid = np.unique(np.concatenate([np.quantile(probs, np.linspace(0, 1, GRID)), [0.0, 1.0001]]))
    order = np.argsort(probs)
    p, y = probs[order], labels[order]
    cum_pos = np.concatenate([[0], np.cumsum(y)])
    below = np.searchsorted(p, grid, side="left")  # count of p < t
    pos_below = cum_pos[below]
    neg_below = below - pos_below
    total_neg = len(y) - int(y.sum())
    a, b = np.meshgrid(np.arange(len(grid)), np.arange(len(grid)), indexing="ij")
    valid = a <= b
    escalated = np.where(valid, below[b] - below[a], len(y) + 1)
    errors = pos_below[a] + (total_neg - neg_below[b])
    return BandTable(grid[a], grid[b], escalated, errors, len(y) - escalated, len(y))


def best_for_escalation(table: BandTable, target: float) -> tuple[float, float]:
    """Bands with the fewest auto-decided errors among those escalating at most `target`."""
    ok = table.escalated <= target * table.n
    if not ok.any():
        raise ConfigError(f"no bands escalate at most {target:.1%}")
    errors = np.where(ok, table.errors, np.iinfo(np.int64).max)
    i = np.unravel_index(np.argmin(errors + table.escalated / (table.n + 1)), errors.shape)
    return float(table.allow[i]), float(table.block[i])


def best_for_error(table: BandTable, max_error: float, confidence: float) -> tuple[float, float]:
    """The least escalation whose auto-decided error is below `max_error` with `confidence`."""
    auto = np.maximum(table.auto, 1)
    upper = clopper_pearson_upper(table.errors, table.auto, confidence)
    ok = (upper <= max_error) & (table.escalated <= table.n)
    if not ok.any():
        raise ConfigError(f"no bands reach auto error <= {max_error:.2%} at {confidence:.0%}")
    escalated = np.where(ok, table.escalated + table.errors / auto, np.inf)
    i = np.unravel_index(np.argmin(escalated), escalated.shape)
    return float(table.allow[i]), float(table.block[i])


def evaluate(
    data: Labelled, scores: list[dict[str, float]], bands: RoutingSettings
) -> dict[str, Any]:
    """Ranking quality and what the bands give on `data`."""
    y = np.array(data.labels)
    p = np.array([max(s.values(), default=0.0) for s in scores])
    routes = [route(s, bands).route for s in scores]
    auto = [i for i, r in enumerate(routes) if r != "escalate"]
    wrong = [i for i in auto if (routes[i] == "block") != bool(y[i])]
    allowed = [i for i in auto if routes[i] == "allow"]
    blocked = [i for i in auto if routes[i] == "block"]
    positives = int(y.sum())
    confidence = {i: (p[i] if routes[i] == "block" else 1 - p[i]) for i in wrong}
    worst = sorted(wrong, key=lambda i: -confidence[i])[: max(1, len(wrong) // 20)]
    report: dict[str, Any] = {
        "n": len(y),
        "positive_rate": positives / len(y),
        "auroc": float(roc_auc_score(y, p)),
        "auprc": float(average_precision_score(y, p)),
        "allow_below": bands.allow_below,
        "block_above": bands.block_above,
        "escalation_rate": 1 - len(auto) / len(y),
        "auto_error_rate": len(wrong) / max(1, len(auto)),
        "allow_error_rate": sum(y[i] for i in allowed) / max(1, len(allowed)),
        "block_error_rate": sum(1 - y[i] for i in blocked) / max(1, len(blocked)),
        "recall": sum(1 for i in range(len(y)) if y[i] and routes[i] != "allow")
        / max(1, positives),
        "block_recall": sum(y[i] for i in blocked) / max(1, positives),
        "worst_errors": [
            {
                "text": data.texts[i][:160],
                "label": int(y[i]),
                "score": round(float(p[i]), 4),
                "route": routes[i],
            }
            for i in worst
        ],
    }
    if data.groups:
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(data.groups):
            by_group.setdefault(g, []).append(i)
        report["groups"] = {
            g: {
                "n": len(ix),
                "escalated": sum(routes[i] == "escalate" for i in ix) / len(ix),
                "auto_error_rate": (
                    sum((routes[i] == "block") != bool(y[i]) for i in ix if routes[i] != "escalate")
                    / max(1, sum(routes[i] != "escalate" for i in ix))
                ),
            }
            for g, ix in sorted(by_group.items())
        }
    return report


def hybrid_vs_frontier(
    data: Labelled,
    scores: list[dict[str, float]],
    bands: RoutingSettings,
    frontier: dict[str, str],
    settings: Settings,
    overhead: int,
) -> dict[str, Any]:
    """Accuracy and cost of hybrid against frontier-only, from recorded frontier verdicts."""
    cost = CostModel(settings.prices)
    model = settings.escalation.model
    rows = [i for i in range(len(data)) if data.ids[i] in frontier or data.texts[i] in frontier]
    if not rows:
        raise ConfigError("no frontier verdict matches a post_id or text in the data")
    right_frontier = right_hybrid = 0
    usd_frontier = usd_hybrid = 0.0
    for i in rows:
        verdict = frontier.get(data.ids[i]) or frontier[data.texts[i]]
        call = cost.frontier_usd(model, estimate_tokens(data.texts[i]) + overhead, 40)
        decided = route(scores[i], bands).route
        hybrid = verdict if decided == "escalate" else decided
        right_frontier += (verdict == "block") == bool(data.labels[i])
        right_hybrid += (hybrid == "block") == bool(data.labels[i])
        usd_frontier += call
        usd_hybrid += cost.cpu_usd(1) + (call if decided == "escalate" else 0.0)
    n = len(rows)
    return {
        "n": n,
        "frontier_accuracy": right_frontier / n,
        "hybrid_accuracy": right_hybrid / n,
        "frontier_usd": usd_frontier,
        "hybrid_usd": usd_hybrid,
    }


def plot(probs: np.ndarray, labels: np.ndarray, point: tuple[float, float], path: Path) -> None:
    """Escalation rate against auto-decided error, best bands per rate, configured point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = band_table(probs, labels)
    rates = np.linspace(0, 0.6, 61)
    errors = []
    for r in rates:
        ok = table.escalated <= r * table.n
        rate = np.where(ok, table.errors / np.maximum(table.auto, 1), np.inf)
        errors.append(float(rate.min()))
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(rates * 100, np.array(errors) * 100, label="best bands for each escalation rate")
    ax.scatter([point[0] * 100], [point[1] * 100], color="red", zorder=3, label="configured bands")
    ax.set_xlabel("escalated to tier 2 (%)")
    ax.set_ylabel("error among auto-decided posts (%)")
    ax.set_title("Tier 1: escalation against auto-decided error")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load_frontier(path: Path) -> dict[str, str]:
    """Recorded frontier actions by post_id or text, from JSONL."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[str(row.get("post_id") or row["text"])] = row["action"]
    return out


def write_config(
    base: Path, out: Path, allow_below: float, block_above: float, model_path: Path | None = None
) -> None:
    """A complete settings file: `base` with the chosen bands (and the CPU model they were
    chosen for, when it is not the packaged one: bands belong to a model)."""
    data = yaml.safe_load(base.read_text()) or {}
    policy = Path(data.get("policy_file", "policy.yaml"))
    data["policy_file"] = str(policy if policy.is_absolute() else (base.parent / policy).resolve())
    data["routing"] = {"allow_below": allow_below, "block_above": block_above, "per_category": {}}
    if model_path is not None:
        data.setdefault("classifier", {})["model_path"] = str(model_path.resolve())
    out.write_text("# written by `modpipe calibrate`\n" + yaml.safe_dump(data, sort_keys=False))


def calibration_split(n: int, seed: int = 5) -> tuple[list[int], list[int]]:
    """Half to choose bands on, half to check them on."""
    index = list(range(n))
    random.Random(seed).shuffle(index)
    return index[: n // 2], index[n // 2 :]
