"""`modpipe dataset build` on real Kafka: records from both workers and the review console;
and `modpipe flywheel`, which builds one each round."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from escalation.cache import normalize
from modpipe.core.kafka import ensure_topics
from modpipe.core.records import Label, Outgoing, Verdict, encode
from modpipe.core.settings import Settings
from modpipe.quality.dataset import build, in_test, read_rows, snapshot
from modpipe.quality.replay import publish_records, run_pipeline
from tests.conftest import ROOT
from tests.openai_wire_server import openai_wire_server

BENIGN = [f"What a lovely morning at the beach {i}" for i in range(6)]
PROFANE = ["you are a fucking idiot 1", "shut up you stupid bitch 2"]  # tier 1 blocks these
BORDERLINE = ["your opinion is garbage", "screw you", "I hate mondays", "that game sucked"]


def pipeline_settings(make_settings, url: str) -> Settings:
    return make_settings(
        routing={"allow_below": 0.5, "block_above": 0.99},
        triage={"audit_rate": 1.0},  # every post tier 1 decides goes to reviewers
        escalation={"provider": "chat", "base_url": url, "deadline_s": 10.0},
        learning={"test_share": 0.5},
    )


def console_label(post_id: str, text: str, action: str, reason: str) -> Label:
    return Label(
        post={"post_id": post_id, "text": text},
        action=action,  # type: ignore[arg-type]
        categories=["harassment"] if action == "block" else [],
        reviewer="rita",
        reason=reason,
    )


@pytest.fixture
async def decided(make_settings) -> tuple[Settings, dict[str, str]]:
    """The pipeline run on a few posts, then reviewers' decisions from the console."""
    async with openai_wire_server() as wire:
        settings = pipeline_settings(make_settings, wire.url)
        wire.answers = {
            t: ["harassment"] for t in ("your opinion is garbage", "screw you", "screw   YOU")
        }
        texts = BENIGN + PROFANE + BORDERLINE + ["screw   YOU"]  # a repeat, folded
        posts = [(f"p{i}", t) for i, t in enumerate(texts)]
        await run_pipeline(settings, posts, timeout_s=120)
    await ensure_topics(settings.kafka, [settings.topics.labels], 2)
    ids = {t: pid for pid, t in posts}
    human_verdict = Verdict(
        post_id=ids[BENIGN[2]],
        action="block",
        categories=["harassment"],
        scores={},
        tier="human",
        model="console",
        policy_version="x",
        latency_ms=0.0,
        cost_usd=0.0,
    )
    records = [
        # reviewers audit tier 1: one allow confirmed, one block overturned
        console_label(ids[BENIGN[0]], BENIGN[0], "allow", "audit"),
        console_label(ids[PROFANE[0]], PROFANE[0], "allow", "audit"),
        # a reviewer overrules the frontier on an escalated post
        console_label(ids["I hate mondays"], "I hate mondays", "block", "provider_failed"),
    ]
    out = [Outgoing(settings.topics.labels, r.post["post_id"].encode(), encode(r)) for r in records]
    out.append(Outgoing(settings.topics.verdicts, b"x", encode(human_verdict)))
    await publish_records(settings, out)
    return settings, ids


async def test_build_joins_verdicts_and_labels_human_first(decided) -> None:
    settings, _ = decided
    data = build(await snapshot(settings), settings)
    rows = {normalize(r.text): r for r in data.train + data.test}
    # Every escalated text, once (the repeat folded); nothing tier 1 decided alone.
    assert set(rows) == {normalize(t) for t in BORDERLINE}
    assert data.counts["duplicates"] >= 1
    assert rows[normalize("your opinion is garbage")].label == 1
    assert rows[normalize("your opinion is garbage")].source in ("frontier", "cache")
    assert (
        rows[normalize("that game sucked")].label == 0
        and rows[normalize("that game sucked")].categories == []
    )
    assert (
        rows[normalize("I hate mondays")].label == 1
        and rows[normalize("I hate mondays")].source == "human"
    )
    # The audit sample: human labels on posts tier 1 decided, apart from train and test.
    audit = {r.text: r for r in data.audit}
    assert set(audit) == {BENIGN[0], PROFANE[0], BENIGN[2]}
    assert audit[PROFANE[0]].label == 0 and audit[BENIGN[2]].label == 1
    assert all(r.source == "human" for r in audit.values())
    for row in data.train + data.test:
        assert (row in data.test) == in_test(row.text, 0.5)


