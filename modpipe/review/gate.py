"""The console's gate: sessions, CSRF, login limits, and the headers on every response.

Nothing passes without a session but the login page, `POST /api/login` and the static
files: `api()` answers 401, `page()` redirects to /login. Every state change needs the
session's CSRF token (`X-CSRF-Token` for the API, a form field for pages); API POSTs must
be JSON, so a cross-site form cannot reach them. The Content-Security-Policy allows
scripts only from this origin's files, so markup in a post is inert even if it were ever
rendered unescaped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modpipe.core.settings import ReviewSettings
from modpipe.review.accounts import Accounts, Session

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
Handler = Callable[[Request, Session], Awaitable[Response]]


class SecurityHeaders:
    """Adds the CSP and the other protective headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class Gate:
    """Session and CSRF checks around handlers, cookies, and signing in."""

    def __init__(self, settings: ReviewSettings, accounts: Accounts) -> None:
        self.settings = settings
        self.accounts = accounts
        self.cookie = settings.cookie_name

    def secure(self, request: Request) -> bool:
        """Whether cookies get `Secure`: behind TLS (configured, or an https request)."""
        return self.settings.cookie_secure or request.url.scheme == "https"

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, age: int
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            httponly=True,
            samesite="strict",
            secure=self.secure(request),
            path="/",
        )

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A page: redirect to /login without a session; POSTs need the form's CSRF token."""

        async def endpoint(request: Request) -> Response:
            session = await self.accounts.session(request.cookies.get(self.cookie))
            if session is None:
                return RedirectResponse("/login", status_code=303)
            if request.method == "POST":
                form = await request.form()
                token = form.get("csrf_token")
                if not session.csrf_ok(token if isinstance(token, str) else None):
                    return Response("missing or wrong CSRF token", status_code=403)
            return await handler(request, session)

        return endpoint

    def api(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """An API call: 401 without a session; POSTs need X-CSRF-Token and a JSON body."""

        async def endpoint(request: Request) -> Response:
            session = await self.accounts.session(request.cookies.get(self.cookie))
            if session is None:
                return JSONResponse({"error": "not signed in"}, status_code=401)
            if request.method == "POST":
                if not session.csrf_ok(request.headers.get("x-csrf-token")):
                    return JSONResponse({"error": "missing or wrong X-CSRF-Token"}, 403)
                refused = not_json(request)
                if refused is not None:
                    return refused
            return await handler(request, session)

        return endpoint

    def retry(self, status: int) -> dict[str, str] | None:
        """The Retry-After header for a rate-limited login (429), else None."""
        if status != 429:
            return None
        return {"Retry-After": str(self.settings.login_window_s)}

    async def sign_in(
        self, request: Request, username: Any, password: Any
    ) -> tuple[Session | None, str, int]:
        """(session, cookie token, status): 401 wrong credentials, 429 limited."""
        if not isinstance(username, str) or not isinstance(password, str):
            return None, "", 400
        address = request.client.host if request.client else "unknown"
        if await self.accounts.limited(username, address):
            log.warning("login refused (rate limit) user=%s address=%s", username, address)
            return None, "", 429
        role = await self.accounts.authenticate(username, password, address)
        if role is None:
            log.info("login failed user=%s address=%s", username, address)
            return None, "", 401
        token, session = await self.accounts.open_session(username, role)
        log.info("login user=%s role=%s", username, role)
        return session, token, 200


LOGIN_ERRORS = {
    400: "user name and password are required",
    401: "wrong user name or password",
    429: "too many failed sign-ins; try again later",
}


def not_json(request: Request) -> Response | None:
    """A 415 answer unless the request says its body is JSON (what no plain form can)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return JSONResponse({"error": "send JSON (Content-Type: application/json)"}, 415)
    return None


async def read_json(request: Request, empty_ok: bool = False) -> dict[str, Any] | None:
    """The body as a JSON object, `{}` for an empty body when `empty_ok`, else None."""
    raw = await request.body()
    if not raw.strip() and empty_ok:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
