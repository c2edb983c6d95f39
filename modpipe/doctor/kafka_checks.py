"""The doctor's Kafka checks: the connection, the topics and their sizes, the ACLs.

The ACLs are read the way a client can read its own: Metadata v8 answers, per topic, the
operations this principal may perform (`topic_authorized_operations`), and DescribeGroups
v3 the same per group; a principal cannot usually list ACLs (that needs DESCRIBE on the
cluster). Without an authorizer every operation is allowed. aiokafka's Metadata stops at
v5, and its DescribeGroups v3 reads the answer with v2's schema (dropping the
operations), so both are declared here from aiokafka's protocol building blocks. Whether
a missing topic can be created is asked with CreateTopics `validate_only`, which creates
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Bytes, Int16, Int32, Schema, String

from modpipe.core.kafka import client_options, describe_failure, probe
from modpipe.core.records import wire_limits
from modpipe.core.settings import Settings
from modpipe.doctor import Finding, fail, ok, warn

_Struct = TypeVar("_Struct", bound=RequestStruct)

# Kafka's AclOperation codes; authorized operations are a bit field of 1 << code.
OPERATIONS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8}
_UNKNOWN_TOPIC = 3


class _MetadataResponseV8(Response):
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            Array(
                ("node_id", Int32),
                ("host", String("utf-8")),
                ("port", Int32),
                ("rack", String("utf-8")),
            ),
        ),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            Array(
                ("error_code", Int16),
                ("topic", String("utf-8")),
                ("is_internal", Boolean),
                (
                    "partitions",
                    Array(
                        ("error_code", Int16),
                        ("partition", Int32),
                        ("leader", Int32),
                        ("leader_epoch", Int32),
                        ("replicas", Array(Int32)),
                        ("isr", Array(Int32)),
                        ("offline_replicas", Array(Int32)),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(
        ("topics", Array(String("utf-8"))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
    )


class _Fixed(Request[_Struct]):
    """A request sent in the one version whose struct it names, built from fixed fields
    (aiokafka's Request picks a version; the doctor needs the authorized operations)."""

    API_KEY = -1  # each subclass names its own

    def __init__(self, *fields: Any) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[_Struct]) -> _Struct:
        return request_struct_class(*self._fields)


class _AuthorizedMetadata(_Fixed[_MetadataRequestV8]):
    """Topics (names, no auto-creation, no cluster operations, their operations)."""

    API_KEY = 3


class _DescribeGroupsResponseV3(Response):
    API_KEY = 15
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            Array(
                ("error_code", Int16),
                ("group", String("utf-8")),
                ("state", String("utf-8")),
                ("protocol_type", String("utf-8")),
                ("protocol", String("utf-8")),
                (
                    "members",
                    Array(
                        ("member_id", String("utf-8")),
                        ("client_id", String("utf-8")),
                        ("client_host", String("utf-8")),
                        ("member_metadata", Bytes),
                        ("member_assignment", Bytes),
                    ),
                ),
                ("authorized_operations", Int32),
            ),
        ),
    )


class _DescribeGroupsRequestV3(RequestStruct):
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = _DescribeGroupsResponseV3
    SCHEMA = Schema(("groups", Array(String("utf-8"))), ("include_authorized_operations", Boolean))


class _AuthorizedGroups(_Fixed[_DescribeGroupsRequestV3]):
    """Groups (names, their authorized operations)."""

    API_KEY = 15


def topic_needs(settings: Settings) -> dict[str, int | None]:
    """Each pipeline topic and the least `max.message.bytes` it needs (None: no bound)."""
    t = settings.topics
    limits = wire_limits(settings.kafka.max_message_bytes)
    return {
        t.posts: settings.kafka.max_message_bytes,
        t.verdicts: None,
        t.escalations: limits.record_topic_bytes,
        t.review: limits.record_topic_bytes,
        t.labels: limits.record_topic_bytes,
        t.dlq: limits.dlq_topic_bytes,
    }


