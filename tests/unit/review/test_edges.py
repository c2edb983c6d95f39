"""The console's edges without Redis: the body limit runs before anything reads a body,
and user names reach the logs escaped."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from modpipe.review.gate import BodyLimit, safe_name


def app_with_limit(max_bytes: int, seen: list[int]) -> Starlette:
    async def login(request: Request) -> JSONResponse:  # stands for any handler, login first
        seen.append(len(await request.body()))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/login", login, methods=["POST"])])
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    return app


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://c.test")


async def test_a_declared_large_body_is_refused_unread() -> None:
    seen: list[int] = []
    async with client(app_with_limit(1024, seen)) as c:
        response = await c.post("/api/login", content=b"x" * 5000)
        small = await c.post("/api/login", content=b'{"username": "a"}')
    assert response.status_code == 413 and seen == [17]
    assert small.status_code == 200


async def test_a_chunked_body_is_cut_off_at_the_limit() -> None:
    seen: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 512

    async with client(app_with_limit(1024, seen)) as c:
        response = await c.post("/api/login", content=chunks())
    assert response.status_code == 413 and seen == []


def test_user_names_in_logs_cannot_forge_lines_or_flood() -> None:
    assert "\n" not in safe_name("bob\nlogin user=admin role=admin")
    assert "\x1b" not in safe_name("\x1b[31mred")
    assert len(safe_name("x" * 10_000)) <= 70
    assert safe_name("alice") == "alice"
