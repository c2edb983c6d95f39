"""A password change or a deletion ends every session of that user, on the real Redis."""

from __future__ import annotations

from modpipe.review.accounts import Accounts
from tests.conftest import MakeSettings
from tests.integration.review_support import (
    add_users,
    client,
    review_settings,
    running_console,
    sign_in,
)


async def test_a_password_change_ends_the_users_sessions(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "ana", "ben")
    async with (
        running_console(settings) as console,
        client(console) as ana,
        client(console) as ana_too,
        client(console) as ben,
    ):
        for http, name in ((ana, "ana"), (ana_too, "ana"), (ben, "ben")):
            await sign_in(http, name)
            assert (await http.get("/api/queues")).status_code == 200
        accounts = Accounts(console.store, settings.review)
        await accounts.add_user("ana", "a new long password", "reviewer")
        assert (await ana.get("/api/queues")).status_code == 401
        assert (await ana_too.get("/api/queues")).status_code == 401
        assert (await ben.get("/api/queues")).status_code == 200  # others keep theirs


async def test_deleting_a_user_ends_their_sessions(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "cleo")
    async with running_console(settings) as console, client(console) as http:
        await sign_in(http, "cleo")
        assert (await http.get("/api/queues")).status_code == 200
        accounts = Accounts(console.store, settings.review)
        assert await accounts.delete_user("cleo")
        assert (await http.get("/api/queues")).status_code == 401
        assert not await accounts.delete_user("cleo")
        r = await http.post(
            "/api/login", json={"username": "cleo", "password": "correct horse battery"}
        )
        assert r.status_code == 401
