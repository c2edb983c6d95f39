"""The cost model: one set of prices (configs/default.yaml, `prices`) for live metrics and
for `modpipe cost` projections.

- frontier: dollars per million input and output tokens, per model, from API usage;
- small (GPU): dollars per GPU-hour over sustained tokens per second, so a token costs
  gpu_usd_per_hour / (tokens_per_second * 3600), assuming the GPU is kept busy;
- cpu: dollars per core-hour over posts per core-second.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from modpipe.core.settings import FrontierPrice, PriceSettings

CHARS_PER_TOKEN = 4.0


def estimate_tokens(text: str) -> int:
    """Tokens by the ~4 characters per token rule of thumb for English BPE tokenizers
    (OpenAI's published estimate); used only where an API reports no usage."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


class CostModel:
    """Dollar prices of each tier's work."""

    def __init__(self, prices: PriceSettings) -> None:
        self.prices = prices

    def frontier_price(self, model: str) -> FrontierPrice:
        """The price of `model`; unknown models are priced as the dearest known one."""
        if model in self.prices.frontier:
            return self.prices.frontier[model]
        if not self.prices.frontier:
            return FrontierPrice(input_per_mtok=0.0, output_per_mtok=0.0)
        return max(self.prices.frontier.values(), key=lambda p: p.input_per_mtok)

    def frontier_usd(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """Dollars for one frontier call."""
        price = self.frontier_price(model)
        return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6

    def small_usd_per_token(self) -> float:
        """Dollars per token on a fully used GPU."""
        small = self.prices.small
        return small.gpu_usd_per_hour / (small.tokens_per_second * 3600)

    def small_usd(self, tokens: int) -> float:
        """Dollars for `tokens` processed by the GPU tier."""
        return tokens * self.small_usd_per_token()

    def cpu_usd(self, posts: int) -> float:
        """Dollars for `posts` scored by the CPU tier."""
        cpu = self.prices.cpu
        return posts * cpu.core_usd_per_hour / (cpu.posts_per_core_second * 3600)


DAYS_PER_MONTH = 30.0


@dataclass(frozen=True, slots=True)
class Workload:
    """The volume and shape of traffic a projection is made for."""

    posts_per_day: float
    tokens_per_post: float
    escalation_rate: float
    cache_hit_rate: float
    frontier_model: str
    prompt_overhead_tokens: float  # instructions and policy sent with every frontier call
    output_tokens_per_call: float

    @property
    def tokens_per_day(self) -> float:
        return self.posts_per_day * self.tokens_per_post


@dataclass(frozen=True, slots=True)
class Architecture:
    """Monthly dollars of one architecture, with the parts that make them up."""

    monthly_usd: float
    parts: dict[str, float]


def _frontier_calls_usd(cost: CostModel, w: Workload, calls_per_day: float) -> dict[str, float]:
    price = cost.frontier_price(w.frontier_model)
    input_tokens = calls_per_day * (w.tokens_per_post + w.prompt_overhead_tokens)
    output_tokens = calls_per_day * w.output_tokens_per_call
    return {
        "frontier_calls_per_day": calls_per_day,
        "frontier_input_usd": input_tokens * price.input_per_mtok / 1e6 * DAYS_PER_MONTH,
        "frontier_output_usd": output_tokens * price.output_per_mtok / 1e6 * DAYS_PER_MONTH,
    }


def _small_usd(cost: CostModel, w: Workload) -> dict[str, float]:
    small = cost.prices.small
    if small.monthly_usd is not None:
        return {"gpus": 0.0, "gpu_usd": small.monthly_usd, "ops_usd": small.ops_monthly_usd}
    # Whole GPUs, always on: a GPU is paid for whether or not it is busy.
    gpus = max(1, math.ceil(w.tokens_per_day / (small.tokens_per_second * 86400)))
    return {
        "gpus": float(gpus),
        "gpu_usd": gpus * small.gpu_usd_per_hour * 24 * DAYS_PER_MONTH,
        "ops_usd": small.ops_monthly_usd,
    }


def _total(parts: dict[str, float]) -> float:
    return sum(v for k, v in parts.items() if k.endswith("_usd"))


def project(cost: CostModel, w: Workload) -> dict[str, Architecture]:
    """Monthly cost of frontier-only, small-only and hybrid for workload `w`."""
    frontier = _frontier_calls_usd(cost, w, w.posts_per_day)
    small = _small_usd(cost, w)
    escalated = w.posts_per_day * w.escalation_rate * (1 - w.cache_hit_rate)
    hybrid = {**small, **_frontier_calls_usd(cost, w, escalated)}
    return {
        "frontier_only": Architecture(_total(frontier), frontier),
        "small_only": Architecture(_total(small), small),
        "hybrid": Architecture(_total(hybrid), hybrid),
    }


def break_even_tokens_per_day(cost: CostModel, w: Workload) -> float | None:
    """The least daily volume at which hybrid costs no more than frontier-only, or None."""

    def saving(tokens_per_day: float) -> float:
        at = replace(w, posts_per_day=tokens_per_day / w.tokens_per_post)
        arch = project(cost, at)
        return arch["frontier_only"].monthly_usd - arch["hybrid"].monthly_usd

    hi = 1e6
    while saving(hi) < 0:
        hi *= 2
        if hi > 1e15:
            return None
    lo = 0.0
    for _ in range(100):  # bisection; the step costs of whole GPUs keep it monotone enough
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if saving(mid) >= 0 else (mid, hi)
    return hi


def projection_report(cost: CostModel, w: Workload) -> dict[str, Any]:
    """The projection as one JSON-ready object: each architecture, break-even, assumptions."""
    price = cost.frontier_price(w.frontier_model)
    small = cost.prices.small
    out: dict[str, Any] = {name: asdict(a) for name, a in project(cost, w).items()}
    out["break_even_tokens_per_day"] = break_even_tokens_per_day(cost, w)
    out["assumptions"] = {
        **asdict(w),
        "tokens_per_day": w.tokens_per_day,
        "frontier_input_per_mtok": price.input_per_mtok,
        "frontier_output_per_mtok": price.output_per_mtok,
        "gpu_usd_per_hour": small.gpu_usd_per_hour,
        "gpu_tokens_per_second": small.tokens_per_second,
        "small_monthly_usd": small.monthly_usd,
        "small_ops_monthly_usd": small.ops_monthly_usd,
        "days_per_month": DAYS_PER_MONTH,
    }
    return out
