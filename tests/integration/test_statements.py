"""Statements of reasons end to end: the builder on real Kafka and Redis, and the
submitter against the DSA database test server under 429s, 5xx, timeouts and a kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from modpipe.compliance.builder import StatementBuilder
from modpipe.compliance.database import TransparencyDatabase
from modpipe.compliance.ledger import Ledger
from modpipe.compliance.rules import problems
from modpipe.compliance.statements import build_statement, puid_for
from modpipe.compliance.submitter import Submitter
from modpipe.core import dsa
from modpipe.core.metrics import Metrics
from modpipe.core.records import encode, first_verdict_id
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings
from tests.conftest import MakeSettings
from tests.dsa_database_server import dsa_database_server
from tests.integration.conftest import wait_until
from tests.integration.dsa_support import dsa_settings, env_for, produce, read_all, verdict


def ledger(settings: Settings) -> Ledger:
    return Ledger(connect_redis(settings.redis, timeout_s=2.0), settings.redis.key_prefix, 10)


async def test_one_statement_per_restrictive_decision(make_settings: MakeSettings) -> None:
    settings = dsa_settings(make_settings)
    machine = verdict("p-1", verdict_id=first_verdict_id("p-1"))
    human = verdict(
        "p-2",
        tier="human",
        model="human",
        reviewer="ann",
        verdict_id="a" * 32,
        supersedes=first_verdict_id("p-2"),
    )
    appeal = verdict(
        "p-3",
        tier="human",
        model="appeal:upheld",
        reviewer="bob",
        verdict_id="b" * 32,
        supersedes="c" * 32,
    )
    allowed = verdict("p-4", "allow")
    reversed_ = verdict("p-5", "allow", tier="human", model="appeal:reversed", reviewer="bob")
    records = [(v.post_id, encode(v)) for v in (machine, human, appeal, allowed, reversed_)]
    records.append((machine.post_id, encode(machine)))  # a verdict read twice upstream
    records.append(("bad", b'{"post_id": 1}'))
    await produce(settings, settings.topics.verdicts, records)

    book = ledger(settings)
    try:
        await book.record_notice("p-2", {"notice_id": "n-1", "trusted_flagger": True})
        builder = StatementBuilder(settings, book, Metrics())
        assert await asyncio.wait_for(builder.run(idle_exit=3.0), 60) == 0
        history = await book.verdicts("p-1")
    finally:
        await book.aclose()

    statements = await read_all(settings, settings.topics.statements)
    by_puid = {key: value for key, value in statements}
    assert len(statements) == len(by_puid) == 3
    assert set(by_puid) == {puid_for(machine), puid_for(human), puid_for(appeal)}
    for key, s in statements:
        assert key == s["puid"]
        assert problems(s) == {}
    assert by_puid[puid_for(machine)]["automated_decision"] == dsa.FULLY
    assert by_puid[puid_for(human)]["source_type"] == dsa.SOURCE_TRUSTED_FLAGGER
    assert by_puid[puid_for(human)]["automated_decision"] == dsa.PARTIALLY
    assert by_puid[puid_for(appeal)]["automated_decision"] == dsa.NOT_AUTOMATED
    assert first_verdict_id("p-1") in history
    dead = await read_all(settings, settings.topics.dlq)
    assert [d["reason"] for _, d in dead] == ["schema"]


async def _statements(settings: Settings, n: int) -> set[str]:
    records = []
    for i in range(n):
        s = build_statement(verdict(f"post-{i}", verdict_id=f"{i:032x}"), settings.policy)
        assert s is not None
        records.append((s["puid"], json.dumps(s).encode()))
    await produce(settings, settings.topics.statements, records)
    return {k for k, _ in records}


async def test_submitter_stores_everything_once_under_faults(make_settings: MakeSettings) -> None:
    async with dsa_database_server() as server:
        server.hang_s = 2.0
        settings = dsa_settings(
            make_settings,
            statements={"base_url": server.base_url, "token": server.token, "batch_max": 50},
        )
        puids = await _statements(settings, 230)
        server.faults += ["429", "500", "store_then_timeout", "timeout", "store_then_500", "429"]
        s = settings.statements
        db = TransparencyDatabase(s.base_url, server.token, s.timeout_s, s.requests_per_s)
        book = ledger(settings)
        metrics = Metrics()
        try:
            submitter = Submitter(settings, db, book, metrics)
            assert await asyncio.wait_for(submitter.run(idle_exit=3.0), 120) == 0
        finally:
            await book.aclose()
            await db.aclose()
        assert set(server.stored) == puids
        assert max(server.created.values()) == 1  # none stored twice
        assert sum(server.duplicates.values()) == 0  # none even sent again once stored
        assert not server.faults
        assert server.requests["GET existing-puid"] > 0  # timeouts were checked, not resent
        sample = metrics.registry.get_sample_value
        assert sample("modpipe_statements_pending") == 0
        assert sample("modpipe_statements_submitted_total", {"result": "found"}) == 100


async def test_submitter_survives_kill_9(make_settings: MakeSettings) -> None:
    async with dsa_database_server() as server:
        settings = dsa_settings(
            make_settings,
            statements={
                "base_url": server.base_url,
                "token": server.token,
                "batch_max": 20,
                "requests_per_s": 5,
            },
        )
        puids = await _statements(settings, 200)
        server.faults += ["500", "429"]
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "modpipe", "statements", "worker",
            env=env_for(settings),
        )  # fmt: skip
        try:
            await wait_until(lambda: len(server.stored) >= 60, 90, "the worker storing some")
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            await worker.wait()
        stored_at_kill = len(server.stored)
        assert stored_at_kill < len(puids)
        s = settings.statements
        db = TransparencyDatabase(s.base_url, server.token, s.timeout_s, 100)
        book = ledger(settings)
        try:
            submitter = Submitter(settings, db, book, Metrics())
            assert await asyncio.wait_for(submitter.run(idle_exit=3.0), 120) == 0
        finally:
            await book.aclose()
            await db.aclose()
        assert set(server.stored) == puids  # nothing lost
        assert max(server.created.values()) == 1  # nothing stored twice
        assert sum(server.duplicates.values()) == 0  # none sent again once stored


async def test_duplicates_count_as_stored_and_refusals_go_to_the_dlq(
    make_settings: MakeSettings,
) -> None:
    async with dsa_database_server() as server:
        settings = dsa_settings(
            make_settings,
            statements={"base_url": server.base_url, "token": server.token, "batch_max": 10},
        )
        puids = sorted(await _statements(settings, 10))
        for puid in puids[:3]:  # stored earlier (another process, a restored backup)
            server.stored[puid] = {"puid": puid}
        broken = {"puid": "modpipe-broken", "decision_ground": "DECISION_GROUND_ILLEGAL_CONTENT"}
        await produce(settings, settings.topics.statements, [("b", json.dumps(broken).encode())])
        s = settings.statements
        db = TransparencyDatabase(s.base_url, server.token, s.timeout_s, s.requests_per_s)
        book = ledger(settings)
        metrics = Metrics()
        try:
            assert await asyncio.wait_for(Submitter(settings, db, book, metrics).run(3.0), 60) == 0
        finally:
            await book.aclose()
            await db.aclose()
        assert set(server.stored) == set(puids)
        assert sum(server.created.values()) == 7
        sample = metrics.registry.get_sample_value
        # The batch's 422 names no statement: existing-puid finds the three.
        assert sample("modpipe_statements_submitted_total", {"result": "found"}) == 3
        assert sample("modpipe_statements_failed_total") == 1
        dead = [d for _, d in await read_all(settings, settings.topics.dlq)]
        assert [d["reason"] for d in dead] == ["dsa"]
        assert "illegal_content_legal_ground" in dead[0]["error"]
