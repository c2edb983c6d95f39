"""A vLLM stand-in with a capacity: the wire-format test server behind a continuous-batching model.

A continuously batching server (vLLM) works on every request it holds at once, so what
bounds it is a shared service rate, not one request at a time; each request also pays a
fixed latency (queueing, tokenizing, the last decode steps) that overlaps with the others'
work. The model: a request of n posts arriving at t is served from max(t, the end of the
work already queued) for n / rate seconds, and answered `latency_s` after that. A worker
that waits for each answer before sending the next batch leaves the server idle for that
latency and for its own fetch and publish time; keeping batches in flight does not.

Needs tests/ (the wire-format server, through bench/stand_ins.py), so it runs from a
source checkout only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from bench.stand_ins import VllmWireServer, serve


@dataclass
class Capacity:
    """The shared service rate and the fixed latency per request."""

    latency_s: float = 0.05
    posts_per_s: float = 2000.0
    _queued_until: float = 0.0
    served: int = 0
    in_flight: int = 0
    most_in_flight: int = 0  # the most requests it ever held at once

    async def serve(self, posts: int) -> None:
        """Return when a request of `posts` posts would be answered."""
        now = asyncio.get_running_loop().time()
        self._queued_until = max(now, self._queued_until) + posts / self.posts_per_s
        self.served += posts
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self._queued_until + self.latency_s - now)
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def capacity_limited_vllm(capacity: Capacity) -> AsyncIterator[str]:
    """The vLLM wire-format test server with `/classify` behind `capacity`; yields `/v1`."""
    server = VllmWireServer()

    async def classify(request: web.Request) -> web.Response:
        body = await request.json()  # aiohttp keeps the body: the server reads it again
        await capacity.serve(len(body["input"]))
        server.requests.clear()  # the test server's request log would grow for the whole run
        return await server.classify(request)

    gets = {"/version": server.version, "/v1/models": server.models}
    async with serve({"/classify": classify}, gets) as url:
        yield url
