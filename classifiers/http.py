"""The HTTP client the vLLM backends share: pooled connections, bounded requests in
flight, per-request timeouts and retries with jittered backoff. httpx errors become
modpipe errors here and nowhere else.

Retries must not pile work onto a saturated server. Two rules keep them from it:
- A request's timeout is sized from the work the server has in hand: `timeout_s` plus
  SLACK times the prompt tokens in flight on this client (this request's included) over
  the service rate measured so far (`ServiceRate`: tokens completed per busy second,
  started from `classifier.service_tokens_per_s`). A big batch on a slow server gets the
  time it needs instead of being timed out and sent again while the server still works.
- A request that times out is cancelled before it is retried: httpx closes its
  connection, and vLLM aborts a request whose client has gone (its `with_cancellation`
  handlers), so the retry is the only copy on the server. At most `max_in_flight`
  requests are in flight per server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import httpx

from modpipe.core.errors import ClassifierError, ClassifierUnavailable
from modpipe.core.resilience import Backoff, retrying
from modpipe.core.settings import ClassifierSettings

log = logging.getLogger(__name__)


# Before retry n (from 0): up to 0.4 * 2**n s, at most 4 s.
RETRY_BACKOFF = Backoff(base_s=0.4, cap_s=4.0)
SLACK = 3.0  # a request may take this many times its expected service time
RATE_DECAY = 0.8  # weight of the past in the measured service rate, per completion
RATE_FLOOR = 1.0  # tokens/s: the measured rate never falls below this
MAX_TIMEOUT_S = 300.0  # however large the backlog, no attempt waits longer


class ServiceRate:
    """Prompt tokens the server completes per second while this client has work on it.

    Busy time is counted once however many requests overlap (a batching server works on
    them together), so the rate is the server's throughput as this client sees it. Past
    completions decay, so a server that slows down is followed within a few requests.
    """

    def __init__(self, tokens_per_s: float) -> None:
        # One second at the configured rate is the prior the measurements move away from.
        self._tokens, self._seconds = tokens_per_s, 1.0
        self._in_flight = 0
        self._mark = 0.0
        self.tokens_in_flight = 0

    @property
    def tokens_per_s(self) -> float:
        return max(RATE_FLOOR, self._tokens / self._seconds)

    def _busy(self, now: float) -> None:
        if self._in_flight:
            self._seconds += now - self._mark
        self._mark = now

    def begin(self, tokens: int) -> None:
        self._busy(time.monotonic())
        self._in_flight += 1
        self.tokens_in_flight += tokens

    def end(self, tokens: int, completed: bool) -> None:
        """A request is over; its tokens count as served only when it completed."""
        self._busy(time.monotonic())
        self._in_flight -= 1
        self.tokens_in_flight -= tokens
        # Both sums decay after this request's share is added, so their ratio converges
        # on the recent rate; a request that failed adds busy time and no tokens.
        self._tokens = (self._tokens + (tokens if completed else 0)) * RATE_DECAY
        self._seconds *= RATE_DECAY

    def timed_out(self, backlog: int, waited_s: float) -> None:
        """The server did not finish `backlog` tokens in `waited_s`: its rate is at most
        that, so the next timeout is at least SLACK times this wait (a wrong guess of the
        rate costs a few short attempts, never a storm of them)."""
        bound = backlog / max(waited_s, 1e-3)
        if bound < self.tokens_per_s:
            self._tokens = bound * self._seconds


def server_root(base_url: str) -> str:
    """vLLM's root: `/classify`, `/tokenize` and `/version` are beside `/v1`, not under it."""
    return base_url.rstrip("/").removesuffix("/v1")


