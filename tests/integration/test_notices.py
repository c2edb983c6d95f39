"""The notice intake: a user's notice sends the post to triage, a trusted flagger's to the
reviewers first, a broken one to the DLQ; the statement names the notice as its source."""

from __future__ import annotations

import asyncio
import json

from modpipe.compliance.builder import StatementBuilder
from modpipe.compliance.ledger import Ledger
from modpipe.compliance.notices import NoticeIntake
from modpipe.compliance.rules import problems
from modpipe.core import dsa
from modpipe.core.metrics import Metrics
from modpipe.core.records import encode
from modpipe.core.redis_client import connect_redis
from tests.conftest import MakeSettings
from tests.integration.dsa_support import dsa_settings, produce, read_all, verdict


async def test_notices_are_routed_and_named_in_statements(make_settings: MakeSettings) -> None:
    settings = dsa_settings(make_settings)
    notices = [
        {"notice_id": "n-1", "post": {"post_id": "np-1", "text": "buy my pills"},
         "category": "illicit", "trusted_flagger": False, "received_at": "2026-11-02T10:00:00Z"},
        {"notice_id": "n-2", "post": {"post_id": "np-2", "text": "they deserve it"},
         "category": None, "trusted_flagger": True, "received_at": "2026-11-02T11:00:00Z"},
    ]  # fmt: skip
    records = [(n["notice_id"], json.dumps(n).encode()) for n in notices]
    records.append(("n-3", b'{"notice_id": "n-3"}'))
    await produce(settings, settings.topics.notices, records)
    ledger = Ledger(connect_redis(settings.redis, timeout_s=2.0), settings.redis.key_prefix, 10)
    try:
        intake = NoticeIntake(settings, ledger, Metrics())
        assert await asyncio.wait_for(intake.run(idle_exit=3.0), 60) == 0
        posts = await read_all(settings, settings.topics.posts)
        review = await read_all(settings, settings.topics.review)
        dead = await read_all(settings, settings.topics.dlq)
        assert [(k, p["text"]) for k, p in posts] == [("np-1", "buy my pills")]
        assert [(k, r["reason"], r["post"]["post_id"]) for k, r in review] == [
            ("np-2", "notice", "np-2")
        ]
        assert [d["reason"] for _, d in dead] == ["schema"]

        decided = [
            verdict("np-1", categories=["illicit"], scores={"illicit": 0.99}),
            verdict("np-2", tier="human", model="human", reviewer="ann", scores={},
                    categories=["violence"]),
        ]  # fmt: skip
        await produce(settings, settings.topics.verdicts, [(v.post_id, encode(v)) for v in decided])
        builder = StatementBuilder(settings, ledger, Metrics())
        assert await asyncio.wait_for(builder.run(idle_exit=3.0), 60) == 0
    finally:
        await ledger.aclose()
    statements = {
        s["source_type"]: s for _, s in await read_all(settings, settings.topics.statements)
    }
    assert set(statements) == {dsa.SOURCE_NOTICE, dsa.SOURCE_TRUSTED_FLAGGER}
    user, flagger = statements[dsa.SOURCE_NOTICE], statements[dsa.SOURCE_TRUSTED_FLAGGER]
    assert (user["automated_detection"], user["automated_decision"]) == ("No", dsa.FULLY)
    assert (flagger["automated_detection"], flagger["automated_decision"]) == (
        "No", dsa.NOT_AUTOMATED)  # fmt: skip
    assert problems(user) == problems(flagger) == {}
