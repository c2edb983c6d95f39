"""The gate before a switch: a candidate configuration against production's, on evidence.

A candidate is a complete settings file (a model, bands, rules, a backend). It passes
only when every check holds (`PromoteSettings` holds the margins):

- held-out quality: AUPRC no lower and auto-decided error no higher than production's,
  within `margin`, on average and on the worst `worst_share` of slices (per category,
  language and surface; only slices with at least `min_slice_posts` posts are judged;
  AUPRC only where a slice has both classes). Each side's tail is its own worst slices;
- the shadow run (`modpipe shadow report --json`): at least `min_shadow_posts` posts
  compared and agreement at least `min_agreement`, or, where reviewers labelled
  disagreements, the candidate right on more of them than production;
- escalation: the candidate's escalation rate on the held-out set within production's
  `routing.expected_escalation_rate` plus `escalation_room` (the frontier budget was sized
  for that rate).

`promote` is the one way a candidate becomes active: `modpipe promote` and each round of
`modpipe flywheel` call it.

Rules in either configuration decide first, as in triage: a rule's `block` counts as a
score of 1 and a block route, `allow` as 0 and an allow route, `review` and `escalate` as
escalated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from sklearn.metrics import average_precision_score

from modpipe.core.errors import ConfigError
from modpipe.core.records import Post, now_rfc3339
from modpipe.core.settings import PromoteSettings, Settings, load_settings, packaged_config
from modpipe.quality.bands import scores_of
from streams.routing import route
from streams.rules_book import load_rules
from streams.rules_dry import dry_run


@dataclass(slots=True)
class Heldout:
    """Labelled posts with the fields slices are cut by."""

    texts: list[str]
    labels: list[int]
    slices: list[list[str]]  # per post: "category:hate", "lang:en", "surface:comment", ...


@dataclass(slots=True)
class Predictions:
    """One configuration's top score and route per held-out post."""

    p: np.ndarray
    routes: list[str]


@dataclass(slots=True)
class Verdict:
    """The gate's answer: passed, and every check with its figures."""

    passed: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str, **figures: Any) -> None:
        self.checks.append({"check": name, "ok": ok, "detail": detail, **figures})
        self.passed = self.passed and ok


