"""The console is closed without a session; logins, CSRF and rendering are safe."""

from __future__ import annotations

import re
import subprocess
import sys

from starlette.routing import Route

from modpipe.review.app import build_app
from tests.conftest import MakeSettings
from tests.integration.review_support import (
    PASSWORD,
    add_users,
    claim_when_queued,
    client,
    env_for,
    publish_items,
    review_settings,
    running_console,
    sign_in,
)

OPEN = {"/login", "/api/login"}


async def test_every_page_and_api_is_closed_without_a_session(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings)
    async with running_console(settings) as console, client(console) as http:
        routes = [r for r in build_app(console).routes if isinstance(r, Route)]
        checked = 0
        for route in routes:
            if route.path in OPEN:
                continue
            path = route.path.replace("{item_id}", "0123456789abcdef01234567")
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue
                r = await http.request(method, path, json={}, follow_redirects=False)
                checked += 1
                if path.startswith("/api/"):
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.json() == {"error": "not signed in"}
                else:
                    assert r.status_code == 303, (method, path, r.status_code)
                    assert r.headers["location"] == "/login"
        assert checked >= 9  # every page and API route of the app was tried
        # a forged cookie is no session either
        http.cookies.set(settings.review.cookie_name, "forged-token")
        assert (await http.get("/api/queues")).status_code == 401


async def test_wrong_password_is_refused_and_login_is_rate_limited(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings, login_failures_per_user=3)
    await add_users(settings, "ann")
    async with running_console(settings) as console, client(console) as http:
        r = await http.post("/api/login", json={"username": "ann", "password": "wrong one"})
        assert r.status_code == 401
        assert settings.review.cookie_name not in r.cookies
        r = await http.post("/api/login", json={"username": "nobody", "password": PASSWORD})
        assert r.status_code == 401
        r = await http.post("/api/login", json={"username": "ann", "password": PASSWORD})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain http here; https gets Secure (below)
        for _ in range(2):
            await http.post("/api/login", json={"username": "ann", "password": "wrong"})
        r = await http.post("/api/login", json={"username": "ann", "password": PASSWORD})
        assert r.status_code == 429  # three failures: even the right password waits
        assert int(r.headers["retry-after"]) == settings.review.login_window_s
    async with running_console(settings) as console, client(console, "https://console") as http:
        await add_users(settings, "bob")
        r = await http.post("/api/login", json={"username": "bob", "password": PASSWORD})
        assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]


async def test_state_changes_need_the_csrf_token(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "ann")
    await publish_items(settings, ["csrf-1"])
    async with running_console(settings) as console, client(console) as http:
        token = await sign_in(http, "ann")
        del http.headers["X-CSRF-Token"]
        assert (await http.post("/api/claim", json={})).status_code == 403
        r = await http.post("/api/claim", json={}, headers={"X-CSRF-Token": "not-the-token"})
        assert r.status_code == 403
        r = await http.post("/api/decisions", json={"item_id": "x", "action": "allow"})
        assert r.status_code == 403
        # a form post (what another site could make a browser send) is not JSON
        r = await http.post("/api/claim", data={"reason": "audit"}, headers={"X-CSRF-Token": token})
        assert r.status_code == 415
        # pages: the form's csrf_token field
        r = await http.post("/claim", data={}, follow_redirects=False)
        assert r.status_code == 403
        r = await http.post("/claim", data={"csrf_token": token}, follow_redirects=False)
        assert r.status_code == 303
        http.headers["X-CSRF-Token"] = token
        item = await claim_when_queued(http)  # the page claim above holds it already
        assert item["post"]["post_id"] == "csrf-1"
        # the login form is protected too (double-submit cookie), and logout ends the session
        r = await http.post("/login", data={"username": "ann", "password": PASSWORD})
        assert r.status_code == 403
        assert (await http.post("/api/logout", json={})).status_code == 200
        assert (await http.get("/api/queues")).status_code == 401


async def test_post_markup_renders_inert(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "ann")
    text = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2"> & more'
    await publish_items(settings, ["xss-1"], text=text, author_id='"><b>author</b>')
    async with running_console(settings) as console, client(console) as http:
        await sign_in(http, "ann")
        item = await claim_when_queued(http)
        page = await http.get(f"/items/{item['item_id']}")
        assert page.status_code == 200
        html = page.text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=&#34;window.pwned=2&#34;&gt; &amp; more" in html
        assert "<script>window.pwned" not in html and "<img src=x" not in html
        assert "<b>author</b>" not in html
        # the only scripts are this origin's files, and the CSP forbids any other
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/console.js" defer>']
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert 'class="post-text blurred"' in html


async def test_login_page_flow_sets_a_session(make_settings: MakeSettings) -> None:
    settings = review_settings(make_settings)
    await add_users(settings, "ann")
    async with running_console(settings) as console, client(console) as http:
        form = await http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        data = {"csrf_token": token.group(1), "username": "ann", "password": "nope"}
        r = await http.post("/login", data=data)
        assert r.status_code == 401 and "wrong user name or password" in r.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
        assert token is not None
        data = {"csrf_token": token.group(1), "username": "ann", "password": PASSWORD}
        r = await http.post("/login", data=data, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        page = await http.get("/")
        assert page.status_code == 200 and "Review queues" in page.text


async def test_add_user_reads_the_password_from_stdin_and_keeps_only_a_hash(
    make_settings: MakeSettings,
) -> None:
    settings = review_settings(make_settings)
    done = subprocess.run(
        [sys.executable, "-m", "modpipe", "review", "add-user", "lea", "--role", "lead"],
        input=f"{PASSWORD}\n".encode(),
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    async with running_console(settings) as console, client(console) as http:
        stored = await console.store.redis.hgetall(f"{console.store.prefix}:user:lea")
        assert stored["role"] == "lead" and stored["hash"].startswith("$argon2id$")
        assert PASSWORD not in str(stored)
        await sign_in(http, "lea")
        body = (await http.get("/api/queues")).json()
        assert body["you"] == {"user": "lea", "role": "lead"} and body["leases"] == []
    short = subprocess.run(
        [sys.executable, "-m", "modpipe", "review", "add-user", "lea"],
        input=b"short\n",
        env=env_for(settings),
        capture_output=True,
        timeout=60,
    )
    assert short.returncode == 2 and b"at least 8 characters" in short.stderr
