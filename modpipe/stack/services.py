"""Start, stop and inspect the local Kafka and Redis processes.

`stack_up`, `stack_status` and `status_report` are coroutines: the roof runs the event
loop (`modpipe stack`, the demo), and the blocking steps (Maven, starting processes,
waiting for Redis) run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import asdict
from typing import Any, Literal

from modpipe.core.errors import StackError
from modpipe.core.kafka import kafka_ready
from modpipe.core.progress import Progress, no_progress
from modpipe.core.settings import KafkaSettings, RedisSettings, Settings, deep_merge
from modpipe.stack.acls import grant, pipeline_acls
from modpipe.stack.layout import (
    Layout,
    Service,
    ServiceState,
    admin_kafka,
    layout_file,
    recorded_layout,
    recorded_pid,
    secure_client_overrides,
    services,
)
from modpipe.stack.processes import (
    kafka_jars,
    port_open,
    redis_password,
    redis_ready,
    start_kafka,
    start_redis,
)
from modpipe.stack.tls import SecureFiles, ensure_secure_files

log = logging.getLogger(__name__)


async def _reachable(service: Service, settings: Settings, layout: Layout) -> bool:
    if not port_open(service.address):
        return False
    try:
        if service.marker == "kafka.Kafka":
            await kafka_ready(KafkaSettings(bootstrap=service.address), timeout_s=3)
        else:
            password = redis_password(settings, layout)
            await asyncio.to_thread(redis_ready, settings.stack.redis_port, 0.5, password)
    except StackError:
        return False
    return True


async def stack_up(
    settings: Settings,
    timeout_s: float = 90.0,
    brokers: int | None = None,
    secure: bool | None = None,
    progress: Progress = no_progress,
) -> Layout:
    """Start whatever is not running yet and wait until all answer; the layout started.

    `brokers` and `secure` default to what this home was started with before (one plain
    broker for a new home); a home cannot change layout while its data exists. Each step
    is reported to `progress` (the jars' fetch counts jars as they arrive).
    """
    recorded = recorded_layout(settings)
    layout = Layout(
        brokers=brokers if brokers is not None else recorded.brokers,
        secure=secure if secure is not None else recorded.secure,
    )
    if layout.brokers not in (1, 3):
        raise StackError("the local stack runs 1 or 3 brokers")
    home = settings.stack.home
    home.mkdir(parents=True, exist_ok=True)
    if layout != recorded and (home / "kafka" / "data" / "meta.properties").exists():
        raise StackError(
            f"the stack in {home} was made with {recorded}; `stack down` and remove "
            f"{home}/kafka* to change it, or use another stack.home"
        )
    files = ensure_secure_files(home, settings.stack.sasl_username) if layout.secure else None
    layout_file(settings).parent.mkdir(parents=True, exist_ok=True)
    layout_file(settings).write_text(json.dumps(asdict(layout)))
    *kafkas, redis_service = services(settings, layout)
    steps = len(kafkas) + 2
    progress("starting the local stack", 0, steps)
    if recorded_pid(redis_service) is None and not await _reachable(
        redis_service, settings, layout
    ):
        if port_open(redis_service.address):  # refused our password, or is no Redis
            raise StackError(
                f"{redis_service.address} is taken by a server this stack did not start "
                "(another stack's Redis, or one left over, with another password): stop "
                "it, or give this stack another port (stack.redis_port)"
            )
        await asyncio.to_thread(start_redis, settings, redis_service, files)
    progress("starting the local stack", 1, steps)
    for node, kafka in enumerate(kafkas, start=1):
        if recorded_pid(kafka) is None and not port_open(kafka.address):
            await asyncio.to_thread(kafka_jars, settings, progress)
            progress("starting the local stack", node, steps)
            await asyncio.to_thread(start_kafka, settings, layout, node, kafka, files)
        progress("starting the local stack", node + 1, steps)
    password = redis_password(settings, layout)
    await asyncio.to_thread(redis_ready, settings.stack.redis_port, timeout_s, password)
    await _kafka_up(settings, layout, admin_kafka(settings, layout), timeout_s)
    progress("starting the local stack", steps, steps)
    return layout


async def _kafka_up(
    settings: Settings, layout: Layout, admin: KafkaSettings, timeout_s: float
) -> None:
    for address in admin.bootstrap.split(","):
        await kafka_ready(KafkaSettings(bootstrap=address), timeout_s)
    if layout.secure:
        await grant(admin, settings.stack.sasl_username, pipeline_acls(settings))
        secure = load_overrides(settings, secure_client_overrides(settings, layout))
        await kafka_ready(secure.kafka, timeout_s)


def load_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """`settings` with the `kafka` and `redis` sections of `overrides` laid over it."""
    kafka = KafkaSettings.model_validate(
        deep_merge(settings.kafka.model_dump(), overrides.get("kafka", {}))
    )
    redis_settings = RedisSettings.model_validate(
        deep_merge(settings.redis.model_dump(), overrides.get("redis", {}))
    )
    return settings.model_copy(update={"kafka": kafka, "redis": redis_settings})


def _stop(service: Service, timeout_s: float) -> None:
    pid = recorded_pid(service)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while recorded_pid(service) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if recorded_pid(service) is not None:
            log.warning("%s pid=%d ignored SIGTERM; killing it", service.name, pid)
            os.kill(pid, signal.SIGKILL)
            # Gone before we return: a restart must not find its port or data dir held.
            deadline = time.monotonic() + 10
            while recorded_pid(service) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
    service.pid_file.unlink(missing_ok=True)


def stack_down(settings: Settings, timeout_s: float = 30.0) -> None:
    """Stop the processes `up` started (by their recorded pids), and nothing else."""
    for service in services(settings, recorded_layout(settings)):
        _stop(service, timeout_s)


async def stack_status(settings: Settings) -> list[ServiceState]:
    """Each service's state: up (answers), unreachable (our process, not answering), down."""
    layout = recorded_layout(settings)
    states = []
    for service in services(settings, layout):
        pid = recorded_pid(service)
        if await _reachable(service, settings, layout):
            state: Literal["up", "down", "unreachable"] = "up"
        else:
            state = "unreachable" if pid is not None else "down"
        states.append(ServiceState(service, state, pid))
    return states


async def status_report(settings: Settings) -> dict[str, Any]:
    """`stack status --json`: services, each listener and its protocol, CA and credentials."""
    layout = recorded_layout(settings)
    files = SecureFiles(settings.stack.home / "secure")
    return {
        "home": str(settings.stack.home),
        "brokers": layout.brokers,
        "secure": layout.secure,
        "services": [
            {
                "name": s.service.name,
                "state": s.state,
                "pid": s.pid,
                "listeners": [
                    {"address": address, "protocol": protocol}
                    for address, protocol in s.service.listeners
                ],
            }
            for s in await stack_status(settings)
        ],
        "ca_file": str(files.ca_cert) if layout.secure else None,
        "credentials_file": str(files.credentials) if layout.secure else None,
    }
