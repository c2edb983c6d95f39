"""Memory pressure on the verdict cache never costs the budget or a lock: the cache Redis
(allkeys-lru, a small maxmemory, started here) is filled past its maxmemory while the
budget counter and the single-flight locks sit on the state Redis."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from escalation.budget import Budget
from escalation.cache import VerdictCache, cache_key
from tests.integration.conftest import local_stack
from tests.ops.prometheus import free_port

pytestmark = pytest.mark.integration
__all__ = ["local_stack"]  # the session fixture that starts Kafka and the state Redis

MAXMEMORY = 2 * 1024 * 1024
VERDICT = {
    "action": "block",
    "categories": ["harassment"],
    "scores": {"harassment": 0.97, "hate": 0.01},
    "model": "gpt-4.1-mini",
    "rationale": "x" * 900,  # about 1 KB a verdict: thousands of entries fill 2 MB
}


@contextmanager
def lru_redis() -> Iterator[str]:
    """A throwaway redis-server configured as the cache role; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: `make redis-server`")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "allkeys-lru"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


async def test_budget_and_locks_hold_while_the_cache_evicts(make_settings) -> None:
    with lru_redis() as cache_url:
        settings = make_settings(redis={"cache_url": cache_url})
        prefix = settings.redis.key_prefix
        cache = VerdictCache.connect(settings.redis)
        assert cache.client is not cache.state
        budget = Budget(100.0, cache.state, prefix)
        await budget.reserve(42.0)
        token = await cache.lock("held")
        assert token is not None
        # The hazard this design removes: the same counter on the evicting Redis.
        await Budget(100.0, cache.client, f"{prefix}-lru").reserve(42.0)

        written = 0
        while written < 3 * MAXMEMORY:  # three times the cache's memory in new verdicts
            for i in range(200):
                await cache.put(cache_key("v1", "chat", "m", f"post {written} {i}"), VERDICT)
            written += 200 * len(VERDICT["rationale"])
        info = await cache.client.info()

        assert info["evicted_keys"] > 0, "the cache never reached maxmemory"
        assert info["used_memory"] <= MAXMEMORY * 1.1
        assert info["maxmemory_policy"] == "allkeys-lru"
        assert await Budget(100.0, cache.state, prefix).spent() == 42.0  # a fresh reader
        assert await cache.lock("held") is None  # still held by us
        assert (await cache.state.get(f"{prefix}:lock:held")).decode() == token
        assert await Budget(100.0, cache.client, f"{prefix}-lru").spent() == 0.0  # evicted
        await cache.unlock("held", token)
        await cache.state.delete(*await cache.state.keys(f"{prefix}:*"))
        await cache.aclose()
