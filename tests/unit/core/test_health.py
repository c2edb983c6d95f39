"""/healthz, /readyz and /metrics on one port: the endpoint and its checks alone (the real
workers' readiness is tests/ops/test_health.py)."""

from __future__ import annotations

import asyncio

import httpx

from modpipe.core.health import Health, when
from modpipe.core.metrics import Metrics
from tests.ops.prometheus import free_port


async def get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}", timeout=10)


async def test_readyz_follows_its_checks_and_metrics_still_serve() -> None:
    assigned = asyncio.Event()
    health = Health(timeout_s=0.5)
    health.add("partitions", when(assigned, "no partitions assigned yet"))

    async def hangs() -> None:
        await asyncio.sleep(60)

    metrics = Metrics()
    metrics.dlq.labels("json").inc()
    port = free_port()
    endpoint = metrics.serve("127.0.0.1", port, health)
    assert endpoint is not None
    try:
        assert (await get(port, "/healthz")).status_code == 200
        reply = await get(port, "/readyz")
        assert reply.status_code == 503
        assert reply.json() == {
            "ready": False,
            "checks": {"partitions": "no partitions assigned yet"},
        }
        assigned.set()
        reply = await get(port, "/readyz")
        assert (reply.status_code, reply.json()["ready"]) == (200, True)
        health.add("slow", hangs)  # a dependency that never answers fails, it does not hang
        reply = await get(port, "/readyz")
        assert reply.status_code == 503
        assert reply.json()["checks"] == {"partitions": "ok", "slow": "timed out after 0.5s"}
        assert 'modpipe_dlq_total{reason="json"} 1.0' in (await get(port, "/metrics")).text
    finally:
        endpoint.close()