def command_acls(settings: Settings) -> dict[str, list[tuple[str, str, str]]]:
    """(resource kind, name, operation) each command needs; CREATE is asked separately."""
    t = settings.topics
    writes = lambda *topics: [("topic", n, "WRITE") for n in topics]  # noqa: E731
    return {
        "modpipe worker": [
            ("topic", t.posts, "READ"),
            *writes(t.verdicts, t.escalations, t.review, t.dlq),
            ("group", settings.app_id, "READ"),
        ],
        "modpipe escalator": [
            ("topic", t.escalations, "READ"),
            *writes(t.verdicts, t.review, t.dlq),
            ("group", settings.escalation.group_id, "READ"),
        ],
        "modpipe review serve": [
            ("topic", t.review, "READ"),
            *writes(t.verdicts, t.labels, t.dlq),
            ("group", settings.review.group_id, "READ"),
        ],
        "modpipe produce": writes(t.posts),
    }


async def check_kafka(settings: Settings) -> list[Finding]:
    """Every Kafka finding; after a failed connection, only that one."""
    kafka = settings.kafka
    where = f"{kafka.bootstrap} ({kafka.security_protocol})"
    try:
        await probe(kafka, timeout_s=5.0)
    except (TimeoutError, KafkaError, OSError) as exc:
        return [fail("kafka", describe_failure(kafka, exc))]
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=10_000)
    try:
        await admin.start()
        user = f"user {kafka.sasl_username}" if kafka.sasl_username else "no SASL user"
        findings = [ok("kafka", f"{where} answers, {user}")]
        topics = await _topic_operations(admin, list(topic_needs(settings)))
        findings += await _check_topics(admin, settings, topics)
        groups = await _group_operations(admin, _groups(settings))
        findings += _check_acls(settings, topics, groups)
        return findings
    except (TimeoutError, KafkaError, OSError) as exc:
        return [fail("kafka", describe_failure(kafka, exc))]
    finally:
        await admin.close()


def _groups(settings: Settings) -> list[str]:
    return [settings.app_id, settings.escalation.group_id, settings.review.group_id]


async def _topic_operations(
    admin: AIOKafkaAdminClient, names: list[str]
) -> dict[str, tuple[int, int]]:
    """Topic -> (error code, authorized operations bit field)."""
    response: Any = await admin._send_request(_AuthorizedMetadata(names, False, False, True))
    return {t[1]: (t[0], t[-1]) for t in response.topics}


async def _group_operations(admin: AIOKafkaAdminClient, groups: Iterable[str]) -> dict[str, int]:
    """Group -> authorized operations bit field: 0 when this principal may not see it,
    -1 when no coordinator answered (a fresh cluster makes its offsets topic on demand)."""
    found: dict[str, int] = {}
    for group in groups:
        found[group] = -1
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            try:
                node = await admin.find_coordinator(group)
                response: Any = await admin._send_request(_AuthorizedGroups([group], True), node)
            except GroupAuthorizationFailedError:  # no DESCRIBE (hence no READ) on it
                found[group] = 0
                break
            except KafkaError:
                await asyncio.sleep(0.5)
                continue
            for described in response.groups:
                found[described[1]] = 0 if described[0] else described[-1]
            break
    return found


def _allowed(bits: int, operation: str) -> bool:
    if bits < 0:  # -2^31: the broker did not say (an error on the resource)
        return False
    allowed = bits & (1 << OPERATIONS[operation])
    implied = operation == "DESCRIBE" and bits & (1 << OPERATIONS["READ"] | 1 << 4)
    return bool(allowed or implied)


