"""Retries with jittered backoff inside a deadline, and a circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modpipe.core.errors import CircuitOpen, ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0


class CircuitBreaker:
    """Opens after `failures` consecutive failures; after `cooldown_s` lets one probe through.

    closed --failures--> open --cooldown--> half-open --probe ok--> closed
                                               └──probe fails──> open
    """

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        """closed, open or half-open."""
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._cooled_down() else "open"

    def _cooled_down(self) -> bool:
        return self._opened_at is not None and (self._clock() - self._opened_at >= self._cooldown_s)

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go out now."""
        if self._opened_at is None:
            return
        if not self._cooled_down():
            remaining = self._cooldown_s - (self._clock() - self._opened_at)
            raise CircuitOpen("provider circuit is open", retry_after=remaining)
        if self._probing:
            raise CircuitOpen("provider circuit is half-open; a probe is in flight", 0.5)
        self._probing = True

    def on_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._probing = False

    def on_failure(self) -> None:
        self._consecutive += 1
        if self._probing or self._consecutive >= self._threshold:
            if self._opened_at is None or self._probing:
                log.warning("circuit opened after %d consecutive failures", self._consecutive)
            self._opened_at = self._clock()
        self._probing = False


async def retry(
    call: Callable[[], Awaitable[T]],
    deadline: float,
    breaker: CircuitBreaker,
    on_error: Callable[[ProviderError], None] = lambda exc: None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call` until it succeeds, a non-retryable error, or `deadline` (on `clock`).

    Between tries: full-jitter exponential backoff, but never less than the server's
    Retry-After or the breaker's remaining cool-down.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            breaker.before_call()
            try:
                result = await call()
            except ProviderError:
                breaker.on_failure()
                raise
            except BaseException:
                breaker.on_failure()  # cancelled or crashed: never leave a probe hanging
                raise
            breaker.on_success()
            return result
        except ProviderError as exc:
            on_error(exc)
            if not exc.retryable:
                raise
            backoff = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
            delay = max(backoff, getattr(exc, "retry_after", None) or 0.0)
            if clock() + delay >= deadline:
                raise
            await sleep(delay)
            attempt += 1
