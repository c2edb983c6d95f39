"""The triage tier: the Faust app (app.py), one batch's triage (triage.py), the routing bands.

Imports the ground (`modpipe.core`) and tier 1's public seam (`classifiers`: the
`Classifier` protocol and `Classification`), never a backend module and never `escalation`.
"""
