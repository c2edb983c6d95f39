"""Retries with backoff, and a circuit breaker.

`retrying` is the one retry loop (the frontier provider, the vLLM HTTP client and Kafka
publishing all go through it): exponential backoff, jittered or not, never less than a
floor the error names (a server's Retry-After), until a deadline or a number of attempts.
Ours rather than tenacity's or stamina's: tests drive it on a fake clock, and both
libraries read `time.monotonic` directly for their deadlines.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Backoff:
    """The wait before retry number `n` (from 0): `base_s * 2**n`, at most `cap_s`; with
    `jitter`, drawn uniformly below that (full jitter)."""

    base_s: float
    cap_s: float
    jitter: bool = True

    def delay(self, n: int, rng: random.Random) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**n)
        return rng.uniform(0, ceiling) if self.jitter else ceiling


def _no_floor(exc: BaseException) -> float:
    return 0.0


def _always(exc: BaseException) -> bool:
    return True


def _quiet(exc: BaseException, attempt: int, delay: float) -> None:
    pass


async def retrying(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    *,
    deadline: float | None = None,
    attempts: int | None = None,
    retryable: Callable[[BaseException], bool] = _always,
    floor: Callable[[BaseException], float] = _no_floor,
    on_retry: Callable[[BaseException, int, float], None] = _quiet,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call` until it returns; retry an error of `retry_on` that is `retryable`.

    The last error is raised as it is when `attempts` calls have failed, or when the
    wait before the next one would reach `deadline` (on `clock`). The wait is
    `backoff`'s, never less than `floor(error)`; `on_retry(error, retries so far, wait)`
    runs before each wait.
    """
    rng = rng or random.Random()
    failures = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            failures += 1
            if not retryable(exc) or (attempts is not None and failures >= attempts):
                raise
            delay = max(backoff.delay(failures - 1, rng), floor(exc))
            if deadline is not None and clock() + delay >= deadline:
                raise
            on_retry(exc, failures, delay)
            await sleep(delay)


async def retry(
    call: Callable[[], Awaitable[T]],
    deadline: float,
    breaker: CircuitBreaker,
    on_error: Callable[[ProviderError], None] = lambda exc: None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run a provider `call` through `breaker` until it succeeds, a non-retryable error, or
    `deadline` (on `clock`).

    Between tries: full-jitter exponential backoff, but never less than the server's
    Retry-After or the breaker's remaining cool-down.
    """

    async def attempt() -> T:
        try:
            breaker.before_call()
            try:
                result = await call()
            except BaseException:
                breaker.on_failure()  # cancelled or crashed too: never leave a probe hanging
                raise
            breaker.on_success()
            return result
        except ProviderError as exc:
            on_error(exc)
            raise

    return await retrying(
        attempt,
        Backoff(BACKOFF_BASE_S, BACKOFF_CAP_S),  # read at each call: tests shorten them
        ProviderError,
        deadline=deadline,
        retryable=lambda exc: bool(getattr(exc, "retryable", False)),
        floor=lambda exc: getattr(exc, "retry_after", None) or 0.0,
        rng=rng,
        clock=clock,
        sleep=sleep,
    )
