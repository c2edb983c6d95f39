"""The console's web app: server-rendered pages for reviewers and a JSON API beside them.

Starlette (ASGI) with Jinja2 templates (autoescaped: post text is never markup) and one
small script file. Every route but the login ones passes through `gate.Gate` (session,
CSRF); `gate.SecurityHeaders` adds the CSP and the other headers to every response.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from modpipe.core.errors import ReviewStoreUnavailable
from modpipe.review.accounts import Accounts, Session
from modpipe.review.console import Console
from modpipe.review.gate import (
    LOGIN_ERRORS,
    BodyLimit,
    Gate,
    SecurityHeaders,
    not_json,
    read_json,
)
from modpipe.review.store import REASONS, Lease

log = logging.getLogger(__name__)

HERE = Path(__file__).parent


def _rfc3339(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def item_json(lease: Lease) -> dict[str, Any]:
    """An item as the API returns it: the review record, its id and lease end."""
    return {"item_id": lease.item_id, "lease_until": _rfc3339(lease.lease_until_ms), **lease.record}


class Pages:
    """Route handlers; `console` holds the running parts (store, accounts, desk)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True
        )
        self.templates = Jinja2Templates(env=env)
        self.gate = Gate(console.settings.review, console.accounts)
        self.cookie = console.settings.review.cookie_name

    @property
    def accounts(self) -> Accounts:
        return self.console.accounts

    # -- the JSON API ----------------------------------------------------------------------

    async def api_login(self, request: Request) -> Response:
        refused = not_json(request)
        if refused is not None:
            return refused
        body = await read_json(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, 400)
        session, token, status = await self.gate.sign_in(
            request, body.get("username"), body.get("password")
        )
        if session is None:
            return JSONResponse(
                {"error": LOGIN_ERRORS[status]}, status, headers=self.gate.retry(status)
            )
        response = JSONResponse(
            {"user": session.user, "role": session.role, "csrf_token": session.csrf}
        )
        ttl = self.console.settings.review.session_ttl_s
        self.gate.set_cookie(request, response, self.cookie, token, ttl)
        return response

    async def api_logout(self, request: Request, session: Session) -> Response:
        await self.accounts.close_session(request.cookies.get(self.cookie, ""))
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(self.cookie, path="/")
        return response

    async def api_queues(self, request: Request, session: Session) -> Response:
        queues, leased = await self.console.store.stats()
        body: dict[str, Any] = {
            "queues": [q.__dict__ for q in queues],
            "leased": leased,
            "you": {"user": session.user, "role": session.role},
        }
        if session.role == "lead":
            body["leases"] = [
                {"item_id": i, "holder": h, "lease_until": _rfc3339(u)}
                for i, h, u in await self.console.store.leases()
            ]
        return JSONResponse(body)

    async def api_claim(self, request: Request, session: Session) -> Response:
        body = await read_json(request, empty_ok=True)
        reason = (body or {}).get("reason")
        if body is None or (reason is not None and reason not in REASONS):
            return JSONResponse({"error": f"reason must be one of {', '.join(REASONS)}"}, 400)
        lease = await self.console.desk.claim(session, reason)
        if lease is None:
            return Response(status_code=204)
        return JSONResponse(item_json(lease))

    async def api_decisions(self, request: Request, session: Session) -> Response:
        body = await read_json(request)
        if body is None:
            return JSONResponse({"error": "body must be a JSON object"}, 400)
        answer = await self.console.desk.decide(session, body)
        return JSONResponse(answer.body, answer.status)

    # -- pages -----------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str = "", status: int = 200) -> Response:
        if status == 200 and await self.accounts.session(request.cookies.get(self.cookie)):
            return RedirectResponse("/", status_code=303)
        token = secrets.token_urlsafe(24)  # double-submit: the form and a cookie must match
        response = self.templates.TemplateResponse(
            request, "login.html", {"csrf": token, "error": error}, status_code=status
        )
        self.gate.set_cookie(request, response, f"{self.cookie}_login", token, 3600)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        expected = request.cookies.get(f"{self.cookie}_login", "")
        sent = form.get("csrf_token")
        if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
            return await self.login_form(request, "The form expired; please sign in again.", 403)
        session, token, status = await self.gate.sign_in(
            request, form.get("username"), form.get("password")
        )
        if session is None:
            return await self.login_form(request, LOGIN_ERRORS[status], status)
        response = RedirectResponse("/", status_code=303)
        self.gate.set_cookie(
            request, response, self.cookie, token, self.console.settings.review.session_ttl_s
        )
        response.delete_cookie(f"{self.cookie}_login", path="/")
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        await self.accounts.close_session(request.cookies.get(self.cookie, ""))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(self.cookie, path="/")
        return response

    async def queues(self, request: Request, session: Session) -> Response:
        queues, leased = await self.console.store.stats()
        return self.templates.TemplateResponse(
            request,
            "queues.html",
            {
                "session": session,
                "queues": queues,
                "leased": leased,
                "total": sum(q.depth for q in queues),
                "msg": _MESSAGES.get(request.query_params.get("msg", ""), ""),
            },
        )

    async def claim(self, request: Request, session: Session) -> Response:
        form = await request.form()
        reason = form.get("reason") or None
        if reason is not None and reason not in REASONS:
            return Response("unknown reason", status_code=400)
        lease = await self.console.desk.claim(session, reason if isinstance(reason, str) else None)
        if lease is None:
            return RedirectResponse("/?msg=empty", status_code=303)
        return RedirectResponse(f"/items/{lease.item_id}", status_code=303)

    async def item(self, request: Request, session: Session) -> Response:
        return await self._item_page(request, session, request.path_params["item_id"])

    async def _item_page(
        self, request: Request, session: Session, item_id: str, error: str = "", status: int = 200
    ) -> Response:
        lease = await self.console.store.item(item_id)
        if lease is None or await self.console.store.holder(item_id) != session.user:
            return RedirectResponse("/?msg=lost", status_code=303)
        record = lease.record
        post = record["post"]
        scores = sorted(record.get("scores", {}).items(), key=lambda kv: -kv[1])
        extra = {k: v for k, v in post.items() if k not in ("post_id", "text")}
        return self.templates.TemplateResponse(
            request,
            "item.html",
            {
                "session": session,
                "item": lease,
                "record": record,
                "post": post,
                "extra": extra,
                "extra_json": {k: json.dumps(v, ensure_ascii=False) for k, v in extra.items()},
                "scores": scores,
                "categories": sorted(self.console.settings.policy.categories.items()),
                "proposed": record.get("proposed"),
                "lease_until": _rfc3339(lease.lease_until_ms),
                "error": error,
            },
            status_code=status,
        )

    async def decide(self, request: Request, session: Session) -> Response:
        form = await request.form()
        item_id = request.path_params["item_id"]
        answer = await self.console.desk.decide(session, _decision(form, item_id) | _appeal(form))
        if answer.status == 400:
            return await self._item_page(request, session, item_id, answer.body["error"], 400)
        if answer.status != 200:
            return RedirectResponse("/?msg=lost", status_code=303)
        action = "skipped" if answer.body.get("skipped") else "decided"
        return RedirectResponse(f"/?msg={action}", status_code=303)


