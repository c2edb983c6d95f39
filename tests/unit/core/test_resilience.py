import asyncio
import itertools
import random
import time

import pytest

from modpipe.core.errors import BudgetExhausted, CircuitOpen, InvalidOutput, ProviderUnavailable
from modpipe.core.resilience import CircuitBreaker, retry


def test_breaker_opens_then_lets_one_probe_through(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    breaker.before_call()
    breaker.on_failure()
    breaker.before_call()
    breaker.on_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(10)
    now[0] += 10
    assert breaker.state == "half-open"
    breaker.before_call()  # the probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller while the probe is out
    breaker.on_failure()
    assert breaker.state == "open"
    now[0] += 10
    breaker.before_call()
    breaker.on_success()
    assert breaker.state == "closed"


async def test_retry_honours_retry_after_and_gives_up_at_the_deadline() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ProviderUnavailable("429", status="429", retry_after=0.05)
        return "ok"

    result = await retry(flaky, time.monotonic() + 5, CircuitBreaker(10, 1), rng=random.Random(0))
    assert result == "ok" and len(calls) == 3
    assert all(b - a >= 0.05 for a, b in itertools.pairwise(calls))

    async def always_bad() -> str:
        raise InvalidOutput("bad")

    with pytest.raises(InvalidOutput):
        await retry(always_bad, time.monotonic() + 0.3, CircuitBreaker(100, 1))


async def test_non_retryable_errors_are_not_retried() -> None:
    calls = 0

    async def spent() -> None:
        nonlocal calls
        calls += 1
        raise BudgetExhausted("spent")

    with pytest.raises(BudgetExhausted):
        await retry(spent, time.monotonic() + 5, CircuitBreaker(10, 1))
    assert calls == 1


async def test_cancelled_probe_does_not_wedge_the_breaker() -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=0.01)
    breaker.on_failure()
    await asyncio.sleep(0.02)

    async def slow() -> None:
        await asyncio.sleep(10)

    task = asyncio.create_task(retry(slow, time.monotonic() + 5, breaker))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.02)
    breaker.before_call()  # a new probe is allowed after the cool-down
