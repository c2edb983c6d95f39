"""What a local stack is made of: its layout (brokers, secure), its services, their
ports and pid files, and the client settings that reach them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modpipe.core.settings import KafkaSettings, Settings
from modpipe.stack.tls import SecureFiles


@dataclass(frozen=True, slots=True)
class Layout:
    """What `up` started in a stack home: how many brokers, and whether it is secure."""

    brokers: int = 1
    secure: bool = False


@dataclass(frozen=True, slots=True)
class Service:
    """One local process: its name, address, pid file, the word its command line holds,
    and the listeners it offers clients (address, security protocol)."""

    name: str
    address: str
    pid_file: Path
    marker: str
    listeners: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What `status` reports for a service."""

    service: Service
    state: Literal["up", "down", "unreachable"]
    pid: int | None


def layout_file(settings: Settings) -> Path:
    """Where `up` records the layout it started."""
    return settings.stack.home / "run" / "layout.json"


def recorded_layout(settings: Settings) -> Layout:
    """The layout `up` recorded in this home; one plain broker when none was."""
    try:
        return Layout(**json.loads(layout_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return Layout()


def broker_ports(settings: Settings, node: int) -> tuple[str, int, int, int]:
    """host, PLAINTEXT port, controller port, SASL_SSL port of broker `node` (1-based)."""
    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    step = 10 * (node - 1)
    return host, int(port) + step, int(port) + step + 1, settings.stack.secure_port + step


def services(settings: Settings, layout: Layout | None = None) -> list[Service]:
    """The brokers and Redis of this home's layout (`layout`, else the recorded one)."""
    layout = layout or recorded_layout(settings)
    run = settings.stack.home / "run"
    services = []
    for node in range(1, layout.brokers + 1):
        host, port, _, secure = broker_ports(settings, node)
        listeners = [(f"{host}:{port}", "PLAINTEXT")]
        if layout.secure:
            listeners.append((f"{host}:{secure}", "SASL_SSL"))
        name = "kafka" if node == 1 else f"kafka-{node}"
        services.append(
            Service(name, f"{host}:{port}", run / f"{name}.pid", "kafka.Kafka", tuple(listeners))
        )
    redis_listeners = [(f"127.0.0.1:{settings.stack.redis_port}", "TCP")]
    if layout.secure:
        redis_listeners.append((f"127.0.0.1:{settings.stack.redis_tls_port}", "TLS"))
    services.append(
        Service(
            "redis",
            f"127.0.0.1:{settings.stack.redis_port}",
            run / "redis.pid",
            "redis-server",
            tuple(redis_listeners),
        )
    )
    return services


def admin_kafka(settings: Settings, layout: Layout | None = None) -> KafkaSettings:
    """Client settings for the stack's own PLAINTEXT listeners (the local operator's door)."""
    layout = layout or recorded_layout(settings)
    addresses = ",".join(s.address for s in services(settings, layout) if s.marker == "kafka.Kafka")
    return KafkaSettings(
        bootstrap=addresses, reconnect_backoff_s=settings.kafka.reconnect_backoff_s
    )


def secure_client_overrides(settings: Settings, layout: Layout | None = None) -> dict[str, Any]:
    """Settings overrides that point modpipe at the secure stack as its SCRAM user."""
    layout = layout or recorded_layout(settings)
    files = SecureFiles(settings.stack.home / "secure")
    brokers = [broker_ports(settings, n) for n in range(1, layout.brokers + 1)]
    return {
        "kafka": {
            "bootstrap": ",".join(f"{h}:{sp}" for h, _, _, sp in brokers),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": settings.stack.sasl_username,
            "sasl_password_file": str(files.kafka_password),
            "ssl_cafile": str(files.ca_cert),
        },
        "redis": {
            "url": f"rediss://127.0.0.1:{settings.stack.redis_tls_port}/0",
            "password_file": str(files.redis_password),
            "ssl_cafile": str(files.ca_cert),
        },
    }


def recorded_pid(service: Service) -> int | None:
    """The recorded pid if that process is alive and still the service (pids get reused)."""
    try:
        pid = int(service.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if service.marker.encode() in cmdline else None


def broker_pids(settings: Settings) -> dict[int, int | None]:
    """Node id -> pid of each broker this home's `up` started (None: not running)."""
    brokers = [s for s in services(settings) if s.marker == "kafka.Kafka"]
    return {node: recorded_pid(s) for node, s in enumerate(brokers, start=1)}
