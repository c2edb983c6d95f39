"""Every Prometheus metric modpipe exports, declared in one place.

Each worker builds its own `Metrics` on a registry (so tests can build fresh ones) and
serves it on 127.0.0.1 by default. Labels are bounded: tiers, actions, outcomes, stages,
statuses, DLQ reasons, partitions; never post ids or texts.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modpipe.core.health import Health, HttpEndpoint

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """The modpipe_* metrics on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # In this order: the generated reference (docs/reference/metrics.md) lists them so.
        self._tiers(self.registry)
        self._queues(self.registry)
        self._rules(self.registry)
        self._compliance(self.registry)

    def _tiers(self, r: CollectorRegistry) -> None:
        """Posts, decisions, tokens, cost, latency, the cache, providers, the budget."""
        self.posts = Counter(
            "modpipe_posts",
            "Posts consumed, by outcome "
            "(verdict, escalated, dlq; for the escalator: verdict, review, dlq).",
            ["worker", "outcome"],
            registry=r,
        )
        self.decisions = Counter(
            "modpipe_decisions",
            "Final verdicts published, by tier and action.",
            ["tier", "action"],
            registry=r,
        )
        self.tokens = Counter("modpipe_tokens", "Tokens processed, by tier.", ["tier"], registry=r)
        self.cost = Counter("modpipe_cost_usd", "Dollars spent, by tier.", ["tier"], registry=r)
        self.stage_seconds = Histogram(
            "modpipe_stage_seconds",
            "Latency of a stage: classify (per batch), "
            "escalate (per post), end_to_end (Kafka timestamp to verdict).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "modpipe_batch_size", "Posts per triage batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self.cache = Counter(
            "modpipe_cache_requests",
            "Verdict cache look-ups, by result (hit, miss, error).",
            ["result"],
            registry=r,
        )
        self.provider_requests = Counter(
            "modpipe_provider_requests",
            "Calls to a model endpoint, by provider and status "
            "(ok, 429, 5xx, timeout, connection, invalid_output, circuit_open, budget).",
            ["provider", "status"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "modpipe_budget_remaining_usd", "Dollars left in today's frontier budget.", registry=r
        )
        self.budget_daily = Gauge(
            "modpipe_budget_daily_usd", "The frontier budget per UTC day.", registry=r
        )
        self.escalation_target = Gauge(
            "modpipe_escalation_rate_expected",
            "The share of posts the routing bands were calibrated to escalate.",
            registry=r,
        )

    def _queues(self, r: CollectorRegistry) -> None:
        """Dead letters, consumer lag, the review queue and its audits."""
        self.dlq = Counter(
            "modpipe_dlq", "Records sent to the DLQ, by reason.", ["reason"], registry=r
        )
        self.review = Counter(
            "modpipe_review_items", "Items sent to human review, by reason.", ["reason"], registry=r
        )
        self.consumer_lag = Gauge(
            "modpipe_consumer_lag",
            "Messages between the committed offset and the end, per topic and partition.",
            ["group", "topic", "partition"],
            registry=r,
        )

        self.review_depth = Gauge(
            "modpipe_review_queue_depth",
            "Review items waiting (not claimed), by reason.",
            ["reason"],
            registry=r,
        )
        self.review_oldest = Gauge(
            "modpipe_review_oldest_age_seconds",
            "Age of the oldest waiting review item, by reason (0 when none).",
            ["reason"],
            registry=r,
        )
        self.review_decisions = Counter(
            "modpipe_review_decisions",
            "Reviewers' decisions recorded, by action (allow, block, skip).",
            ["action"],
            registry=r,
        )
        self.review_wait = Histogram(
            "modpipe_review_queued_to_decided_seconds",
            "Time from a review item's queueing to its decision.",
            buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200),
            registry=r,
        )
        self.review_audits = Counter(
            "modpipe_review_audits",
            "Audit items decided, by agreement with the automatic verdict (agree, disagree).",
            ["agreement"],
            registry=r,
        )
        self.tier1_error = Gauge(
            "modpipe_small_tier_error_rate",
            "Tier 1's error rate estimated from every audit decided so far "
            "(estimate, and the 95% Clopper-Pearson interval's lower and upper bounds).",
            ["bound"],
            registry=r,
        )
        self.tier1_audits = Gauge(
            "modpipe_small_tier_audits",
            "Audit decisions behind the tier-1 (small) error estimate.",
            registry=r,
        )

    def _rules(self, r: CollectorRegistry) -> None:
        """The rules stage and shadow runs (issue 23)."""
        self.rule_hits = Counter(
            "modpipe_rule_hits",
            "Posts a rule matched, by rule id and the rule's action (bounded by the rule file).",
            ["rule", "action"],
            registry=r,
        )
        self.rules_reloads = Counter(
            "modpipe_rules_reloads",
            "Rule file loads, by result (ok, invalid).",
            ["result"],
            registry=r,
        )
        self.rules_invalid = Gauge(
            "modpipe_rules_invalid",
            "1 while the rule file on disk was refused (the previous rules stay in force).",
            registry=r,
        )
        self.rules_loaded = Gauge(
            "modpipe_rules_loaded", "Rules in force (the last valid rule file).", registry=r
        )
        self.rules_errors = Counter(
            "modpipe_rules_errors",
            "Rules stage failures it carried on past, by kind (rate: Redis; match: one post).",
            ["kind"],
            registry=r,
        )
        self.shadow_posts = Counter(
            "modpipe_shadow_posts",
            "Posts a shadow run compared with production, by action and category "
            "(production's) and agreement (agree, disagree).",
            ["action", "category", "agreement"],
            registry=r,
        )

    def _compliance(self, r: CollectorRegistry) -> None:
        """DSA compliance (docs/compliance.md): statements, appeals, notices."""
        self.statements_built = Counter(
            "modpipe_statements_built",
            "Statements of reasons published on the statements topic, by automated_decision.",
            ["automated"],
            registry=r,
        )
        self.statements_submitted = Counter(
            "modpipe_statements_submitted",
            "Statements the Transparency Database holds, by how we know "
            "(created: 201, duplicate: 422 for its puid, found: existing-puid).",
            ["result"],
            registry=r,
        )
        self.statements_failed = Counter(
            "modpipe_statements_failed",
            "Statements the database refused for their content (sent to the DLQ).",
            registry=r,
        )
        self.statements_requests = Counter(
            "modpipe_statements_requests",
            "Calls to the Transparency Database, by status (201, 422, 429, 5xx, timeout, "
            "connection, other).",
            ["status"],
            registry=r,
        )
        self.statements_pending = Gauge(
            "modpipe_statements_pending",
            "Statements on the statements topic not yet stored in the database.",
            registry=r,
        )
        self.statements_oldest_pending = Gauge(
            "modpipe_statements_oldest_pending_age_seconds",
            "Age of the oldest statement not yet stored (0 when none).",
            registry=r,
        )
        self.appeals = Counter(
            "modpipe_appeals",
            "Appeals read, by outcome of the intake (queued, duplicate, dlq).",
            ["outcome"],
            registry=r,
        )
        self.appeal_decisions = Histogram(
            "modpipe_appeal_received_to_decided_seconds",
            "Time from an appeal's receipt to its decision (its median: histogram_quantile 0.5).",
            ["outcome"],
            buckets=(60, 600, 3600, 14400, 43200, 86400, 172800, 432000, 864000, 2592000),
            registry=r,
        )
        self.notices = Counter(
            "modpipe_notices",
            "Notices read, by route (posts: decided like a post; review: a trusted flagger's, "
            "to reviewers first; dlq).",
            ["route"],
            registry=r,
        )

    def serve(self, host: str, port: int, health: Health | None = None) -> HttpEndpoint | None:
        """Serve /metrics, /healthz and /readyz (`health`'s checks) on host:port; 0 disables."""
        return HttpEndpoint(self.registry, host, port, health) if port else None
