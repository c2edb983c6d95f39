"""Appeals through the console's API: the intake's dead letters, the appeal queue, the
exclusion of the appealed decision's reviewer, outcomes as superseding verdicts, labels
and statements."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from modpipe.compliance.builder import StatementBuilder
from modpipe.compliance.ledger import Ledger
from modpipe.compliance.statements import puid_for, verdict_key
from modpipe.core import dsa
from modpipe.core.metrics import Metrics
from modpipe.core.records import encode, first_verdict_id
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings
from modpipe.review.appeals import appeal_verdict_id
from tests.conftest import MakeSettings
from tests.integration.dsa_support import appeal, dsa_settings, produce, read_all, verdict
from tests.integration.review_support import (
    add_users,
    claim_when_queued,
    client,
    running_console,
    sign_in,
)


async def build(settings: Settings) -> None:
    """The statement builder over everything on the verdicts topic (indexes histories)."""
    ledger = Ledger(connect_redis(settings.redis, timeout_s=2.0), settings.redis.key_prefix, 10)
    try:
        builder = StatementBuilder(settings, ledger, Metrics())
        assert await asyncio.wait_for(builder.run(idle_exit=3.0), 60) == 0
    finally:
        await ledger.aclose()


def instant(delta_days: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(days=delta_days)).isoformat()


async def test_appeals_are_queued_decided_and_superseded(make_settings: MakeSettings) -> None:
    settings = dsa_settings(make_settings)
    machine = verdict("ap-1", verdict_id=first_verdict_id("ap-1"))
    human = verdict(
        "ap-2", tier="human", model="human", reviewer="ann", verdict_id="e" * 32,
        supersedes=first_verdict_id("ap-2"),
    )  # fmt: skip
    await produce(
        settings, settings.topics.verdicts, [(v.post_id, encode(v)) for v in (machine, human)]
    )
    await build(settings)
    await add_users(settings, "ann", "bob")
    post = {"post_id": "ap-1", "text": "you are all idiots"}
    await produce(
        settings,
        settings.topics.appeals,
        [
            ("ap-1", appeal("a-1", "ap-1", instant(), post=post)),
            ("ap-2", appeal("a-2", "ap-2", instant())),
            ("ap-9", appeal("a-9", "ap-9", instant())),  # no verdict
            ("ap-1", appeal("a-late", "ap-1", instant(200))),  # past 183 days
        ],
    )
    async with running_console(settings) as console, client(console) as ann, client(console) as bob:
        await sign_in(ann, "ann")
        await sign_in(bob, "bob")
        first = await claim_when_queued(ann, reason="appeal")
        assert first["appeal"]["appeal_id"] == "a-1"
        assert first["post"]["text"] == post["text"]
        assert [v["post_id"] for v in first["verdicts"]] == ["ap-1"]
        assert first["appeal"]["statement"].startswith("My post ap-1")
        r = await ann.post("/api/decisions", json={"item_id": first["item_id"], "action": "allow"})
        assert r.status_code == 400  # an appeal takes an outcome
        r = await ann.post(
            "/api/decisions", json={"item_id": first["item_id"], "outcome": "reversed"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["verdict"]["supersedes"] == first_verdict_id("ap-1")
        # a-2 contests ann's own decision: never hers to claim.
        assert (await ann.post("/api/claim", json={"reason": "appeal"})).status_code == 204
        second = await claim_when_queued(bob, reason="appeal")
        assert second["appeal"]["appeal_id"] == "a-2"
        r = await bob.post(
            "/api/decisions",
            json={"item_id": second["item_id"], "outcome": "partially_reversed",
                  "categories": ["harassment"]},
        )  # fmt: skip
        assert r.status_code == 400  # nothing is left out of a one-category block
        r = await bob.post(
            "/api/decisions", json={"item_id": second["item_id"], "outcome": "upheld"}
        )
        assert r.status_code == 200, r.text
        queues = {q["reason"]: q for q in (await bob.get("/api/queues")).json()["queues"]}
        assert queues["appeal"]["depth"] == 0
        sample = console.metrics.registry.get_sample_value
        assert sample("modpipe_appeals_total", {"outcome": "dlq"}) == 2
        assert (
            sample("modpipe_appeal_received_to_decided_seconds_count", {"outcome": "upheld"}) == 1
        )

    verdicts = {v["verdict_id"]: v for _, v in await read_all(settings, settings.topics.verdicts)
                if v.get("verdict_id")}  # fmt: skip
    reversed_ = verdicts[appeal_verdict_id("a-1")]
    assert (reversed_["action"], reversed_["tier"], reversed_["model"], reversed_["reviewer"]) == (
        "allow", "human", "appeal:reversed", "ann")  # fmt: skip
    upheld = verdicts[appeal_verdict_id("a-2")]
    assert (upheld["action"], upheld["supersedes"], upheld["reviewer"]) == (
        "block",
        "e" * 32,
        "bob",
    )
    labels = [v for _, v in await read_all(settings, settings.topics.labels)]
    assert sorted((lb["reason"], lb["action"]) for lb in labels) == [
        ("appeal", "allow"), ("appeal", "block")]  # fmt: skip
    dead = [v for _, v in await read_all(settings, settings.topics.dlq)]
    assert sorted(d["reason"] for d in dead) == ["appeal_late", "appeal_no_verdict"]
    assert any("past appeals.window_days (183)" in d["error"] for d in dead)
    assert any("names no earlier verdict" in d["error"] for d in dead)

    await build(settings)  # the upheld block is a new restrictive decision; the reversal is not
    statements = {k: s for k, s in await read_all(settings, settings.topics.statements)}
    assert verdict_key(machine) == first_verdict_id("ap-1")
    upheld_puid = "modpipe-" + appeal_verdict_id("a-2")
    assert statements[upheld_puid]["automated_decision"] == dsa.NOT_AUTOMATED
    assert "modpipe-" + appeal_verdict_id("a-1") not in statements
    assert set(statements) == {puid_for(machine), puid_for(human), upheld_puid}
    assert json.dumps(statements[upheld_puid]).find("bob") == -1
