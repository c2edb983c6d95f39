import pytest

from modpipe.core.cost import (
    CostModel,
    Workload,
    break_even_tokens_per_day,
    estimate_tokens,
    project,
)
from modpipe.core.settings import FrontierPrice, PriceSettings, SmallPrice

PRICES = PriceSettings(
    frontier={"m": FrontierPrice(input_per_mtok=2.0, output_per_mtok=8.0)},
    small=SmallPrice(gpu_usd_per_hour=2.0, tokens_per_second=10_000),
)
W = Workload(
    posts_per_day=1e6,
    tokens_per_post=100,
    escalation_rate=0.1,
    cache_hit_rate=0.5,
    frontier_model="m",
    prompt_overhead_tokens=300,
    output_tokens_per_call=50,
)


def test_projection_by_hand() -> None:
    arch = project(CostModel(PRICES), W)
    per_call = (400 * 2.0 + 50 * 8.0) / 1e6  # $0.0012
    assert arch["frontier_only"].monthly_usd == pytest.approx(1e6 * per_call * 30)
    # 1e8 tokens/day over 10k tok/s = 8.64e8 per GPU-day: one GPU, always on.
    assert arch["small_only"].monthly_usd == pytest.approx(2.0 * 24 * 30)
    escalated = 1e6 * 0.1 * 0.5
    assert arch["hybrid"].monthly_usd == pytest.approx(2.0 * 24 * 30 + escalated * per_call * 30)
    assert arch["hybrid"].parts["frontier_calls_per_day"] == escalated


def test_gpus_are_whole_and_scale_with_volume() -> None:
    from dataclasses import replace

    big = replace(W, posts_per_day=1e8)  # 1e10 tokens/day -> 11.6 GPU-days -> 12 GPUs
    assert project(CostModel(PRICES), big)["small_only"].parts["gpus"] == 12


def test_break_even_is_where_the_two_costs_meet() -> None:
    cost = CostModel(PRICES)
    v = break_even_tokens_per_day(cost, W)
    assert v is not None
    from dataclasses import replace

    at = project(cost, replace(W, posts_per_day=v / W.tokens_per_post))
    below = project(cost, replace(W, posts_per_day=0.9 * v / W.tokens_per_post))
    assert at["hybrid"].monthly_usd == pytest.approx(at["frontier_only"].monthly_usd, rel=1e-6)
    assert below["hybrid"].monthly_usd > below["frontier_only"].monthly_usd


def test_token_estimate_is_four_chars_per_token() -> None:
    assert estimate_tokens("a" * 40) == 10 and estimate_tokens("") == 1
