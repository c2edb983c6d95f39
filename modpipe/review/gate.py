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


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413, before routing, sessions or login.

    A declared Content-Length over the limit is refused without reading a byte; a chunked
    body is counted as it arrives and refused once past the limit, so no handler (and no
    argon2 verification) ever sees more than `max_bytes`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await _too_large(send, self.max_bytes)
                    return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, max_bytes: int) -> None:
    body = json.dumps({"error": f"request body over {max_bytes} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def safe_name(username: object, limit: int = 64) -> str:
    """A user name as it may appear in a log line: printable ASCII, escaped and cut short,
    so a crafted name can neither forge log lines nor flood them."""
    text = username if isinstance(username, str) else repr(username)
    cut = text[:limit]
    escaped = cut.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in escaped)
    return escaped + ("..." if len(text) > limit else "")


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
        if not await self.accounts.try_login(username, address):
            log.warning(
                "login refused (rate limit) user=%s address=%s", safe_name(username), address
            )
            return None, "", 429
        role = await self.accounts.authenticate(username, password)
        if role is not None:
            await self.accounts.refund_try(username, address)
        if role is None:
            log.info("login failed user=%s address=%s", safe_name(username), address)
            return None, "", 401
        token, session = await self.accounts.open_session(username, role)
        log.info("login user=%s role=%s", safe_name(username), role)
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
