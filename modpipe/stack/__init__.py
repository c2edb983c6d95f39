"""The local stack: Apache Kafka (KRaft, one node) and Redis on 127.0.0.1, no Docker.

Kafka runs from its jars on Maven Central, fetched once by Maven into
`stack.home/kafka-<version>/libs` (outside the repository); Redis is Debian's
`redis-server`. `up` is idempotent and waits for real readiness (a Kafka metadata
request, a Redis PING); `down` stops only the processes whose pids `up` recorded.
"""

from modpipe.stack.services import Service, ServiceState, stack_down, stack_status, stack_up

__all__ = ["Service", "ServiceState", "stack_down", "stack_status", "stack_up"]
