"""The EU Transparency Database API client (statements of reasons, DSA Art. 24(5)).

`POST /api/v1/statements` with `{"statements": [...]}` (1-100, all or nothing),
`GET /api/v1/statement/existing-puid/{puid}` (302 found, 404 not), a Bearer token.
httpx errors are translated here, once, into a `Reply` whose `status` is the HTTP status
or `timeout` / `connection`: the submitter decides what each means.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from modpipe.core.errors import ConfigError

DUPLICATE = "The identifier given is not unique within this platform."


@dataclass(frozen=True)
class Reply:
    """One answer of the API: status (an int, or `timeout`/`connection`), body, Retry-After."""

    status: int | str
    body: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None


class RateLimit:
    """At most `per_s` requests a second (a token bucket of one second on monotonic time)."""

    def __init__(self, per_s: float) -> None:
        self.interval = 1.0 / per_s
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


class TransparencyDatabase:
    """The API at `base_url` with a Bearer token, rate-limited on our side."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout_s: float,
        requests_per_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise ConfigError(
                "no Transparency Database token: set MODPIPE_STATEMENTS__TOKEN or "
                "statements.token_file"
            )
        self.limit = RateLimit(requests_per_s)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
        )

    async def store(self, statements: list[dict[str, Any]]) -> Reply:
        """Send one batch (1-100 statements)."""
        return await self._call("POST", "/api/v1/statements", {"statements": statements})

    async def exists(self, puid: str) -> Reply:
        """Ask whether the database holds `puid`: status 302 (yes) or 404 (no)."""
        return await self._call("GET", f"/api/v1/statement/existing-puid/{puid}", None)

    async def _call(self, method: str, path: str, body: Any) -> Reply:
        await self.limit.wait()
        try:
            r = await self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            return Reply("timeout")
        except httpx.TransportError as exc:
            return Reply("connection", {"error": str(exc)})
        try:
            parsed = r.json()
        except ValueError:
            parsed = {}
        retry = r.headers.get("Retry-After")
        try:
            retry_s = float(retry) if retry is not None else None
        except ValueError:
            retry_s = None
        return Reply(r.status_code, parsed if isinstance(parsed, dict) else {}, retry_s)

    async def aclose(self) -> None:
        await self._http.aclose()


def refused_puids(body: dict[str, Any], count: int) -> dict[int, dict[str, list[str]]]:
    """A 422's errors per statement index (`statement_N`); a single statement's at 0."""
    errors = body.get("errors")
    if not isinstance(errors, dict):
        return {}
    out: dict[int, dict[str, list[str]]] = {}
    for key, value in errors.items():
        if key.startswith("statement_") and isinstance(value, dict):
            try:
                out[int(key.removeprefix("statement_"))] = value
            except ValueError:
                continue
        elif key.startswith("statements.") and isinstance(value, list):
            # Laravel's dotted form: statements.N.field
            parts = key.split(".")
            if len(parts) >= 3 and parts[1].isdigit():
                out.setdefault(int(parts[1]), {})[".".join(parts[2:])] = value
    if not out and count == 1:
        out[0] = {k: v for k, v in errors.items() if isinstance(v, list)}
    return out


def only_duplicate(errors: dict[str, list[str]]) -> bool:
    """Whether a statement's errors say only that its puid is already stored."""
    return set(errors) == {"puid"} and all("not unique" in m for m in errors["puid"])


def batch_duplicate(body: dict[str, Any], count: int) -> bool:
    """A batch's 422 for a puid the database already holds, naming no statement.

    The database validates each statement (errors keyed `statement_N`), then inserts the
    batch at once: a stored puid fails the insert as a whole, answered with top-level
    `errors.puid` (and `existing`), whichever statement it was.
    """
    errors = body.get("errors")
    if count < 2 or not isinstance(errors, dict) or set(errors) != {"puid"}:
        return False
    return only_duplicate({"puid": errors["puid"]}) if isinstance(errors["puid"], list) else False
