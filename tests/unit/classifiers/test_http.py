"""The GPU tier's HTTP client: timeouts sized from the tokens in flight over the measured
service rate, so a retry never joins work the server is still doing."""

from __future__ import annotations

import pytest

from classifiers.http import SLACK, ServiceRate, VllmHttp


async def test_a_big_batch_gets_the_time_its_tokens_need() -> None:
    http = VllmHttp("http://127.0.0.1:9", timeout_s=0.5, max_attempts=1, max_in_flight=2)
    try:
        assert http.timeout_for(0) == pytest.approx(0.5)
        # 225 guard prompts of ~210 tokens at 1000 tokens/s: ~47 s of work, not 10 s.
        assert http.timeout_for(225 * 210) == pytest.approx(0.5 + SLACK * 47.25)
        # Work already on the server counts too: a queued request waits behind it.
        http.rate.begin(10_000)
        assert http.timeout_for(1000) == pytest.approx(0.5 + SLACK * 11.0)
    finally:
        await http.aclose()


def test_a_timeout_caps_the_rate_so_the_next_timeout_is_longer() -> None:
    rate = ServiceRate(1_000_000.0)  # a wildly optimistic guess
    rate.begin(2000)
    rate.timed_out(backlog=2000, waited_s=0.5)
    rate.end(2000, completed=False)
    assert rate.tokens_per_s <= 4000.0
    # The next attempt's expected service time is at least the wait that failed.
    assert 2000 / rate.tokens_per_s >= 0.5


def test_completions_move_the_rate_towards_what_the_server_does(monkeypatch) -> None:
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr("classifiers.http.time.monotonic", lambda: next(clock))
    rate = ServiceRate(10_000.0)
    for _ in range(40):  # each request: 500 tokens in 1 busy second
        rate.begin(500)
        rate.end(500, completed=True)
    assert rate.tokens_per_s == pytest.approx(500.0, rel=0.05)
    assert rate.tokens_in_flight == 0
