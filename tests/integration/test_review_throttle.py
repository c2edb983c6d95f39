"""Login throttling on the real Redis: atomic (parallel guesses cannot all pass one check)
and no lever to lock a reviewer out from another address."""

from __future__ import annotations

import asyncio

import httpx

from modpipe.review.app import build_app
from modpipe.review.console import Console
from tests.conftest import MakeSettings
from tests.integration.review_support import PASSWORD, add_users, review_settings, running_console


def client_from(console: Console, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(console), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://console")


async def test_parallel_guesses_are_counted_before_any_is_verified(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings, login_failures_per_user=3)
    await add_users(settings, "dora")
    async with running_console(settings) as console, client_from(console, "10.0.0.9") as http:
        replies = await asyncio.gather(
            *(
                http.post("/api/login", json={"username": "dora", "password": f"guess {i}"})
                for i in range(20)
            )
        )
    codes = sorted(r.status_code for r in replies)
    assert codes.count(401) == 3, codes  # three tries were verified; the rest refused
    assert codes.count(429) == 17


async def test_a_strangers_failures_cannot_lock_a_reviewer_out(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings, login_failures_per_user=3)
    await add_users(settings, "eve")
    async with (
        running_console(settings) as console,
        client_from(console, "203.0.113.7") as attacker,
        client_from(console, "10.0.0.20") as reviewer,
    ):
        for _ in range(10):
            await attacker.post("/api/login", json={"username": "eve", "password": "nope"})
        r = await attacker.post("/api/login", json={"username": "eve", "password": PASSWORD})
        assert r.status_code == 429  # the guesser waits
        r = await reviewer.post("/api/login", json={"username": "eve", "password": PASSWORD})
        assert r.status_code == 200  # the reviewer, elsewhere, does not
