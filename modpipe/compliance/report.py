"""The DSA transparency report (Implementing Regulation 2024/2835, Annex I) from the topics.

`collect` reads the verdicts, labels, notices, appeals and statements topics from their
beginning (read_committed); `compute` is a pure function of those records and the period;
`write` puts the CSVs (RFC 4180, UTF-8), a plain-language summary and a chart in a folder.

Counting rules (docs/compliance.md): a measure is a restrictive verdict (a block), counted
on the day it was decided, in the one DSA category its statement of reasons names (the
most specific). Own-initiative measures (Parts 5, 6) are blocks on posts no notice
reported, appeal outcomes excluded (those are Part 7's restrictions after a complaint).
Part 8 measures each classifier (tier and model) on the audit sample: reviewers' labels
with reason `audit` against the classifier's verdict on the same post, block being the
positive class, with 95% Clopper-Pearson intervals.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from modpipe.compliance.consuming import ensure_compliance_topics
from modpipe.compliance.records import appeal_verdict_id
from modpipe.compliance.statements import (
    APPEAL_MODEL_PREFIX,
    MACHINE_TIERS,
    Context,
    build_statement,
    verdict_key,
)
from modpipe.core import dsa
from modpipe.core.errors import StackError
from modpipe.core.kafka import client_options, topic_partitions
from modpipe.core.progress import Progress, no_progress
from modpipe.core.records import Verdict
from modpipe.core.settings import Policy, Settings
from modpipe.core.stats import clopper_pearson_interval

OUTCOMES = ("upheld", "partially_reversed", "reversed")


@dataclass
class History:
    """Every record on the compliance-relevant topics, as JSON objects."""

    verdicts: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    appeals: list[dict[str, Any]] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    """The report's tables (header first) and its figures for the summary."""

    start: date
    end: date
    tables: dict[str, list[list[Any]]]
    figures: dict[str, Any]
    per_tier_category: dict[tuple[str, str], int]


def day_of(instant: str) -> date:
    """The UTC day of an RFC 3339 instant."""
    parsed = datetime.fromisoformat(instant)
    return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).date()


