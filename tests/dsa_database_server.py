"""A test server for the EU Transparency Database API (statements of reasons).

Speaks the documented API (../shared/DSA.md): `POST /api/v1/statement` (one),
`POST /api/v1/statements` (`{"statements": [...]}`, 1-100, all or nothing, errors keyed
`statement_N`), `GET /api/v1/statement/existing-puid/{puid}` (302 or 404), a Bearer
token (401 without), 422 for the database's validation rules (modpipe/compliance/rules.py)
and for a duplicate puid (with the existing record), 429 with Retry-After past a rate.

Faults are scripted per POST: `faults.append("429" | "500" | "timeout" | "store_then_500" |
"store_then_timeout")`. `created` counts, per puid, how often a statement was stored
(it must never exceed 1), `duplicates` how often a stored puid came again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from modpipe.compliance.rules import problems
from tests.loopback import serve

DUPLICATE = "The identifier given is not unique within this platform."


@dataclass
class DsaDatabaseServer:
    """The server's state: stored statements, scripted faults, counts."""

    token: str = "test-token"
    hang_s: float = 5.0  # a `timeout` fault answers this late (past the client's timeout)
    rate_per_s: int = 200  # requests per second per token; past it, 429
    retry_after_s: float = 0.2
    base_url: str = ""
    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    _window: list[float] = field(default_factory=list)

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "Unauthenticated."}, status=401)
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._window = [t for t in self._window if now - t < 1.0] + [now]
        if len(self._window) > self.rate_per_s:
            return web.json_response(
                {"message": "Too Many Attempts."},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        return None

    def _store(self, statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for s in statements:
            record = {**s, "uuid": str(uuid.uuid4())}
            self.stored[s["puid"]] = record
            self.created[s["puid"]] += 1
            out.append(record)
        return out

    async def _fault(self, statements: list[dict[str, Any]]) -> web.Response | None:
        if not self.faults:
            return None
        fault = self.faults.pop(0)
        self.requests[f"fault:{fault}"] += 1
        if fault == "429":
            return web.json_response(
                {"message": "Too Many Attempts."},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if fault == "500":
            return web.json_response({"message": "Server Error"}, status=500)
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return web.json_response({"message": "Gateway Timeout"}, status=504)
        if fault.startswith("store_then_"):
            refused = self._errors(statements)
            if refused:  # refused as without the fault: all or nothing
                return web.json_response(refused, status=422)
            self._store(statements)
            if fault == "store_then_timeout":
                await asyncio.sleep(self.hang_s)
            return web.json_response({"message": "Server Error"}, status=500)
        raise AssertionError(f"unknown fault {fault}")

    def _errors(self, statements: list[dict[str, Any]]) -> dict[str, Any]:
        # As the database does it: each statement validated (errors keyed statement_N);
        # then the puids unique within the call; then the insert, which a stored puid
        # fails as a whole (top-level errors.puid with the existing record).
        errors = {f"statement_{i}": w for i, s in enumerate(statements) if (w := problems(s))}
        if errors:
            return {"message": "The given data was invalid.", "errors": errors}
        puids = [s["puid"] for s in statements]
        if len(set(puids)) != len(puids):
            message = "The platform identifier(s) are not all unique within this call."
            return {"message": message, "errors": {"puid": [message]}}
        for puid in puids:
            if puid in self.stored:
                self.duplicates[puid] += 1
                body = {"message": DUPLICATE, "errors": {"puid": [DUPLICATE]}}
                return {**body, "existing": self.stored[puid]}
        return {}

    async def many(self, request: web.Request) -> web.Response:
        self.requests["POST statements"] += 1
        refused = self._auth(request)
        if refused is not None:
            return refused
        body = await request.json()
        statements = body.get("statements") if isinstance(body, dict) else None
        if not isinstance(statements, list) or not 1 <= len(statements) <= 100:
            return web.json_response(
                {
                    "message": "The statements field must have between 1 and 100 items.",
                    "errors": {"statements": ["The statements must have between 1 and 100 items."]},
                },
                status=422,
            )
        fault = await self._fault(statements)
        if fault is not None:
            return fault
        errors = self._errors(statements)
        if errors:  # all or nothing
            return web.json_response(errors, status=422)
        return web.json_response({"statements": self._store(statements)}, status=201)

    async def one(self, request: web.Request) -> web.Response:
        self.requests["POST statement"] += 1
        refused = self._auth(request)
        if refused is not None:
            return refused
        s = await request.json()
        fault = await self._fault([s])
        if fault is not None:
            return fault
        refusal = self._errors([s])
        if refusal:  # a single statement's errors are not keyed statement_0
            errors = refusal["errors"].get("statement_0", refusal["errors"])
            return web.json_response({**refusal, "errors": errors}, status=422)
        return web.json_response(self._store([s])[0], status=201)

    async def existing(self, request: web.Request) -> web.Response:
        self.requests["GET existing-puid"] += 1
        refused = self._auth(request)
        if refused is not None:
            return refused
        puid = request.match_info["puid"]
        if puid in self.stored:
            return web.json_response(self.stored[puid], status=302)
        return web.json_response({"message": "statement not found"}, status=404)


@asynccontextmanager
async def dsa_database_server() -> AsyncIterator[DsaDatabaseServer]:
    """A running server; `base_url` is what `statements.base_url` should be."""
    server = DsaDatabaseServer()
    async with serve(
        {"/api/v1/statements": server.many, "/api/v1/statement": server.one},
        {"/api/v1/statement/existing-puid/{puid}": server.existing},
    ) as url:
        server.base_url = url.removesuffix("/v1")
        yield server
