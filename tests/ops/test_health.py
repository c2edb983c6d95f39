"""/healthz and /readyz on each worker's metrics port, on the real workers as
`modpipe worker` and `modpipe escalator` build them (the endpoint alone:
tests/unit/core/test_health.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from modpipe.cli.workers import run_escalator, run_worker
from tests.integration.conftest import local_stack
from tests.openai_wire_server import openai_wire_server
from tests.ops.prometheus import free_port

pytestmark = pytest.mark.integration
__all__ = ["local_stack"]  # the session fixture that starts Kafka and Redis


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)


async def wait_ready(port: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Poll /readyz until 200; the last reply's body."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        try:
            reply = await get(port, "/readyz")
            body = reply.json()
            if reply.status_code == 200:
                return body
        except httpx.TransportError:
            pass  # not serving yet
        await asyncio.sleep(0.2)
    raise AssertionError(f"not ready after {timeout_s}s: {body}")


async def test_both_workers_become_ready(make_settings) -> None:
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url},
            metrics={"port": free_port(), "escalator_port": free_port()},
        )
        runs = asyncio.gather(
            run_worker(settings, max_posts=None, idle_exit=6.0),
            run_escalator(settings, max_posts=None, idle_exit=6.0),
        )
        triage = await wait_ready(settings.metrics.port)
        escalator = await wait_ready(settings.metrics.escalator_port)
        assert triage["checks"] == {"partitions": "ok", "kafka": "ok", "classifier": "ok"}
        assert escalator["checks"] == {"partitions": "ok", "kafka": "ok", "redis": "ok"}
        assert (await get(settings.metrics.port, "/healthz")).json() == {"alive": True}
        assert await runs == [0, 0]


async def test_escalator_is_not_ready_while_its_cache_redis_is_down(make_settings) -> None:
    async with openai_wire_server() as wire:
        settings = make_settings(
            escalation={"provider": "chat", "base_url": wire.url},
            redis={"cache_url": f"redis://127.0.0.1:{free_port()}/0", "timeout_s": 0.2},
            metrics={"escalator_port": free_port()},
        )
        run = asyncio.ensure_future(run_escalator(settings, max_posts=None, idle_exit=4.0))
        port = settings.metrics.escalator_port
        body: dict[str, Any] = {}
        for _ in range(100):  # until partitions are assigned; redis never comes up
            try:
                body = (await get(port, "/readyz")).json()
                if body["checks"].get("partitions") == "ok":
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        assert body["ready"] is False
        assert body["checks"]["partitions"] == "ok"
        assert "redis ping failed" in body["checks"]["redis"]
        assert await run == 0  # degraded, not stopped
