"""The local stack: Apache Kafka (KRaft, one node or three) and Redis on 127.0.0.1, no Docker.

Kafka runs from its jars on Maven Central, fetched once by Maven into
`stack.home/kafka-<version>/libs` (outside the repository); Redis is Debian's
`redis-server`. `up` is idempotent and waits for real readiness (a Kafka metadata
request, a Redis PING); `down` stops only the processes whose pids `up` recorded.
`up --secure` adds a SASL_SSL listener with a SCRAM user, the StandardAuthorizer and the
pipeline's ACLs, and Redis with a password and a TLS port; `up --brokers 3` starts a
cluster with replication factor 3 and `min.insync.replicas=2`.
"""

from modpipe.stack.layout import (
    Layout,
    Service,
    ServiceState,
    admin_kafka,
    broker_pids,
    recorded_layout,
    secure_client_overrides,
)
from modpipe.stack.services import (
    load_overrides,
    stack_down,
    stack_status,
    stack_up,
    status_report,
)

__all__ = [
    "Layout",
    "Service",
    "ServiceState",
    "admin_kafka",
    "broker_pids",
    "load_overrides",
    "recorded_layout",
    "secure_client_overrides",
    "stack_down",
    "stack_status",
    "stack_up",
    "status_report",
]
