"""The escalation tier: borderline posts -> a frontier model, behind a Redis verdict cache.

Reads `moderation.escalations`, writes exactly one final verdict per post to
`moderation.verdicts` (and a review item when no model could decide). Depends on
`streams` for records and on nothing that depends on it.
"""
