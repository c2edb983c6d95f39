"""The reviewers' console: where trust-and-safety reviewers decide what the models could not.

`store` (queues, leases and decisions in Redis), `accounts` (users, sessions, login
limits), `feeder` (moderation.review into the store; offsets committed past published
decisions only), `desk` (claim, skip, decide, publish the human Verdict and the Label),
`console` (one process's running parts), `app` (the Starlette pages and JSON API).
Needs the `review` extra (`pip install -e '.[review]'`). Imports the ground only.
"""
