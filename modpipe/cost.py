"""The cost model: one set of prices (configs/default.yaml, `prices`) for live metrics and
for `modpipe cost` projections.

- frontier: dollars per million input and output tokens, per model, from API usage;
- small (GPU): dollars per GPU-hour over sustained tokens per second, so a token costs
  gpu_usd_per_hour / (tokens_per_second * 3600), assuming the GPU is kept busy;
- cpu: dollars per core-hour over posts per core-second.
"""

from __future__ import annotations

import math

from modpipe.settings import FrontierPrice, PriceSettings

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
