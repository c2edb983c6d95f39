"""The first final outcome per post on the real Redis: first claim wins, reads only read."""

from __future__ import annotations

import socket

from modpipe.core.final_verdicts import FinalVerdicts, Outcome
from modpipe.core.settings import Settings


async def test_the_first_claim_wins_and_later_ones_get_it_back(settings: Settings) -> None:
    final = FinalVerdicts.open(settings)
    try:
        first = Outcome(b'{"action":"review"}', "provider_failed", "timeout")
        assert await final.claim([("p1", first), ("p2", None)]) == [None, None]
        later = Outcome(b'{"action":"block"}')
        assert await final.claim([("p1", later), ("p2", later)]) == [first, None]
        assert await final.get("p1") == first
        assert await final.get("p2") == later  # the read-only claim recorded nothing
        assert await final.claim([("p2", None)]) == [later]
    finally:
        await final.aclose()


async def test_redis_away_is_degraded_not_stopped(make_settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    settings = make_settings(redis={"url": f"redis://127.0.0.1:{port}/0", "breaker_failures": 2})
    final = FinalVerdicts.open(settings)
    try:
        for _ in range(4):  # the breaker opens after two failures; no call waits after that
            assert await final.claim([("p1", Outcome(b"{}"))]) == [None]
        assert await final.get("p1") is None
    finally:
        await final.aclose()
