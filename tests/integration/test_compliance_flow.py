"""The issue's whole flow: a generated history through the real workers (triage, the
escalator against the OpenAI wire server), the notice intake, the console's API (audits, a
trusted flagger's notice, appeals), the statement builder, the submitter against the DSA
database test server under faults and a kill -9, and the transparency report."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modpipe.compliance.database import TransparencyDatabase
from modpipe.compliance.ledger import Ledger
from modpipe.compliance.notices import NoticeIntake
from modpipe.compliance.records import appeal_verdict_id
from modpipe.compliance.rules import problems
from modpipe.compliance.statements import APPEAL_MODEL_PREFIX, puid_for
from modpipe.compliance.submitter import Submitter
from modpipe.core.metrics import Metrics
from modpipe.core.records import Verdict
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings
from tests.conftest import MakeSettings
from tests.dsa_database_server import dsa_database_server
from tests.integration.conftest import run_both_workers, wait_until
from tests.integration.dsa_support import appeal, dsa_settings, env_for, produce, read_all
from tests.integration.review_support import (
    add_users,
    claim_when_queued,
    client,
    running_console,
    sign_in,
)
from tests.integration.test_appeals import build, instant
from tests.openai_wire_server import openai_wire_server

BENIGN = [f"What a lovely morning at the beach {i}" for i in range(8)]
PROFANE = [f"you are a fucking idiot {i}" for i in range(6)]  # tier 1 blocks these
BORDERLINE = ["your opinion is garbage", "screw you", "I hate mondays", "that game sucked"]


def ledger(settings: Settings) -> Ledger:
    return Ledger(connect_redis(settings.redis, timeout_s=2.0), settings.redis.key_prefix, 10)


async def review_everything(settings: Settings) -> int:
    """ann decides every review item through the API: profanity blocked, the rest allowed,
    the trusted flagger's notice blocked for violence. The number decided."""
    decided = 0
    async with running_console(settings) as console, client(console) as ann:
        await sign_in(ann, "ann")
        while True:
            try:
                item = await claim_when_queued(ann, timeout_s=8.0)
            except AssertionError:
                return decided
            text = item["post"]["text"]
            if item["reason"] == "notice":
                body = {"action": "block", "categories": ["violence"]}
            elif "fucking" in text:
                body = {"action": "block", "categories": ["harassment"]}
            else:
                body = {"action": "allow", "categories": []}
            r = await ann.post("/api/decisions", json={"item_id": item["item_id"], **body})
            assert r.status_code == 200, r.text
            decided += 1


async def decide_appeals(settings: Settings) -> None:
    async with running_console(settings) as console, client(console) as bob:
        await sign_in(bob, "bob")
        for _ in range(2):
            item = await claim_when_queued(bob, reason="appeal")
            outcome = "reversed" if item["appeal"]["appeal_id"] == "flow-a1" else "upheld"
            r = await bob.post(
                "/api/decisions", json={"item_id": item["item_id"], "outcome": outcome}
            )
            assert r.status_code == 200, r.text


async def submit_with_kill(settings: Settings, server: Any) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modpipe", "statements", "worker", env=env_for(settings)
    )
    try:
        await wait_until(lambda: len(server.stored) >= 4, 90, "the worker storing some")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        await worker.wait()
    s = settings.statements
    db = TransparencyDatabase(s.base_url, server.token, s.timeout_s, 50)
    book = ledger(settings)
    try:
        assert await asyncio.wait_for(Submitter(settings, db, book, Metrics()).run(3.0), 120) == 0
    finally:
        await book.aclose()
        await db.aclose()


def table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


