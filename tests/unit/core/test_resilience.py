"""The circuit breaker and retry loop on a fake clock: no wall-clock time, no real sleeps."""

import asyncio
import random

import pytest

from modpipe.core.errors import BudgetExhausted, CircuitOpen, InvalidOutput, ProviderUnavailable
from modpipe.core.resilience import CircuitBreaker, retry


class FakeClock:
    """A monotonic clock that moves only when told to, and a sleep that moves it."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_breaker_opens_then_lets_one_probe_through() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=clock)
    breaker.before_call()
    breaker.on_failure()
    assert breaker.state == "closed"  # one failure is below the threshold
    breaker.before_call()
    breaker.on_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(10)
    clock.now += 4
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(6)
    clock.now += 6
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller while the probe is out
    breaker.on_failure()
    assert breaker.state == "open"
    clock.now += 9.9
    assert breaker.state == "open"  # a failed probe restarts the whole cool-down
    clock.now += 0.1
    breaker.before_call()
    breaker.on_success()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.on_failure()
    assert breaker.state == "closed", "a success resets the count of consecutive failures"


async def test_retry_honours_retry_after_and_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(clock())
        if len(calls) < 3:
            raise ProviderUnavailable("429", status="429", retry_after=0.5)
        return "ok"

    result = await retry(
        flaky,
        clock() + 5,
        CircuitBreaker(10, 1, clock=clock),
        rng=random.Random(0),
        clock=clock,
        sleep=clock.sleep,
    )
    assert result == "ok" and len(calls) == 3
    # The first backoffs are drawn below 0.25 and 0.5 s: Retry-After wins both times.
    assert clock.slept == [0.5, 0.5]

    async def always_bad() -> str:
        raise InvalidOutput("bad")

    start = clock()
    with pytest.raises(InvalidOutput):
        await retry(
            always_bad,
            start + 3,
            CircuitBreaker(100, 1, clock=clock),
            rng=random.Random(0),
            clock=clock,
            sleep=clock.sleep,
        )
    assert len(clock.slept) > 4, "retried until the deadline"
    assert clock() < start + 3, "never sleeps past the deadline"


async def test_non_retryable_errors_are_not_retried() -> None:
    clock = FakeClock()
    calls = 0

    async def spent() -> None:
        nonlocal calls
        calls += 1
        raise BudgetExhausted("spent")

    with pytest.raises(BudgetExhausted):
        await retry(
            spent, clock() + 5, CircuitBreaker(10, 1, clock=clock), clock=clock, sleep=clock.sleep
        )
    assert calls == 1 and clock.slept == []


async def test_cancelled_probe_does_not_wedge_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, cooldown_s=1, clock=clock)
    breaker.on_failure()
    clock.now += 1
    probing = asyncio.Event()

    async def slow() -> None:
        probing.set()
        await asyncio.Event().wait()  # never answers

    task = asyncio.create_task(retry(slow, clock() + 5, breaker, clock=clock, sleep=clock.sleep))
    await asyncio.wait_for(probing.wait(), 5)
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state == "open"  # the cancelled probe counts as failed
    clock.now += 1
    breaker.before_call()  # a new probe is allowed after the cool-down
