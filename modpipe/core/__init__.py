"""The ground floor: what every tier and command shares, importing nothing above it.

settings (one validated object), errors (the one exception tree), metrics (every
Prometheus metric), records (the wire schema and the records modpipe writes), kafka
(publish-with-retry, client options, topics, lag), cost (the cost model), resilience
(retry with backoff, circuit breaker). An import contract in `make lint` keeps it so.
"""