class VllmHttp:
    """Sends JSON to a vLLM server (paths from its root); retries 5xx, timeouts and
    unreadable bodies."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        max_attempts: int,
        max_in_flight: int,
        tokens_per_s: float = 1000.0,
        transport: httpx.AsyncBaseTransport | None = None,  # unit tests: MockTransport
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_in_flight, max_keepalive_connections=max_in_flight
            ),
        )
        self._timeout_s = timeout_s
        self._attempts = max_attempts
        self._slots = asyncio.Semaphore(max_in_flight)
        self._rng = random.Random()
        self.rate = ServiceRate(tokens_per_s)
        self.in_flight = 0  # requests on the wire now (at most max_in_flight)
        self.most_in_flight = 0  # its high-water mark
        self.retries = 0  # requests sent again after a failed attempt

    @classmethod
    def for_classifier(cls, c: ClassifierSettings) -> VllmHttp:
        """The client the `classifier` settings describe (paths from the server's root)."""
        return cls(
            server_root(c.base_url),
            c.timeout_s,
            c.max_attempts,
            c.max_in_flight,
            c.service_tokens_per_s,
        )

    async def get(self, path: str) -> dict[str, Any]:
        """The JSON reply to a GET; ClassifierUnavailable after the last failed attempt."""
        return await self._send("GET", path, None, 0)

    async def post(self, path: str, body: dict[str, Any], tokens: int = 0) -> dict[str, Any]:
        """The JSON reply; ClassifierUnavailable after the last failed attempt. `tokens`:
        the prompt tokens the request asks the server to process (sizes its timeout)."""
        return await self._send("POST", path, body, tokens)

    def timeout_for(self, tokens: int) -> float:
        """`timeout_s` plus SLACK times the expected service time of everything in flight
        (at most MAX_TIMEOUT_S, or timeout_s where that is larger)."""
        backlog = self.rate.tokens_in_flight + tokens
        sized = self._timeout_s + SLACK * backlog / self.rate.tokens_per_s
        return min(sized, max(MAX_TIMEOUT_S, self._timeout_s))

    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None, tokens: int
    ) -> httpx.Response:
        async with self._slots:
            timeout = self.timeout_for(tokens)
            backlog = self.rate.tokens_in_flight + tokens
            self.rate.begin(tokens)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            completed = False
            started = time.monotonic()
            try:
                response = await self._client.request(method, path, json=body, timeout=timeout)
                completed = response.status_code < 400
                return response
            except httpx.TimeoutException:
                self.rate.timed_out(backlog, time.monotonic() - started)
                raise
            finally:
                self.in_flight -= 1
                self.rate.end(tokens, completed)

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None, tokens: int
    ) -> dict[str, Any]:
        tries = 0

        async def attempt() -> dict[str, Any]:
            nonlocal tries
            tries += 1
            try:
                return await self._attempt(method, path, body, tokens)
            except ClassifierUnavailable as exc:
                log.warning("vLLM attempt %d/%d failed: %s", tries, self._attempts, exc)
                raise

        def counted(exc: BaseException, retries: int, delay: float) -> None:
            self.retries += 1

        try:
            return await retrying(
                attempt,
                RETRY_BACKOFF,
                ClassifierUnavailable,
                attempts=self._attempts,
                on_retry=counted,
                rng=self._rng,
            )
        except ClassifierUnavailable as last:
            raise ClassifierUnavailable(
                f"gave up after {self._attempts} attempts: {last}"
            ) from last

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, tokens: int
    ) -> dict[str, Any]:
        """One try: the JSON reply, ClassifierError for a 4xx, ClassifierUnavailable for
        what a retry may cure (5xx, 429, a timeout, a broken connection or body)."""
        try:
            response = await self._request(method, path, body, tokens)
            if response.status_code >= 500 or response.status_code == 429:
                raise ClassifierUnavailable(f"{path}: HTTP {response.status_code}")
            if response.status_code >= 400:
                raise ClassifierError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
            return response.json()  # type: ignore[no-any-return]
        except httpx.TimeoutException as exc:
            # httpx has closed the connection: vLLM aborts the request, so the retry is
            # the only copy of this work on the server.
            raise ClassifierUnavailable(f"{path}: timed out ({exc!r})") from exc
        except httpx.TransportError as exc:
            raise ClassifierUnavailable(f"{path}: {exc!r}") from exc
        except json.JSONDecodeError as exc:
            raise ClassifierUnavailable(f"{path}: unreadable body: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