async def _check_topics(
    admin: AIOKafkaAdminClient, settings: Settings, topics: dict[str, tuple[int, int]]
) -> list[Finding]:
    findings: list[Finding] = []
    needs = topic_needs(settings)
    missing = [n for n, (code, _) in topics.items() if code == _UNKNOWN_TOPIC]
    creatable = await _creatable(admin, settings, missing)
    for name, need in needs.items():
        code, _ = topics.get(name, (_UNKNOWN_TOPIC, 0))
        item = f"topic {name}"
        if code == _UNKNOWN_TOPIC:
            findings.append(_missing_topic(settings, name, need, creatable.get(name)))
        elif code:
            findings.append(
                fail(item, f"{for_code(code).__name__}: grant DESCRIBE on topic {name}")
            )
        else:
            findings.append(await _topic_size(admin, name, need))
    return findings


async def _creatable(
    admin: AIOKafkaAdminClient, settings: Settings, names: list[str]
) -> dict[str, str | None]:
    """Topic -> None if it can be created, else why not."""
    if not names:
        return {}
    kafka = settings.kafka
    new = [NewTopic(n, settings.kafka.partitions, kafka.replication_factor) for n in names]
    try:
        response: Any = await admin.create_topics(new, validate_only=True)
    except KafkaError as exc:
        return dict.fromkeys(names, f"{type(exc).__name__}: {exc}")
    return {
        topic: (None if not code else f"{for_code(code).__name__}: {rest[0] if rest else ''}")
        for topic, code, *rest in response.topic_errors
    }


def _missing_topic(settings: Settings, name: str, need: int | None, refused: str | None) -> Finding:
    item = f"topic {name}"
    if refused is None:
        return ok(item, "missing; a worker creates it at start (CREATE allowed)")
    size = f" --config max.message.bytes={need}" if need else ""
    return fail(
        item,
        f"missing and cannot be created ({refused.strip()}): kafka-topics.sh --create "
        f"--topic {name} --partitions {settings.kafka.partitions} "
        f"--replication-factor {settings.kafka.replication_factor}{size}",
    )


async def _topic_size(admin: AIOKafkaAdminClient, name: str, need: int | None) -> Finding:
    item = f"topic {name}"
    if need is None:
        return ok(item, "exists")
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": None})]
        )
    except KafkaError as exc:
        return warn(item, f"exists; max.message.bytes unreadable ({exc}); it needs >= {need}")
    code, _, _, _, entries = response.resources[0][:5]
    if code:
        return warn(
            item,
            f"exists; max.message.bytes unreadable ({for_code(code).__name__}: grant "
            f"DESCRIBE_CONFIGS to check); it needs >= {need}",
        )
    size = next((int(e[1]) for e in entries if e[0] == "max.message.bytes"), None)
    if size is None or size >= need:
        return ok(item, f"exists, max.message.bytes {size} (needs >= {need})")
    return fail(
        item,
        f"max.message.bytes {size} is below the {need} its records need: kafka-configs.sh "
        f"--alter --entity-type topics --entity-name {name} --add-config "
        f"max.message.bytes={need}",
    )


def _check_acls(
    settings: Settings, topics: dict[str, tuple[int, int]], groups: dict[str, int]
) -> list[Finding]:
    principal = (
        f"User:{settings.kafka.sasl_username}" if settings.kafka.sasl_username else "the client"
    )
    findings = []
    for command, needed in command_acls(settings).items():
        lacking: list[str] = []
        unknown: list[str] = []
        for kind, name, operation in needed:
            if kind == "topic":
                code, bits = topics.get(name, (_UNKNOWN_TOPIC, 0))
                if code == _UNKNOWN_TOPIC:
                    continue  # reported with the topic; its ACLs cannot be read before it exists
            else:
                bits = groups.get(name, 0)
                if bits == -1:
                    unknown.append(f"{operation} on group {name}")
                    continue
            if not _allowed(bits, operation):
                lacking.append(f"{operation} on {kind} {name}")
        item = f"ACLs for {command}"
        if lacking:
            findings.append(
                fail(item, f"{principal} lacks {', '.join(lacking)}: grant them (kafka-acls.sh)")
            )
        elif unknown:
            findings.append(
                warn(item, f"no group coordinator answered; unchecked: {', '.join(unknown)}")
            )
        else:
            findings.append(ok(item, "granted"))
    return findings