def _hours(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds() / 3600


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else ""


def _unique(verdicts: Iterable[dict[str, Any]]) -> list[Verdict]:
    seen: dict[str, Verdict] = {}
    for raw in verdicts:
        try:
            v = Verdict.model_validate(raw)
        except ValueError:
            continue
        seen.setdefault(verdict_key(v), v)
    return sorted(seen.values(), key=lambda v: v.decided_at)


def compute(history: History, start: date, end: date, policy: Policy) -> Report:
    """The report for the days `start` to `end` (inclusive, UTC)."""

    def within(instant: str | None) -> bool:
        return bool(instant) and start <= day_of(str(instant)) <= end

    verdicts = _unique(history.verdicts)
    notices: dict[str, dict[str, Any]] = {}
    for n in sorted(history.notices, key=lambda n: n.get("received_at", "")):
        post_id = str((n.get("post") or {}).get("post_id", ""))
        notices.setdefault(post_id, n)
    tables: dict[str, list[list[Any]]] = {}
    figures: dict[str, Any] = {}
    _part4(tables, figures, history, verdicts, policy, within)
    _parts5_6(tables, figures, verdicts, notices, policy, within)
    _part7(tables, figures, history, verdicts, within)
    _part8(tables, figures, history, verdicts, notices, within)
    figures["statements"] = sum(
        1 for s in history.statements if within(s.get("application_date", "") + "T00:00:00+00:00")
    )
    per: Counter[tuple[str, str]] = Counter()
    for v in verdicts:
        if within(v.decided_at) and v.action == "block":
            for c in v.categories or ["(none)"]:
                per[(v.tier, c)] += 1
    return Report(start, end, tables, figures, dict(per))


def _part4(tables: dict[str, Any], figures: dict[str, Any], history: History,
           verdicts: list[Verdict], policy: Policy, within: Any) -> None:  # fmt: skip
    by_post: dict[str, list[Verdict]] = defaultdict(list)
    for v in verdicts:
        if v.action in ("allow", "block") and not v.model.startswith(APPEAL_MODEL_PREFIX):
            by_post[v.post_id].append(v)
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    hours: dict[str, list[float]] = defaultdict(list)
    for n in history.notices:
        if not within(n.get("received_at")):
            continue
        category = n.get("category") or "not_specified"
        row = rows[category]
        row["received"] += 1
        row["trusted_flagger"] += bool(n.get("trusted_flagger"))
        post_id = str((n.get("post") or {}).get("post_id", ""))
        after = [v for v in by_post.get(post_id, []) if v.decided_at >= n["received_at"]]
        if not after:
            row["pending"] += 1
            continue
        decided = after[0]
        hours[category].append(_hours(decided.decided_at, n["received_at"]))
        if decided.action == "block":
            s = build_statement(decided, policy, Context("notice"))
            assert s is not None
            row["action_illegal" if s["decision_ground"] == dsa.ILLEGAL else "action_tc"] += 1
        else:
            row["no_action"] += 1
    header = ["notice_category", "notices_received", "from_trusted_flaggers", "items",
              "actions_under_law", "actions_under_terms", "no_action", "undecided",
              "median_hours_notice_to_decision"]  # fmt: skip
    body = [
        [c, r["received"], r["trusted_flagger"], r["received"], r["action_illegal"],
         r["action_tc"], r["no_action"], r["pending"], _median(hours[c])]
        for c, r in sorted(rows.items())
    ]  # fmt: skip
    tables["part4_notices.csv"] = [header, *body]
    figures["notices"] = sum(r["received"] for r in rows.values())
    figures["notices_trusted"] = sum(r["trusted_flagger"] for r in rows.values())


def _parts5_6(tables: dict[str, Any], figures: dict[str, Any], verdicts: list[Verdict],
              notices: dict[str, Any], policy: Policy, within: Any) -> None:  # fmt: skip
    counts: Counter[tuple[str, str, str]] = Counter()
    automated: Counter[tuple[str, str, str]] = Counter()
    for v in verdicts:
        if v.action != "block" or not within(v.decided_at) or v.post_id in notices:
            continue
        if v.model.startswith(APPEAL_MODEL_PREFIX):
            continue
        s = build_statement(v, policy, Context())
        assert s is not None
        part = "5" if s["decision_ground"] == dsa.ILLEGAL else "6"
        key = (part, s["category"], s["decision_visibility"][0])
        counts[key] += 1
        automated[key] += s["automated_decision"] == dsa.FULLY
    header = ["part", "ground", "category", "restriction", "measures", "solely_automated"]
    grounds = {"5": "illegal_content", "6": "terms_and_conditions"}
    body = [
        [p, grounds[p], c, r, n, automated[(p, c, r)]] for (p, c, r), n in sorted(counts.items())
    ]
    tables["part5_6_own_initiative.csv"] = [header, *body]
    figures["own_initiative"] = sum(counts.values())
    figures["own_initiative_automated"] = sum(automated.values())


def _part7(tables: dict[str, Any], figures: dict[str, Any], history: History,
           verdicts: list[Verdict], within: Any) -> None:  # fmt: skip
    outcome_of = {v.verdict_id: v for v in verdicts if v.model.startswith(APPEAL_MODEL_PREFIX)}
    received = [a for a in history.appeals if within(a.get("received_at"))]
    by_id = {a["appeal_id"]: a for a in history.appeals if "appeal_id" in a}
    counts: Counter[str] = Counter()
    hours: dict[str, list[float]] = defaultdict(list)
    restrictions = 0
    for appeal_id, a in by_id.items():
        v = outcome_of.get(appeal_verdict_id(appeal_id))
        if v is None or not within(v.decided_at):
            continue
        outcome = v.model.removeprefix(APPEAL_MODEL_PREFIX)
        counts[outcome] += 1
        hours[outcome].append(_hours(v.decided_at, a["received_at"]))
        restrictions += v.action == "block"
    omitted = sum(1 for a in received if appeal_verdict_id(a["appeal_id"]) not in outcome_of)
    all_hours = [h for o in OUTCOMES for h in hours[o]]
    header = ["measure", "count", "median_hours_received_to_decided"]
    body: list[list[Any]] = [["received", len(received), ""]]
    body += [[o, counts[o], _median(hours[o])] for o in OUTCOMES]
    body += [["decided", sum(counts.values()), _median(all_hours)]]
    body += [["omitted_undecided", omitted, ""], ["restrictions_after_complaint", restrictions, ""]]
    tables["part7_complaints.csv"] = [header, *body]
    figures["appeals"] = len(received)
    figures["appeal_outcomes"] = dict(counts)
    figures["appeal_median_hours"] = _median(all_hours)


def _rate(k: int, n: int) -> list[str]:
    if n == 0:
        return ["", "", ""]
    low, high = clopper_pearson_interval(k, n)
    return [f"{k / n:.4f}", f"{low:.4f}", f"{high:.4f}"]


def _part8(tables: dict[str, Any], figures: dict[str, Any], history: History,
           verdicts: list[Verdict], notices: dict[str, Any], within: Any) -> None:  # fmt: skip
    machine = [v for v in verdicts if v.tier in MACHINE_TIERS and v.action in ("allow", "block")]
    decisions: Counter[tuple[str, str, str]] = Counter()
    blocks: Counter[tuple[str, str, str]] = Counter()
    latest: dict[str, Verdict] = {}
    for v in machine:
        latest[v.post_id] = v  # sorted by decided_at: the last one wins
        if within(v.decided_at):
            for scope in ("total", "notices" if v.post_id in notices else "own_initiative"):
                decisions[(v.tier, v.model, scope)] += 1
                blocks[(v.tier, v.model, scope)] += v.action == "block"
    confusion: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for label in history.labels:
        if label.get("reason") != "audit" or not within(label.get("decided_at")):
            continue
        audited = latest.get(str((label.get("post") or {}).get("post_id", "")))
        if audited is None:
            continue
        said_block = audited.action == "block"
        cell = ("t" if said_block == (label["action"] == "block") else "f") + (
            "p" if said_block else "n"
        )
        scope = "notices" if audited.post_id in notices else "own_initiative"
        for s in ("total", scope):
            confusion[(audited.tier, audited.model, s)][cell] += 1
    header = ["tier", "classifier", "scope", "decisions", "restrictions_solely_automated",
              "audited", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "precision",
              "precision_ci95_low", "precision_ci95_high", "recall", "recall_ci95_low",
              "recall_ci95_high"]  # fmt: skip
    body = []
    for key in sorted(set(decisions) | set(confusion)):
        c = confusion[key]
        n = sum(c.values())
        body.append(
            [*key, decisions[key], blocks[key], n,
             *_rate(c["tp"] + c["tn"], n), *_rate(c["tp"], c["tp"] + c["fp"]),
             *_rate(c["tp"], c["tp"] + c["fn"])]
        )  # fmt: skip
    tables["part8_automated_means.csv"] = [header, *body]
    figures["audited"] = sum(sum(confusion[k].values()) for k in confusion if k[2] == "total")


async def collect(
    settings: Settings, timeout_s: float = 120.0, progress: Progress = no_progress
) -> History:
    """Every committed record on the five topics, read from the beginning to the end now."""
    t = settings.topics
    kinds = {
        t.verdicts: "verdicts",
        t.labels: "labels",
        t.notices: "notices",
        t.appeals: "appeals",
        t.statements: "statements",
    }
    await ensure_compliance_topics(settings)
    history = History()
    reader = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await reader.start()
    try:
        parts = await topic_partitions(settings.kafka, list(kinds))
        reader.assign(parts)
        await reader.seek_to_beginning(*parts)
        ends = await reader.end_offsets(parts)
        total, read = sum(ends.values()), 0  # offsets, transaction markers included
        deadline = time.monotonic() + timeout_s
        while [tp for tp in parts if await reader.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise StackError(f"could not read the topics to their end in {timeout_s:g}s")
            for tp, records in (await reader.getmany(timeout_ms=500)).items():
                read += len(records)
                progress("records read", min(read, total), total)
                for r in records:
                    try:
                        value = json.loads(r.value or b"")
                    except ValueError:
                        continue  # the DLQ has it
                    if isinstance(value, dict):
                        getattr(history, kinds[tp.topic]).append(value)
    finally:
        await reader.stop()
    return history


def write(report: Report, out: Path) -> list[Path]:
    """The CSVs, `summary.md` and `decisions.png` in `out`; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in report.tables.items():
        path = out / name
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\r\n").writerows(rows)  # RFC 4180
        written.append(path)
    summary = out / "summary.md"
    summary.write_text(summary_text(report), encoding="utf-8")
    written.append(summary)
    chart = out / "decisions.png"
    draw_chart(report, chart)
    written.append(chart)
    return written


def summary_text(report: Report) -> str:
    """The report in plain language."""
    f = report.figures
    auto = f["own_initiative_automated"]
    own = f["own_initiative"]
    outcomes = f["appeal_outcomes"]
    lines = [
        f"# Transparency report, {report.start} to {report.end}",
        "",
        f"- People and trusted flaggers sent **{f['notices']} notices** about content "
        f"({f['notices_trusted']} from trusted flaggers).",
        f"- On our own initiative we restricted content **{own} times**; "
        f"{auto} of those decisions were taken by automated means alone"
        + (f" ({auto / own:.0%})." if own else "."),
        f"- Users sent **{f['appeals']} complaints** against our decisions. Decided in the "
        f"period: {outcomes.get('upheld', 0)} upheld, "
        f"{outcomes.get('partially_reversed', 0)} partially reversed, "
        f"{outcomes.get('reversed', 0)} reversed"
        + (f"; half were decided within {f['appeal_median_hours']} hours." if outcomes else "."),
        "  Every complaint is decided by a person, never by a machine alone.",
        f"- We checked our automated classifiers against **{f['audited']} decisions** a "
        "person reviewed again at random (the audit sample); Part 8 gives each one's "
        "accuracy, precision and recall with 95% confidence intervals.",
        f"- We wrote **{f['statements']} statements of reasons** for decisions in the "
        "period, one per restriction, for the EU Transparency Database.",
        "",
        "The tables are the CSV files beside this summary (Annex I of Implementing "
        "Regulation (EU) 2024/2835); `decisions.png` shows restrictions per tier and "
        "category.",
        "",
    ]
    return "\n".join(lines)


def draw_chart(report: Report, path: Path) -> None:
    """A bar chart of restrictions per deciding tier, stacked by policy category."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tiers = sorted({t for t, _ in report.per_tier_category})
    categories = sorted({c for _, c in report.per_tier_category})
    fig, ax = plt.subplots(figsize=(9.5, 4.5), dpi=100)
    bottom = [0] * len(tiers)
    for c in categories:
        heights = [report.per_tier_category.get((t, c), 0) for t in tiers]
        ax.bar(tiers, heights, bottom=bottom, label=c)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_title(f"Restrictions by who decided, {report.start} to {report.end}")
    ax.set_ylabel("restrictive decisions")
    ax.set_xlabel("tier (human: a reviewer; small, frontier, cache: automated)")
    if categories:
        ax.legend(title="category", fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
