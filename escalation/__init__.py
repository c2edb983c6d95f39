"""The escalation tier: borderline posts -> a frontier model, behind a Redis verdict cache.

Reads `moderation.escalations`, writes exactly one final verdict per post to
`moderation.verdicts` (and a review item when no model could decide). Imports only the
ground (`modpipe.core`: records, settings, metrics, Kafka helpers, retry and breaker).
Where a new provider goes: providers.py (a class satisfying `Provider`, and its name in
`build_provider`).
"""
