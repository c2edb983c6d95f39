"""The ACLs the secure local stack grants the modpipe user: exactly what the pipeline does.

aiokafka's admin client has no call for CreateAcls, so the request is built from its
protocol classes and sent to a broker over the local PLAINTEXT listener, whose principal
(ANONYMOUS) is the stack's super user.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from modpipe.core.errors import StackError
from modpipe.core.kafka import client_options
from modpipe.core.settings import KafkaSettings, Settings

# Kafka's wire codes (org.apache.kafka.common.acl / resource).
_RESOURCES = {"topic": 2, "group": 3, "transactional_id": 5}
_LITERAL, _PREFIXED = 3, 4
_ALLOW = 3
_OPERATIONS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8}

Acl = tuple[str, str, str]
"""(resource type `topic`, `group` or `transactional_id`, resource name, operation); a
transactional id's name is a prefix."""


def pipeline_acls(settings: Settings) -> list[Acl]:
    """What the workers, `produce` and the lag probe need, and nothing more."""
    t = settings.topics
    acls: list[Acl] = []
    for topic in (t.posts, t.escalations, t.verdicts, t.review, t.dlq, t.labels):
        acls += [("topic", topic, "DESCRIBE"), ("topic", topic, "CREATE")]
    acls += [("topic", t.posts, "READ"), ("topic", t.posts, "WRITE")]  # WRITE: `produce`
    acls += [("topic", t.escalations, "READ"), ("topic", t.review, "READ")]  # review: console
    acls += [
        ("topic", topic, "WRITE")
        for topic in (t.escalations, t.verdicts, t.review, t.dlq, t.labels)
    ]
    groups = (settings.app_id, settings.escalation.group_id, settings.review.group_id)
    acls += [("group", group, "READ") for group in groups]
    # Exactly once: each consumer group's transactional producers are named after it
    # (`{group}.{topic}.{partition}`, the console's `{group}.decisions.{id}`).
    acls += [
        ("transactional_id", f"{group}.", operation)
        for group in groups
        for operation in ("WRITE", "DESCRIBE")
    ]
    return acls


async def grant(admin_kafka: KafkaSettings, user: str, acls: list[Acl]) -> None:
    """Allow `User:<user>` each of `acls` from any host (idempotent)."""
    admin = AIOKafkaAdminClient(**client_options(admin_kafka))
    await admin.start()
    try:
        for kind, name, operation in acls:
            request = CreateAclsRequest(
                _RESOURCES[kind],
                name,
                _PREFIXED if kind == "transactional_id" else _LITERAL,
                f"User:{user}",
                "*",
                _OPERATIONS[operation],
                _ALLOW,
            )
            response = await admin._send_request(request)
            for code, message in response.creation_responses:
                if code:
                    raise StackError(
                        f"creating ACL {operation} on {kind} {name}: "
                        f"{for_code(code).__name__} {message or ''}"
                    )
    finally:
        await admin.close()
