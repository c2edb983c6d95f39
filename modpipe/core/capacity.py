"""Capacity planning: partitions, workers, GPUs and Redis memory for a daily load.

Every number comes from a stated input: the workload (as `modpipe cost` takes it), a
peak factor over the daily mean, per-worker throughputs measured with `modpipe bench`
and `bench/escalator.py`, the GPU throughput from the cost model's prices, the measured
size of one cached verdict in Redis, and a target utilisation that leaves headroom for
rebalances and for catching up after an outage. Workers are sized for the peak; the
autoscaler runs fewer off-peak.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from modpipe.core.cost import CostModel, Workload, project
from modpipe.core.settings import Settings

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Throughputs:
    """What one unit of each kind sustains, and how full the plan may run them."""

    triage_posts_per_s: float  # one triage worker (modpipe bench)
    provider_latency_s: float  # one frontier call, end to end
    gpu_tokens_per_s: float  # one GPU (prices.small.tokens_per_second)
    cache_entry_bytes: float  # one cached verdict in Redis (MEMORY USAGE, with key and TTL)
    utilization: float  # the share of measured capacity the plan uses at peak
    partition_headroom: float  # partitions per worker at peak: room to scale past the plan


@dataclass(frozen=True, slots=True)
class Plan:
    """The plan and the intermediate figures it comes from."""

    posts_per_day: float
    mean_posts_per_s: float
    peak_posts_per_s: float
    peak_tokens_per_s: float
    peak_escalations_per_s: float
    peak_frontier_calls_per_s: float
    escalator_posts_per_s: float
    triage_workers: int
    escalator_workers: int
    posts_partitions: int
    escalations_partitions: int
    gpus: int
    cache_entries_per_day: float
    cache_ttl_days: float
    cache_redis_gb: float
    state_redis_mb: float
    hybrid_monthly_usd: float


def _partitions(workers: int, headroom: float) -> int:
    # A multiple of 6 spreads evenly over 1, 2, 3 or 6 consumers; partitions can be added
    # later but never removed, and adding them moves keys between partitions.
    return max(6, 6 * math.ceil(workers * headroom / 6))


def plan(settings: Settings, workload: Workload, peak_factor: float, t: Throughputs) -> Plan:
    """Size every tier for `workload` at `peak_factor` times its daily mean."""
    posts_per_day = workload.posts_per_day
    mean = posts_per_day / SECONDS_PER_DAY
    peak = mean * peak_factor
    escalations = peak * workload.escalation_rate
    calls = escalations * (1 - workload.cache_hit_rate)
    # An escalator holds max_in_flight calls at once, each taking the provider's latency.
    per_escalator = settings.escalation.max_in_flight / t.provider_latency_s
    triage = max(1, math.ceil(peak / (t.triage_posts_per_s * t.utilization)))
    # Cache hits return in milliseconds: escalators are sized on the calls that remain.
    escalators = max(1, math.ceil(calls / (per_escalator * t.utilization)))
    peak_tokens = peak * workload.tokens_per_post
    gpus = max(1, math.ceil(peak_tokens / (t.gpu_tokens_per_s * t.utilization)))
    # Every cache miss writes one entry, kept for the cache TTL unless evicted first.
    entries_per_day = posts_per_day * workload.escalation_rate * (1 - workload.cache_hit_rate)
    ttl_days = settings.redis.cache_ttl_s / SECONDS_PER_DAY
    cache_gb = entries_per_day * ttl_days * t.cache_entry_bytes / 1e9
    # Locks: at most one per call in flight, ~200 bytes each; the budget: two day keys.
    state_mb = escalators * settings.escalation.max_in_flight * 200 / 1e6
    hybrid = project(CostModel(settings.prices), workload)["hybrid"].monthly_usd
    return Plan(
        posts_per_day=posts_per_day,
        mean_posts_per_s=mean,
        peak_posts_per_s=peak,
        peak_tokens_per_s=peak_tokens,
        peak_escalations_per_s=escalations,
        peak_frontier_calls_per_s=calls,
        escalator_posts_per_s=per_escalator,
        triage_workers=triage,
        escalator_workers=escalators,
        posts_partitions=_partitions(triage, t.partition_headroom),
        escalations_partitions=_partitions(escalators, t.partition_headroom),
        gpus=gpus,
        cache_entries_per_day=entries_per_day,
        cache_ttl_days=ttl_days,
        cache_redis_gb=cache_gb,
        state_redis_mb=state_mb,
        hybrid_monthly_usd=hybrid,
    )


def plan_report(p: Plan, t: Throughputs, peak_factor: float) -> dict[str, Any]:
    """The plan as one JSON-ready object, with its inputs."""
    return {"plan": asdict(p), "throughputs": asdict(t), "peak_factor": peak_factor}
