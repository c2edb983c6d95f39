"""How the Faust app reaches Kafka: the broker URLs, the credentials, and a producer
with idempotence, from the same settings `modpipe.core.kafka.client_options` reads; and
the one place Faust's producer errors are translated."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.drivers.aiokafka import Producer
from faust.types import ProducerT
from faust.types.auth import CredentialsT

from modpipe.core.kafka import ssl_context
from modpipe.core.settings import KafkaSettings


def broker_urls(kafka: KafkaSettings) -> list[str]:
    """`kafka.bootstrap` (comma-separated host:port) as Faust broker URLs."""
    return [f"kafka://{address.strip()}" for address in kafka.bootstrap.split(",")]


def broker_credentials(kafka: KafkaSettings) -> CredentialsT | None:
    """Faust credentials for `kafka.security_protocol`; None for PLAINTEXT."""
    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(kafka))
    assert kafka.sasl_password is not None  # validated in KafkaSettings
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value(),
        ssl_context=ssl_context(kafka) if protocol == "SASL_SSL" else None,
        mechanism=kafka.sasl_mechanism,
    )


class IdempotentProducer(Producer):  # type: ignore[misc]
    """Faust's aiokafka producer with acks=all and idempotence outside transactions too
    (Faust turns idempotence on only for exactly-once): every record triage writes
    carries a decision, and a retried send must not write it twice."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


def idempotent_producer(app: faust.App) -> ProducerT:
    """A producer for `app` to use instead of its default one (set before start)."""
    return IdempotentProducer(app.producer_transport, loop=app.loop, beacon=app.beacon)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Faust's producer raises ProducerSendError for aiokafka's KafkaError: unwrap it, so
    the one retry path (`modpipe.core.kafka.publish`) sees the error it retries."""
    try:
        yield
    except ProducerSendError as exc:
        if isinstance(exc.__cause__, KafkaError):
            raise exc.__cause__ from None
        raise KafkaError(str(exc)) from exc