async def test_retention_leaves_out_old_records(decided) -> None:
    settings, _ = decided
    snap = await snapshot(settings)
    later = time.time() + (settings.learning.text_retention_days + 1) * 86400
    data = build(snap, settings, now_s=later)
    assert not data.train and not data.test and not data.audit
    assert data.counts["dropped"]["expired"] > 0


async def test_cli_writes_jsonl_with_provenance(decided, tmp_path: Path) -> None:
    settings, _ = decided
    env = {**os.environ}
    for name in ("escalations", "verdicts", "review", "labels"):
        env[f"MODPIPE_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    env["MODPIPE_LEARNING__TEST_SHARE"] = "0.5"
    out = subprocess.run(
        [sys.executable, "-m", "modpipe", "dataset", "build", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["train"] + manifest["test"] == len(BORDERLINE) and manifest["audit"] == 3
    rows = read_rows(tmp_path / "train.jsonl") + read_rows(tmp_path / "test.jsonl")
    assert {normalize(r.text) for r in rows} == {normalize(t) for t in BORDERLINE}
    line = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[0])
    assert set(line) == {"text", "label", "categories", "source", "post_id"}
    train = {r.text for r in read_rows(tmp_path / "train.jsonl")}
    assert not train & {r.text for r in read_rows(tmp_path / "test.jsonl")}


# The loop replayed: every round builds its dataset from what the pipeline decided.


def synthetic(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    good = ["lovely walk today", "recipe for soup", "the match was great", "new bus line"]
    bad = ["you worthless idiot", "I will hurt you", "go die loser", "people like you are vermin"]
    rows = []
    for i in range(n):
        label = int(rng.random() < 0.4)
        text = f"{rng.choice(bad if label else good)} {rng.choice(good)} #{seed}-{i}"
        rows.append({"text": text, "label": label})
    return rows


def test_replay_reports_every_round(tmp_path: Path) -> None:
    data, evalset = tmp_path / "stream.jsonl", tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic(400, 1)))
    evalset.write_text("".join(json.dumps(r) + "\n" for r in synthetic(300, 2)))
    out = subprocess.run(
        [
            *(sys.executable, "-m", "modpipe", "--log-level", "WARNING", "flywheel"),
            *("--data", str(data), "--eval", str(evalset), "--rounds", "2", "--slice", "200"),
            "--audit-rate=0.3",  # enough labelled posts of both classes in a short replay
            *("--out", str(tmp_path / "fw"), "--json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
        # A round's bands are calibrated on its ~100 labelled posts, so the held-out
        # escalation rate moves by several points between runs (0.28 against a room of
        # 0.22 refused both rounds once in three runs): this test is about the gate being
        # in the loop, not about the bands' precision.
        env={**os.environ, "MODPIPE_PROMOTE__ESCALATION_ROOM": "0.15"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rounds = json.loads(out.stdout.splitlines()[-1])["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    keys = {"auroc", "auprc", "auto_error_rate", "tier1_share_at_5pct", "frontier_calls"}
    assert all(keys | {"frontier_cost_usd"} <= set(r) for r in rounds)
    assert rounds[1]["frontier_calls"] > 0 and rounds[1]["frontier_cost_usd"] > 0
    assert all(r["posts"] == 200 for r in rounds[1:])
    manifest = json.loads((tmp_path / "fw" / "round-1" / "dataset" / "manifest.json").read_text())
    assert manifest["audit"] > 0 and manifest["train"] > 0
    # trained on what the loop labelled, the model separates the synthetic classes better
    # than the packaged one
    gates = [[c["detail"] for c in r["gate"] if not c["ok"]] for r in rounds[1:]]
    assert rounds[-1]["auroc"] > max(0.95, rounds[0]["auroc"]), gates
    # and was put in force by the promotion gate, never around it
    assert any(r["promoted"] for r in rounds[1:])
    assert all({"auprc", "escalation_rate"} <= {c["check"] for c in r["gate"]} for r in rounds[1:])
    active = (tmp_path / "fw" / "active.yaml").read_text()
    assert active.startswith("# promoted by the promotion gate") and "round-" in active
