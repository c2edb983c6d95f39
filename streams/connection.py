"""The Faust app and how it reaches Kafka: the broker URLs, the credentials, and a
producer with idempotence, from the same settings `modpipe.core.kafka.client_options`
reads; and the one place Faust's producer errors are translated."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.transport.drivers.aiokafka import Producer
from faust.types import ProducerT
from faust.types.auth import CredentialsT

from modpipe.core import kafka_compat
from modpipe.core.kafka import ssl_context
from modpipe.core.records import wire_limits
from modpipe.core.settings import KafkaSettings, Settings


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


class _NoSensorNoise(logging.Filter):
    """Faust warns "Missing sensor state for rebalance" at a worker's first assignment, as
    its rebalance sensors saw no revocation first; modpipe uses none of them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Missing sensor state for rebalance" not in str(record.msg)


_NO_SENSOR_NOISE = _NoSensorNoise()


def build_app(settings: Settings, datadir: Path) -> faust.App:
    """The Faust app, tuned for throughput: raw bytes in and out, large fetches."""
    datadir.parent.mkdir(parents=True, exist_ok=True)
    kafka_compat.install()  # Faust's fetcher is aiokafka's: deliver odd header names too
    logging.getLogger("faust.app.base").addFilter(_NO_SENSOR_NOISE)  # once: same instance
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings.kafka),
        broker_credentials=broker_credentials(settings.kafka),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=settings.kafka.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.triage.commit_interval_s,  # what a crash re-processes
        broker_session_timeout=settings.kafka.session_timeout_s,
        # The worker drains its own batches on stop (TriageWorker.run); fetched messages
        # it never took are simply not acked.
        stream_wait_empty=False,
        broker_max_poll_records=settings.triage.batch_max,  # one fetch is at most one batch
        consumer_max_fetch_size=4 * 1024 * 1024,
        producer_linger_ms=5,
        # A send waits no longer than the retries around it (streams/connection.py).
        producer_request_timeout=settings.kafka.publish_deadline_s,
        # Any one record triage writes, a dead letter (up to ~1.5 MB) included.
        producer_max_request_size=wire_limits(settings.kafka.max_message_bytes).request_bytes,
        logging_config=None,
    )
    app.producer = idempotent_producer(app)  # every record triage writes is a decision
    return app
