"""modpipe: streaming moderation on Kafka with a small model first and a frontier model second.

Shared pieces live here: settings, errors, metrics, the cost model, the local stack and
the command line. The pipeline itself is in the top-level packages `streams` (triage),
`classifiers` (text -> scores) and `escalation` (the frontier tier).
"""

__version__ = "0.1.0"
