"""`modpipe plan`: the seed's case (1B tokens/day, peak 3x) and how each input moves it."""

from __future__ import annotations

import json

import pytest

from modpipe.cli import main


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["plan", "--tokens-per-day", "1e9", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)["plan"]


def test_the_seed_case(capsys: pytest.CaptureFixture[str]) -> None:
    p = plan(capsys, "--peak-factor", "3")
    assert p["posts_per_day"] == 2e8
    assert p["peak_posts_per_s"] == pytest.approx(2e8 / 86400 * 3)
    assert p["triage_workers"] == 1  # 6,944 / (12,148 x 0.6) = 0.95
    assert p["escalator_workers"] == 19  # 694 / (64 / 1 s x 0.6) = 18.1
    assert (p["posts_partitions"], p["escalations_partitions"]) == (6, 42)
    assert p["gpus"] == 3  # 34,722 tokens/s / (20,000 x 0.6) = 2.9
    assert p["cache_redis_gb"] == pytest.approx(2e7 * 7 * 600 / 1e9)
    assert p["hybrid_monthly_usd"] == pytest.approx(114120, rel=1e-3)


def test_cache_hits_and_more_in_flight_shrink_the_escalators(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert plan(capsys, "--cache-hit-rate", "0.5")["escalator_workers"] == 10
    monkeypatch.setenv("MODPIPE_ESCALATION__MAX_IN_FLIGHT", "256")
    assert plan(capsys)["escalator_workers"] == 5


def test_a_peak_below_the_mean_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--tokens-per-day", "1e9", "--peak-factor", "0.5"]) == 2
    assert "--peak-factor" in capsys.readouterr().err
