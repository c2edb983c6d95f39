"""Kafka helpers shared by both workers, the commands and the local stack.

One way to publish what a worker owes (`publish`: send everything, wait for every
acknowledgement, retry the failed ones until a deadline), one way to open a client
(`client_options`), topic creation (a topic's record scan and consumer lag:
modpipe/core/probes.py). Opening a client through
`client_options` also makes aiokafka deliver records whose header names are not UTF-8
(`kafka_compat`), for every consumer in the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.helpers import create_ssl_context

from modpipe.core import kafka_compat
from modpipe.core.errors import AccessError, StackError
from modpipe.core.records import Outgoing, wire_limits
from modpipe.core.resilience import Backoff, retrying
from modpipe.core.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)


# Between publish attempts: 0.2 s, doubling, at most 5 s (no jitter: one producer's own
# records, not a crowd of clients).
PUBLISH_BACKOFF = Backoff(base_s=0.2, cap_s=5.0, jitter=False)

Send = Callable[[Outgoing], Awaitable[Awaitable[Any]]]
"""Hands one record to a producer and returns the future of its acknowledgement."""


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    """The TLS context for SSL and SASL_SSL: the CA file (else the system's), mutual TLS."""
    try:
        return create_ssl_context(
            cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise AccessError(f"Kafka TLS files unusable: {exc}") from None


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection arguments shared by every aiokafka client modpipe opens."""
    # Every aiokafka client is built here, so no consumer can miss the patch (idempotent).
    kafka_compat.install()
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
        # A restarted broker is found again at this pace rather than after the default
        # metadata age; the wait between retries of a failed request is the same.
        "retry_backoff_ms": int(kafka.reconnect_backoff_s * 1000),
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # validated in KafkaSettings
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


def producer_options(
    kafka: KafkaSettings, *, max_request_size: int, linger_ms: int = 5
) -> dict[str, Any]:
    """What every producer modpipe opens shares beyond `client_options`: each record is a
    decision, so acks from every in-sync replica and idempotence (a retried send is never
    written twice), and a request timeout bound to `kafka.publish_deadline_s`, so no send
    waits longer than the retries around it allow."""
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": linger_ms,
        "max_request_size": max_request_size,
        "request_timeout_ms": int(kafka.publish_deadline_s * 1000),
    }


def build_producer(
    kafka: KafkaSettings, *, max_request_size: int, linger_ms: int = 5
) -> AIOKafkaProducer:
    """The one way modpipe opens a (non-transactional) aiokafka producer."""
    return AIOKafkaProducer(
        **client_options(kafka),
        **producer_options(kafka, max_request_size=max_request_size, linger_ms=linger_ms),
    )


def consumer_options(kafka: KafkaSettings, group_id: str | None) -> dict[str, Any]:
    """What every consumer of modpipe's own topics shares beyond `client_options`: only
    committed transactions are read (an aborted batch's records never are), and offsets
    are committed by the code that owes them, never automatically."""
    return {
        **client_options(kafka),
        "group_id": group_id,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "session_timeout_ms": int(kafka.session_timeout_s * 1000),
    }


def describe_failure(kafka: KafkaSettings, exc: BaseException) -> str:
    """One line naming why Kafka refused us: credentials, TLS, an ACL, or no answer."""
    where = f"Kafka at {kafka.bootstrap} ({kafka.security_protocol})"
    user = f"user {kafka.sasl_username!r}" if kafka.sasl_username else "this client"
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        return f"{where} rejected the credentials of {user} ({kafka.sasl_mechanism}): {exc}"
    if isinstance(exc, UnsupportedSaslMechanismError):
        return f"{where} does not offer SASL mechanism {kafka.sasl_mechanism}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{where}: TLS certificate not trusted ({exc.verify_message}); "
            "is kafka.ssl_cafile the CA that signed it?"
        )
    if isinstance(exc, ssl.SSLError):
        return f"{where}: TLS handshake failed ({exc.reason}); does the listener speak TLS?"
    if isinstance(exc, TopicAuthorizationFailedError | GroupAuthorizationFailedError):
        return f"{where}: {user} is not authorized: {exc} (an ACL is missing)"
    if isinstance(exc, ClusterAuthorizationFailedError):
        return f"{where}: {user} is not authorized on the cluster: {exc} (an ACL is missing)"
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
        return (
            f"{where} closed the connection at once: the listener expects TLS or SASL "
            "(check kafka.security_protocol)"
        )
    if isinstance(exc, ConnectionResetError) and "SSL" in kafka.security_protocol:
        return f"{where} reset the TLS handshake: the listener does not speak TLS"
    if isinstance(exc, KafkaConnectionError | asyncio.TimeoutError | OSError):
        hint = (
            "; the listener may expect TLS or SASL (kafka.security_protocol)"
            if kafka.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT")
            else ""
        )
        return f"{where} did not answer: {exc or type(exc).__name__}{hint}"
    return f"{where}: {type(exc).__name__}: {exc}"


async def probe(kafka: KafkaSettings, timeout_s: float = 5.0) -> None:
    """Open one connection (TLS handshake and SASL included) to a bootstrap broker.

    aiokafka's clients log why a bootstrap failed and raise only "Unable to bootstrap";
    a direct connection raises the cause, which `describe_failure` can name.
    """
    options = client_options(kafka)
    del options["bootstrap_servers"], options["retry_backoff_ms"]
    host, _, port = kafka.bootstrap.split(",")[0].strip().rpartition(":")
    conn = await create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **options)
    conn.close()


@contextlib.asynccontextmanager
async def access(kafka: KafkaSettings) -> AsyncIterator[None]:
    """Turn what Kafka refuses at start into AccessError with one clear line."""
    try:
        yield
    except (TimeoutError, KafkaError, OSError) as exc:
        raise AccessError(describe_failure(kafka, exc)) from None


def admin_client(kafka: KafkaSettings, **extra: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_options(kafka), **extra)


async def _handed(send: Send, r: Outgoing) -> Awaitable[Any]:
    # A producer can refuse a record before buffering it (no metadata, a full buffer
    # while the broker is away): that is a failed send to retry like a failed ack.
    try:
        return await send(r)
    except KafkaError as exc:
        refused: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        refused.set_exception(exc)
        return refused


async def publish(send: Send, records: Sequence[Outgoing], deadline_s: float) -> None:
    """Send all `records`, then wait for the broker to acknowledge every one.

    Records that fail are sent again with backoff until `deadline_s` has passed (long
    enough to ride out a broker restart); then KafkaError is raised and the caller must
    not commit the offsets these records answer for.
    """
    pending = list(records)

    async def send_pending() -> None:
        nonlocal pending
        futures = [await _handed(send, r) for r in pending]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r, res in zip(pending, results, strict=True) if isinstance(res, Exception)]
        if failed:
            errors = sorted({type(res).__name__ for res in results if isinstance(res, Exception)})
            pending = failed
            raise KafkaError(f"could not publish {len(failed)} records: {errors}")

    def retrying_log(exc: BaseException, retries: int, delay: float) -> None:
        log.warning("%s; retrying", exc)

    await retrying(
        send_pending,
        PUBLISH_BACKOFF,
        KafkaError,
        deadline=time.monotonic() + deadline_s,
        on_retry=retrying_log,
    )


async def kafka_ready(kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
    """Return once a metadata request succeeds (an open port is not readiness).

    A refusal that waiting cannot cure (credentials, TLS, an ACL) fails at once.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        admin = admin_client(kafka, request_timeout_ms=3000)
        try:
            await probe(kafka, timeout_s=3.0)
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError) as exc:
            if _fatal(exc):
                raise AccessError(describe_failure(kafka, exc)) from None
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise StackError(
        describe_failure(kafka, last) if last else f"Kafka at {kafka.bootstrap}: no answer"
    )


def _fatal(exc: BaseException) -> bool:
    # A restarting broker refuses connections; wrong credentials or TLS never heal, and a
    # connection closed as soon as it opened is a protocol mismatch.
    if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):
        return True
    return isinstance(
        exc,
        SaslAuthenticationFailed
        | AuthenticationFailedError
        | UnsupportedSaslMechanismError
        | ssl.SSLError
        | TopicAuthorizationFailedError
        | GroupAuthorizationFailedError
        | ClusterAuthorizationFailedError,
    )


async def ensure_topics(
    kafka: KafkaSettings,
    names: Iterable[str],
    partitions: int,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create the missing topics among `names` with `partitions` partitions each.

    `configs` gives topic configs by name (such as `max.message.bytes`); a topic that
    already exists keeps its own.
    """
    configs = configs or {}
    admin = admin_client(kafka)
    async with access(kafka):
        await probe(kafka)
        await admin.start()
    try:
        async with access(kafka):
            existing = set(await admin.list_topics())
            missing = [n for n in dict.fromkeys(names) if n not in existing]
            if not missing:
                return
            try:
                rf = kafka.replication_factor
                response = await admin.create_topics(
                    [
                        NewTopic(
                            n,
                            num_partitions=partitions,
                            replication_factor=rf,
                            topic_configs=dict(configs.get(n, {})),
                        )
                        for n in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another worker created them first
            else:
                _raise_topic_errors(response, missing)
                log.info("created topics %s partitions=%d", missing, partitions)
        await _wait_for_leaders(admin, missing)
    finally:
        await admin.close()


def _raise_topic_errors(response: Any, names: list[str]) -> None:
    # create_topics reports per-topic errors in its response rather than raising them.
    for topic, code, *rest in getattr(response, "topic_errors", ()):
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        error = for_code(code)
        message = rest[0] if rest and rest[0] else error.description
        raise error(f"topic {topic!r}: {message}")


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    # A topic is usable once every partition has a leader; clients that fetch offsets
    # before that get NotLeaderForPartition and some give up on the partition.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise StackError(f"topics {names} have no leader after 30s")


async def ensure_pipeline_topics(settings: Settings) -> None:
    """Create every modpipe topic that is missing."""
    t = settings.topics
    names = (t.posts, t.verdicts, t.escalations, t.review, t.dlq, t.labels)
    # Sized so that every record a worker writes fits (records.wire_limits).
    limits = wire_limits(settings.kafka.max_message_bytes)
    records = {"max.message.bytes": str(limits.record_topic_bytes)}
    configs = {
        t.escalations: records,
        t.review: records,
        t.labels: records,  # a label carries the post as received, like a review item
        t.dlq: {"max.message.bytes": str(limits.dlq_topic_bytes)},
    }
    await ensure_topics(settings.kafka, names, settings.kafka.partitions, configs)


async def topic_partitions(kafka: KafkaSettings, names: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the topics in `names`."""
    admin = admin_client(kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
