"""The Transparency Database client at its seam (httpx.MockTransport): statuses, timeouts,
Retry-After, the Bearer token, and reading a 422's errors."""

from __future__ import annotations

import httpx
import pytest

from modpipe.compliance.database import (
    DUPLICATE,
    TransparencyDatabase,
    batch_duplicate,
    only_duplicate,
    refused_puids,
)
from modpipe.core.errors import ConfigError


def database(handler: object) -> TransparencyDatabase:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return TransparencyDatabase("http://db", "tok", 1.0, 1000, transport=transport)


async def test_replies_carry_status_body_and_retry_after() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.startswith("/api/v1/statement/existing-puid/"):
            return httpx.Response(302, json={"puid": "x"})
        return httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow"})

    db = database(handler)
    got = await db.store([{"puid": "a"}])
    assert (got.status, got.retry_after_s) == (429, 7.0)
    assert (await db.exists("a")).status == 302
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert seen[0].url.path == "/api/v1/statements"
    await db.aclose()


async def test_timeouts_and_connection_errors_are_statuses() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert (await database(slow).store([{}])).status == "timeout"
    assert (await database(down).store([{}])).status == "connection"


def test_no_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MODPIPE_STATEMENTS__TOKEN"):
        TransparencyDatabase("http://db", None, 1.0, 1.0)


def test_refusals_by_statement() -> None:
    keyed = {"errors": {"statement_1": {"puid": [DUPLICATE]}, "statement_0": {"category": ["x"]}}}
    assert refused_puids(keyed, 2) == {1: {"puid": [DUPLICATE]}, 0: {"category": ["x"]}}
    dotted = {"errors": {"statements.3.puid": [DUPLICATE]}}
    assert refused_puids(dotted, 5) == {3: {"puid": [DUPLICATE]}}
    single = {"message": DUPLICATE, "errors": {"puid": [DUPLICATE]}}
    assert refused_puids(single, 1) == {0: {"puid": [DUPLICATE]}}
    assert only_duplicate({"puid": [DUPLICATE]})
    assert not only_duplicate({"puid": [DUPLICATE], "category": ["x"]})


def test_a_batch_duplicate_names_no_statement() -> None:
    body = {"message": DUPLICATE, "errors": {"puid": [DUPLICATE]}, "existing": {"puid": "x"}}
    assert batch_duplicate(body, 5)
    assert not batch_duplicate(body, 1)  # a single statement: it is that one
    within = {
        "errors": {"puid": ["The platform identifier(s) are not all unique within this call."]}
    }
    assert not batch_duplicate(within, 5)
    assert not batch_duplicate({"errors": {"statement_0": {"puid": [DUPLICATE]}}}, 5)