def load_heldout(path: Path) -> Heldout:
    """JSONL rows `{"text", "label": 0|1, "categories"?, "lang"?, "surface"?}`."""
    data = Heldout([], [], [])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text, label = str(row["text"]), int(row["label"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}:{n}: not a labelled post: {exc}") from None
        cats = row.get("categories") or ["none"]
        slices = [f"category:{c}" for c in cats]
        slices += [f"{k}:{row[k]}" for k in ("lang", "surface") if row.get(k)]
        data.texts.append(text)
        data.labels.append(1 if label else 0)
        data.slices.append(slices)
    if len(set(data.labels)) < 2:
        raise ConfigError(f"{path}: the held-out set needs both labels")
    return data


def predict(settings: Settings, data: Heldout, scores: list[dict[str, float]]) -> Predictions:
    """Top scores and routes under `settings`' bands, its rules deciding first."""
    p = np.array([max(s.values(), default=0.0) for s in scores])
    routes: list[str] = [route(s, settings.routing).route for s in scores]
    if settings.rules.path is not None:
        book = load_rules(settings.rules.path, set(settings.policy.categories))
        posts = [Post(post_id=str(i), text=t) for i, t in enumerate(data.texts)]
        for i, outcome in enumerate(dry_run(book, posts).outcomes):
            if outcome.rule is None:
                continue
            action = outcome.rule.action
            routes[i] = action if action in ("allow", "block") else "escalate"
            if action in ("allow", "block"):
                p[i] = 1.0 if action == "block" else 0.0
    return Predictions(p, routes)


def measure(y: np.ndarray, pred: Predictions, index: list[int]) -> dict[str, Any]:
    """AUPRC (None with one class), auto-decided error and escalation rate on `index`."""
    ys, ps = y[index], pred.p[index]
    routes = [pred.routes[i] for i in index]
    auto = [k for k, r in enumerate(routes) if r != "escalate"]
    wrong = sum(1 for k in auto if (routes[k] == "block") != bool(ys[k]))
    return {
        "n": len(index),
        "auprc": float(average_precision_score(ys, ps)) if len(set(ys.tolist())) == 2 else None,
        "auto_error": wrong / len(auto) if auto else 0.0,
        "escalation": 1 - len(auto) / len(index) if index else 0.0,
    }


def tail(
    per_slice: dict[str, dict[str, Any]], metric: str, share: float, worst_high: bool
) -> float:
    """The mean of `metric` over the worst `share` of slices (at least one)."""
    values = sorted(
        (s[metric] for s in per_slice.values() if s[metric] is not None), reverse=worst_high
    )
    if not values:
        return math.nan
    k = max(1, math.ceil(share * len(values)))
    return float(np.mean(values[:k]))


def gate(
    production: Settings,
    candidate: Settings,
    data: Heldout,
    prod_scores: list[dict[str, float]],
    cand_scores: list[dict[str, float]],
    shadow: dict[str, Any] | None,
    rules: PromoteSettings,
) -> Verdict:
    """Every check of the gate, with its figures."""
    y = np.array(data.labels)
    prod, cand = predict(production, data, prod_scores), predict(candidate, data, cand_scores)
    everyone = list(range(len(y)))
    verdict = Verdict(True)
    m = rules.margin
    p_all, c_all = measure(y, prod, everyone), measure(y, cand, everyone)
    assert p_all["auprc"] is not None and c_all["auprc"] is not None
    verdict.check(
        "auprc",
        c_all["auprc"] >= p_all["auprc"] - m,
        f"candidate {c_all['auprc']:.4f} vs production {p_all['auprc']:.4f} (margin {m})",
        candidate=c_all["auprc"],
        production=p_all["auprc"],
    )
    verdict.check(
        "auto_error",
        c_all["auto_error"] <= p_all["auto_error"] + m,
        f"candidate {c_all['auto_error']:.4f} vs production {p_all['auto_error']:.4f} (margin {m})",
        candidate=c_all["auto_error"],
        production=p_all["auto_error"],
    )
    _tail_checks(verdict, y, prod, cand, data, rules)
    room = production.routing.expected_escalation_rate + rules.escalation_room
    verdict.check(
        "escalation_rate",
        c_all["escalation"] <= room,
        f"candidate escalates {c_all['escalation']:.4f}, the budget's room is {room:.4f}",
        candidate=c_all["escalation"],
        room=room,
    )
    _shadow_check(verdict, shadow, rules)
    return verdict


def _tail_checks(
    verdict: Verdict,
    y: np.ndarray,
    prod: Predictions,
    cand: Predictions,
    data: Heldout,
    rules: PromoteSettings,
) -> None:
    """The worst slices' AUPRC and automatic error, candidate against production."""
    m = rules.margin
    by_slice: dict[str, list[int]] = {}
    for i, names in enumerate(data.slices):
        for name in names:
            by_slice.setdefault(name, []).append(i)
    judged = {k: ix for k, ix in by_slice.items() if len(ix) >= rules.min_slice_posts}
    p_slices = {k: measure(y, prod, ix) for k, ix in judged.items()}
    c_slices = {k: measure(y, cand, ix) for k, ix in judged.items()}
    for metric, worst_high in (("auprc", False), ("auto_error", True)):
        pt = tail(p_slices, metric, rules.worst_share, worst_high)
        ct = tail(c_slices, metric, rules.worst_share, worst_high)
        if math.isnan(pt) or math.isnan(ct):
            verdict.check(f"tail_{metric}", True, "no slice to judge", slices=len(judged))
            continue
        ok = ct >= pt - m if metric == "auprc" else ct <= pt + m
        worst = sorted(c_slices, key=lambda k: c_slices[k][metric] or 0, reverse=worst_high)[:3]
        verdict.check(
            f"tail_{metric}",
            ok,
            f"worst {rules.worst_share:.0%} of {len(judged)} slices: candidate {ct:.4f} vs "
            f"production {pt:.4f} (candidate's worst: {', '.join(worst)})",
            candidate=ct,
            production=pt,
        )


def _shadow_check(verdict: Verdict, shadow: dict[str, Any] | None, rules: PromoteSettings) -> None:
    if rules.min_shadow_posts == 0:
        verdict.check("shadow", True, "no shadow run required (promote.min_shadow_posts: 0)")
        return
    if shadow is None:
        verdict.check("shadow", False, "no shadow report (modpipe shadow report --json > FILE)")
        return
    posts = int(shadow.get("posts", 0))
    agreement = float(shadow.get("agreement", 0.0))
    labelled = shadow.get("labels") or {}
    cand_right = int(labelled.get("candidate_right", 0))
    prod_right = int(labelled.get("production_right", 0))
    enough = posts >= rules.min_shadow_posts
    agrees = agreement >= rules.min_agreement
    explained = cand_right > prod_right
    verdict.check(
        "shadow",
        enough and (agrees or explained),
        f"{posts} posts compared (need {rules.min_shadow_posts}), agreement {agreement:.4f} "
        f"(need {rules.min_agreement}); on labelled disagreements the candidate was right "
        f"{cand_right} times, production {prod_right}",
        posts=posts,
        agreement=agreement,
    )


def write_active(candidate_path: Path, active: Path, note: str) -> None:
    """The candidate as the active settings file, written atomically. Its policy file
    resolves as `load_settings` resolves it (against the candidate's folder, else the
    packaged one); model and rule paths as the candidate meant them (the working folder)."""
    data = yaml.safe_load(candidate_path.read_text()) or {}
    if "policy_file" in data:
        policy = Path(data["policy_file"]).expanduser()
        data["policy_file"] = str(
            policy if policy.is_absolute() else (candidate_path.parent / policy).resolve()
        )
    else:
        data["policy_file"] = str(packaged_config().parent / "policy.yaml")
    for section, key in (("classifier", "model_path"), ("rules", "path")):
        if isinstance(data.get(section), dict) and data[section].get(key):
            data[section][key] = str(Path(data[section][key]).expanduser().resolve())
    tmp = active.with_name(f".{active.name}.promote")
    tmp.write_text(f"# {note}\n" + yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, active)


def check_lines(checks: list[dict[str, Any]]) -> list[str]:
    """One line per check: `ok` or `FAIL`, its name, its figures."""
    return [f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']:<16} {c['detail']}" for c in checks]


async def promote(
    production: Settings,
    candidate_path: Path,
    data: Heldout,
    shadow: dict[str, Any] | None,
    active: Path,
    *,
    source: str,
    dry_run: bool = False,
) -> tuple[Verdict, bool]:
    """The gate's verdict on the candidate settings file, and whether it was written to
    `active` (only when it passed and not `dry_run`); `source` names the held-out data in
    the active file's header."""
    candidate = load_settings(candidate_path)
    prod_scores = await scores_of(production, data.texts)
    cand_scores = await scores_of(candidate, data.texts)
    verdict = gate(
        production, candidate, data, prod_scores, cand_scores, shadow, production.promote
    )
    if not verdict.passed or dry_run:
        return verdict, False
    digest = hashlib.sha256(candidate_path.read_bytes()).hexdigest()[:16]
    write_active(
        candidate_path,
        active,
        f"promoted by the promotion gate at {now_rfc3339()} from {candidate_path} "
        f"(sha256 {digest}) on {source}",
    )
    return verdict, True
