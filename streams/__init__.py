"""The triage tier: the Faust app, its topics, the wire records and the routing bands.

Depends on `classifiers` (text -> scores) and never on `escalation`.
"""
