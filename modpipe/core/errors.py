"""The one exception tree of modpipe.

    ModpipeError
    ├── ConfigError            a setting is missing or invalid (at start, never retried)
    ├── StackError             a local service (Kafka, Redis) failed to start or answer
    ├── AccessError            Kafka or Redis refused us: credentials, TLS or an ACL (at start)
    ├── InvalidRecord          a Kafka value that breaks the wire schema (goes to the DLQ)
    ├── ClassifierError        tier 1 could not score a batch
    │   └── ClassifierUnavailable   transport failure or timeout (retryable)
    ├── ProviderError          the frontier tier could not decide a post
    │   ├── ProviderUnavailable     429, 5xx, timeout, connection (retryable)
    │   ├── InvalidOutput           the reply broke the schema or refused (retryable unless
    │   │                           deterministic: a refusal, or any reply at temperature 0)
    │   ├── CircuitOpen             the breaker is open (retryable after its cool-down)
    │   └── BudgetExhausted         the daily budget is spent (not retryable)
    ├── CacheUnavailable       Redis failed or timed out (the caller degrades)
    └── ReviewStoreUnavailable the review console's Redis failed or timed out (503)

Third-party errors are translated into these in exactly one place per client.
"""

from __future__ import annotations


class ModpipeError(Exception):
    """Root of every error modpipe raises on purpose."""

    retryable: bool = False


class ConfigError(ModpipeError):
    """A setting is missing or invalid; raised at start."""


class StackError(ModpipeError):
    """A local service (Kafka, Redis) could not be started, stopped or reached."""


class AccessError(ModpipeError):
    """Kafka or Redis refused the connection or an operation: credentials, TLS or an ACL."""


class InvalidRecord(ModpipeError):
    """A Kafka value that breaks the wire schema; `reason` is a short metric label."""

    def __init__(self, message: str, reason: str = "schema") -> None:
        super().__init__(message)
        self.reason = reason


class ClassifierError(ModpipeError):
    """Tier 1 failed to score a batch."""


class ClassifierUnavailable(ClassifierError):
    """The classifier backend did not answer in time or answered 5xx."""

    retryable = True


class ProviderError(ModpipeError):
    """The frontier tier could not decide a post.

    A provider that answered and billed a failed attempt (a refusal, a reply that broke
    the schema) sets the `billed_*` fields, so the attempt is settled at what it cost.
    """

    billed_usd: float = 0.0
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0


class ProviderUnavailable(ProviderError):
    """429, 5xx, timeout or connection failure; `retry_after` is the server's hint in seconds."""

    retryable = True

    def __init__(self, message: str, status: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class InvalidOutput(ProviderError):
    """The reply did not match the schema, named an unknown category, or refused.

    `retryable` is False where asking again gets the same answer: a refusal, or any reply
    at temperature 0.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class CircuitOpen(ProviderError):
    """The circuit breaker is open; `retry_after` is the rest of its cool-down."""

    retryable = True

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(ProviderError):
    """Today's budget for paid calls is spent."""


class CacheUnavailable(ModpipeError):
    """Redis failed or timed out; callers go on without the cache."""


class ReviewStoreUnavailable(ModpipeError):
    """The review console's Redis (queues, leases, decisions, sessions) failed or timed out."""

    retryable = True
