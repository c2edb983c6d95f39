"""The HTTP client the vLLM backends share: pooled connections, bounded requests in
flight, per-request timeouts and retries with jittered backoff. httpx errors become
modpipe errors here and nowhere else."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import httpx

from modpipe.core.errors import ClassifierError, ClassifierUnavailable

log = logging.getLogger(__name__)


BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 4.0


def server_root(base_url: str) -> str:
    """vLLM's root: `/classify`, `/tokenize` and `/version` are beside `/v1`, not under it."""
    return base_url.rstrip("/").removesuffix("/v1")


class VllmHttp:
    """Sends JSON to a vLLM server (paths from its root); retries 5xx, timeouts and
    unreadable bodies."""

    def __init__(
        self, base_url: str, timeout_s: float, max_attempts: int, max_in_flight: int
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )
        self._attempts = max_attempts
        self._slots = asyncio.Semaphore(max_in_flight)
        self._rng = random.Random()

    async def get(self, path: str) -> dict[str, Any]:
        """The JSON reply to a GET; ClassifierUnavailable after the last failed attempt."""
        return await self._send("GET", path, None)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON reply; ClassifierUnavailable after the last failed attempt."""
        return await self._send("POST", path, body)

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                cap = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
                await asyncio.sleep(self._rng.uniform(0, cap))
            try:
                async with self._slots:
                    response = await self._client.request(method, path, json=body)
                if response.status_code >= 500 or response.status_code == 429:
                    last = ClassifierUnavailable(f"{path}: HTTP {response.status_code}")
                    continue
                if response.status_code >= 400:
                    raise ClassifierError(
                        f"{path}: HTTP {response.status_code}: {response.text[:300]}"
                    )
                return response.json()  # type: ignore[no-any-return]
            except httpx.TimeoutException as exc:
                last = ClassifierUnavailable(f"{path}: timed out ({exc!r})")
            except httpx.TransportError as exc:
                last = ClassifierUnavailable(f"{path}: {exc!r}")
            except json.JSONDecodeError as exc:
                last = ClassifierUnavailable(f"{path}: unreadable body: {exc}")
            log.warning("vLLM attempt %d/%d failed: %s", attempt + 1, self._attempts, last)
        assert last is not None
        raise ClassifierUnavailable(f"gave up after {self._attempts} attempts: {last}") from last

    async def aclose(self) -> None:
        await self._client.aclose()