async def test_the_whole_flow(make_settings: MakeSettings, tmp_path: Path) -> None:
    async with openai_wire_server() as wire, dsa_database_server() as server:
        server.hang_s = 2.0
        settings = dsa_settings(
            make_settings,
            routing={"allow_below": 0.5, "block_above": 0.99},
            triage={"audit_rate": 0.5},
            escalation={"provider": "chat", "base_url": wire.url, "deadline_s": 10.0},
            statements={"base_url": server.base_url, "token": server.token, "batch_max": 2,
                        "requests_per_s": 2},
        )  # fmt: skip
        wire.answers = {"your opinion is garbage": ["harassment"], "screw you": ["harassment"]}
        await add_users(settings, "ann", "bob")
        now = instant()
        notices = [
            {"notice_id": "flow-n1", "post": {"post_id": "flow-np1", "text": "screw you"},
             "category": "harassment", "trusted_flagger": False, "received_at": now},
            {"notice_id": "flow-n2", "post": {"post_id": "flow-np2", "text": "we will find you"},
             "category": "violence", "trusted_flagger": True, "received_at": now},
        ]  # fmt: skip
        await produce(settings, settings.topics.notices,
                      [(n["notice_id"], json.dumps(n).encode()) for n in notices])  # fmt: skip
        book = ledger(settings)
        try:
            assert await NoticeIntake(settings, book, Metrics()).run(idle_exit=3.0) == 0
        finally:
            await book.aclose()
        texts = BENIGN + PROFANE + BORDERLINE
        posts = [(f"flow-{i}", json.dumps({"post_id": f"flow-{i}", "text": t}).encode())
                 for i, t in enumerate(texts)]  # fmt: skip
        await produce(settings, settings.topics.posts, posts)
        await run_both_workers(settings)
        reviewed = await review_everything(settings)
        assert reviewed >= 2  # the trusted flagger's notice and some audits
        await build(settings)

        machine_blocks = [
            v for _, v in await read_all(settings, settings.topics.verdicts)
            if v["tier"] == "small" and v["action"] == "block" and "fucking" in texts[int(v["post_id"].split("-")[1])]
        ]  # fmt: skip
        assert machine_blocks
        flagged = "flow-np2"
        await produce(
            settings,
            settings.topics.appeals,
            [
                (machine_blocks[0]["post_id"],
                 appeal("flow-a1", machine_blocks[0]["post_id"], instant())),
                (flagged, appeal("flow-a2", flagged, instant())),
            ],
        )  # fmt: skip
        await decide_appeals(settings)
        await build(settings)

        # Every restrictive decision has exactly one statement, and each passes the rules.
        verdicts = [
            Verdict.model_validate(v) for _, v in await read_all(settings, settings.topics.verdicts)
        ]
        blocks = {puid_for(v) for v in verdicts if v.action == "block"}
        statements = await read_all(settings, settings.topics.statements)
        assert Counter(k for k, _ in statements) == Counter(blocks)  # one each, none extra
        assert all(problems(s) == {} for _, s in statements)
        assert "modpipe-" + appeal_verdict_id("flow-a2") in blocks
        assert "modpipe-" + appeal_verdict_id("flow-a1") not in blocks  # reversed: allow

        # The submitter stores them all under faults and a kill -9, none twice.
        server.faults += ["429", "500", "store_then_timeout", "timeout"]
        await submit_with_kill(settings, server)
        assert set(server.stored) == blocks
        assert max(server.created.values()) == 1
        assert sum(server.duplicates.values()) == 0  # none sent again once stored

        # The report's counts against counts taken here from the same history.
        today = datetime.now(UTC).date().isoformat()
        out = tmp_path / "report"
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modpipe", "transparency", "report",
            "--from", today, "--to", today, "--out", str(out), env=env_for(settings),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await asyncio.wait_for(command.wait(), 120) == 0
    noticed = {"flow-np1", "flow-np2"}
    own = [v for v in verdicts if v.action == "block" and v.post_id not in noticed
           and not v.model.startswith(APPEAL_MODEL_PREFIX)]  # fmt: skip
    rows = table(out / "part5_6_own_initiative.csv")
    assert sum(int(r["measures"]) for r in rows) == len(own)
    assert sum(int(r["solely_automated"]) for r in rows) == sum(v.tier != "human" for v in own)
    complaints = {r["measure"]: int(r["count"]) for r in table(out / "part7_complaints.csv")}
    assert (complaints["received"], complaints["upheld"], complaints["reversed"]) == (2, 1, 1)
    assert complaints["restrictions_after_complaint"] == 1
    notices_rows = {r["notice_category"]: r for r in table(out / "part4_notices.csv")}
    assert int(notices_rows["violence"]["from_trusted_flaggers"]) == 1
    assert int(notices_rows["violence"]["actions_under_terms"]) == 1
    labels = [lb for _, lb in await read_all(settings, settings.topics.labels)]
    audits = sum(1 for lb in labels if lb["reason"] == "audit")
    assert audits > 0
    means = [r for r in table(out / "part8_automated_means.csv") if r["scope"] == "total"]
    assert sum(int(r["audited"]) for r in means) == audits
