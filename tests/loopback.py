"""Serving a test HTTP app on 127.0.0.1, on a free port, for the length of a block."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


@asynccontextmanager
async def serve(
    routes: Mapping[str, Handler], gets: Mapping[str, Handler] | None = None
) -> AsyncIterator[str]:
    """POST `routes` and GET `gets` (path -> handler); yields the `/v1` base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    for path, handler in (gets or {}).items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
