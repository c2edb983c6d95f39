"""Throughput of the statement builder and the submitter on the local stack.

    flock /tmp/modpipe-bench.lock python -m bench.statements [--verdicts 20000]

Publishes verdicts (40% blocks) on fresh topics, times the builder over them, then the
submitter against the DSA database test server (tests/dsa_database_server.py), each
bounded by an idle exit whose wait is subtracted. Prints one line per stage.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from bench.records import produce, verdict
from bench.stand_ins import dsa_database_server
from modpipe.compliance.builder import StatementBuilder
from modpipe.compliance.database import TransparencyDatabase
from modpipe.compliance.ledger import Ledger
from modpipe.compliance.submitter import Submitter
from modpipe.core.metrics import Metrics
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import load_settings, packaged_config

IDLE_S = 2.0
TOPICS = ("posts", "verdicts", "escalations", "review", "dlq", "labels", "notices", "appeals",
          "statements")  # fmt: skip


async def run(n: int) -> None:
    tag = uuid.uuid4().hex[:8]
    async with dsa_database_server() as server:
        s = load_settings(
            packaged_config(),
            {
                "redis": {"key_prefix": f"bench-{tag}"},
                "topics": {k: f"bench-{tag}-{k}" for k in TOPICS},
                "statements": {"group_id": f"bench-{tag}", "submit_group_id": f"bench-s-{tag}",
                               "base_url": server.base_url, "token": server.token,
                               "requests_per_s": 150},
            },
        )  # fmt: skip
        records = []
        for i in range(n):
            v = verdict(f"b-{i}", "block" if i % 5 < 2 else "allow")
            records.append((v.post_id, v.model_dump_json().encode()))
        await produce(s, s.topics.verdicts, records)
        ledger = Ledger(connect_redis(s.redis, timeout_s=2.0), s.redis.key_prefix, 1)
        db = TransparencyDatabase(s.statements.base_url, server.token, 30, 150)
        try:
            started = time.monotonic()
            await StatementBuilder(s, ledger, Metrics()).run(idle_exit=IDLE_S)
            took = time.monotonic() - started - IDLE_S
            print(f"builder: {n} verdicts in {took:.1f}s = {n / took:.0f} verdicts/s")
            started = time.monotonic()
            await Submitter(s, db, ledger, Metrics()).run(idle_exit=IDLE_S)
            took = time.monotonic() - started - IDLE_S
            stored = len(server.stored)
            print(f"submitter: {stored} statements in {took:.1f}s = {stored / took:.0f}/s "
                  f"({server.requests['POST statements']} calls)")  # fmt: skip
        finally:
            await db.aclose()
            await ledger.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verdicts", type=int, default=20000)
    asyncio.run(run(p.parse_args().verdicts))


if __name__ == "__main__":
    main()