_MESSAGES = {
    "decided": "Decision recorded and published.",
    "skipped": "Skipped: the item went back to its queue for someone else.",
    "empty": "Nothing waiting in that queue.",
    "lost": "That item is no longer yours (decided, or its lease ran out).",
}


def _decision(form: FormData, item_id: str) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "action": form.get("action"),
        "categories": [c for c in form.getlist("categories") if isinstance(c, str)],
        "note": form.get("note") or "",
    }


def _appeal(form: FormData) -> dict[str, Any]:
    # An appeal's form sends an outcome instead of an action (docs/compliance.md).
    outcome = form.get("outcome")
    return {"outcome": outcome} if isinstance(outcome, str) and outcome else {}


def build_app(console: Console) -> Starlette:
    """The ASGI app; its lifespan starts and stops the console's background work."""
    pages = Pages(console)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await console.start()
        try:
            yield
        finally:
            await console.stop()

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("review store unavailable: %s", exc)
        return JSONResponse({"error": "the review store is unavailable; retry shortly"}, 503)

    routes = [
        Route("/login", pages.login_form, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.gate.page(pages.logout), methods=["POST"]),
        Route("/", pages.gate.page(pages.queues), methods=["GET"]),
        Route("/claim", pages.gate.page(pages.claim), methods=["POST"]),
        Route("/items/{item_id}", pages.gate.page(pages.item), methods=["GET"]),
        Route("/items/{item_id}/decision", pages.gate.page(pages.decide), methods=["POST"]),
        Route("/api/login", pages.api_login, methods=["POST"]),
        Route("/api/logout", pages.gate.api(pages.api_logout), methods=["POST"]),
        Route("/api/queues", pages.gate.api(pages.api_queues), methods=["GET"]),
        Route("/api/claim", pages.gate.api(pages.api_claim), methods=["POST"]),
        Route("/api/decisions", pages.gate.api(pages.api_decisions), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={ReviewStoreUnavailable: unavailable},
    )
    app.add_middleware(SecurityHeaders)
    # Outermost: a body over the limit is refused before anything else reads it.
    app.add_middleware(BodyLimit, max_bytes=console.settings.review.max_body_bytes)
    return app
