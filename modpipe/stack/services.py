"""Start, stop and inspect the local Kafka and Redis processes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import redis

from modpipe.core.errors import StackError
from modpipe.core.kafka import kafka_ready
from modpipe.core.settings import KafkaSettings, RedisSettings, Settings, deep_merge
from modpipe.stack.acls import grant, pipeline_acls
from modpipe.stack.tls import SecureFiles, ensure_secure_files, scram_argument

log = logging.getLogger(__name__)

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


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


def _layout_file(settings: Settings) -> Path:
    return settings.stack.home / "run" / "layout.json"


def recorded_layout(settings: Settings) -> Layout:
    """The layout `up` recorded in this home; one plain broker when none was."""
    try:
        return Layout(**json.loads(_layout_file(settings).read_text()))
    except (OSError, ValueError, TypeError):
        return Layout()


def _broker_ports(settings: Settings, node: int) -> tuple[str, int, int, int]:
    """host, PLAINTEXT port, controller port, SASL_SSL port of broker `node` (1-based)."""
    host, _, port = settings.kafka.bootstrap.split(",")[0].rpartition(":")
    step = 10 * (node - 1)
    return host, int(port) + step, int(port) + step + 1, settings.stack.secure_port + step


def _services(settings: Settings, layout: Layout | None = None) -> list[Service]:
    layout = layout or recorded_layout(settings)
    run = settings.stack.home / "run"
    services = []
    for node in range(1, layout.brokers + 1):
        host, port, _, secure = _broker_ports(settings, node)
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
    addresses = ",".join(
        s.address for s in _services(settings, layout) if s.marker == "kafka.Kafka"
    )
    return KafkaSettings(
        bootstrap=addresses, reconnect_backoff_s=settings.kafka.reconnect_backoff_s
    )


def secure_client_overrides(settings: Settings, layout: Layout | None = None) -> dict[str, Any]:
    """Settings overrides that point modpipe at the secure stack as its SCRAM user."""
    layout = layout or recorded_layout(settings)
    files = SecureFiles(settings.stack.home / "secure")
    brokers = [_broker_ports(settings, n) for n in range(1, layout.brokers + 1)]
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


def _recorded_pid(service: Service) -> int | None:
    """The recorded pid if that process is alive and still the service (pids get reused)."""
    try:
        pid = int(service.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if service.marker.encode() in cmdline else None


def broker_pids(settings: Settings) -> dict[int, int | None]:
    """Node id -> pid of each broker this home's `up` started (None: not running)."""
    brokers = [s for s in _services(settings) if s.marker == "kafka.Kafka"]
    return {node: _recorded_pid(s) for node, s in enumerate(brokers, start=1)}


def _kafka_jars(settings: Settings) -> Path:
    """The broker's jars, fetched with Maven on first use."""
    libs = settings.stack.home / f"kafka-{settings.stack.kafka_version}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch the Kafka jars; apt-get install maven"
        )
    pom = resources.files("modpipe.stack") / "kafka-pom.xml"
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=settings.stack.home))
    log.info("fetching Kafka %s jars with Maven into %s", settings.stack.kafka_version, libs)
    with resources.as_file(pom) as pom_path:
        proc = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(pom_path),
                f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-Dkafka.version={settings.stack.kafka_version}",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(
            f"Maven could not fetch the Kafka jars:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        )
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(libs)  # atomic: a half-fetched directory never looks complete
    return libs


def _kafka_properties(
    settings: Settings, layout: Layout, node: int, data_dir: Path, files: SecureFiles | None
) -> str:
    host, port, controller, secure = _broker_ports(settings, node)
    voters = ",".join(
        f"{n}@{h}:{c}"
        for n in range(1, layout.brokers + 1)
        for h, _, c, _ in [_broker_ports(settings, n)]
    )
    rf = min(3, layout.brokers)
    listeners = [f"PLAINTEXT://{host}:{port}", f"CONTROLLER://{host}:{controller}"]
    advertised = [f"PLAINTEXT://{host}:{port}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    if files is not None:
        listeners.append(f"SASL_SSL://{host}:{secure}")
        advertised.append(f"SASL_SSL://{host}:{secure}")
        protocols.append("SASL_SSL:SASL_SSL")
    lines = [
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        "controller.listener.names=CONTROLLER",
        f"listener.security.protocol.map={','.join(protocols)}",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data_dir}",
        f"num.partitions={settings.kafka.partitions}",
        f"default.replication.factor={rf}",
        f"min.insync.replicas={min(2, rf)}",
        f"offsets.topic.replication.factor={rf}",
        "offsets.topic.num.partitions=1",
        f"transaction.state.log.replication.factor={rf}",
        f"transaction.state.log.min.isr={min(2, rf)}",
        "group.initial.rebalance.delay.ms=0",
        f"auto.create.topics.enable={'false' if files else 'true'}",
    ]
    if files is not None:
        lines += [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.location={files.keystore}",
            f"ssl.keystore.password={files.keystore_password()}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller and PLAINTEXT listeners are bound to loopback and belong to the
            # operator of this machine; applications get the SASL_SSL listener and ACLs.
            "super.users=User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]
    return "\n".join([*lines, ""])


def _spawn(args: list[str], log_path: Path, pid_file: Path) -> int:
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `modpipe stack up` and ignores its Ctrl-C
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def _cluster_id() -> str:
    # Kafka's Uuid.toString: 16 random bytes, URL-safe base64 without padding, no leading "-".
    while True:
        uuid = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not uuid.startswith("-"):
            return uuid


def _broker_home(settings: Settings, node: int) -> Path:
    return settings.stack.home / ("kafka" if node == 1 else f"kafka-{node}")


def _start_kafka(
    settings: Settings, layout: Layout, node: int, service: Service, files: SecureFiles | None
) -> None:
    home = _broker_home(settings, node)
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    classpath = f"{_kafka_jars(settings)}/*"
    props = home / "server.properties"
    fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keystore password
    with os.fdopen(fd, "w") as out:
        out.write(_kafka_properties(settings, layout, node, data, files))
    java = ["java", f"-Xmx{settings.stack.kafka_heap}", f"-Xms{settings.stack.kafka_heap}"]
    java += ["-cp", classpath]
    if not (data / "meta.properties").exists():
        id_file = settings.stack.home / "run" / "cluster.id"
        if not id_file.exists():
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(_cluster_id())
        fmt = [*java, "kafka.tools.StorageTool", "format", "-t", id_file.read_text()]
        fmt += ["-c", str(props)]
        if files is not None:
            password = files.kafka_password.read_text()
            fmt += ["--add-scram", scram_argument(settings.stack.sasl_username, password)]
        proc = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise StackError(
                f"formatting Kafka storage failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
    with resources.as_file(resources.files("modpipe.stack") / "log4j2.properties") as log4j:
        args = [*java, f"-Dlog4j2.configurationFile={log4j}", "kafka.Kafka", str(props)]
        pid = _spawn(args, home / "kafka.log", service.pid_file)
    log.info("started %s pid=%d log=%s", service.name, pid, home / "kafka.log")


def _start_redis(settings: Settings, service: Service, files: SecureFiles | None) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server not found; apt-get install redis-server")
    home = settings.stack.home / "redis"
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "bind 127.0.0.1",
        f"port {settings.stack.redis_port}",
        'save ""',
        "appendonly no",
        f"dir {home}",
    ]
    if files is not None:  # the password lives in this 0600 file, never on a command line
        lines += [
            f"requirepass {files.redis_password.read_text()}",
            f"tls-port {settings.stack.redis_tls_port}",
            f"tls-cert-file {files.server_cert}",
            f"tls-key-file {files.server_key}",
            f"tls-ca-cert-file {files.ca_cert}",
            "tls-auth-clients no",
        ]
    conf = home / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join([*lines, ""]))
    pid = _spawn([binary, str(conf)], home / "redis.log", service.pid_file)
    log.info("started redis pid=%d", pid)


def _redis_password(settings: Settings, layout: Layout) -> str | None:
    if not layout.secure:
        return None
    return SecureFiles(settings.stack.home / "secure").redis_password.read_text()


def _redis_ready(port: int, timeout_s: float, password: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=1)
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise StackError(f"Redis on 127.0.0.1:{port} refused the password: {exc}") from None
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"Redis on 127.0.0.1:{port} did not answer PING: {exc}") from exc
            time.sleep(0.1)


def _port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _reachable(service: Service, settings: Settings, layout: Layout) -> bool:
    if not _port_open(service.address):
        return False
    try:
        if service.marker == "kafka.Kafka":
            asyncio.run(kafka_ready(KafkaSettings(bootstrap=service.address), timeout_s=3))
        else:
            _redis_ready(settings.stack.redis_port, 0.5, _redis_password(settings, layout))
    except StackError:
        return False
    return True


def stack_up(
    settings: Settings,
    timeout_s: float = 90.0,
    brokers: int | None = None,
    secure: bool | None = None,
) -> Layout:
    """Start whatever is not running yet and wait until all answer; the layout started.

    `brokers` and `secure` default to what this home was started with before (one plain
    broker for a new home); a home cannot change layout while its data exists.
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
    _layout_file(settings).parent.mkdir(parents=True, exist_ok=True)
    _layout_file(settings).write_text(json.dumps(asdict(layout)))
    services = _services(settings, layout)
    *kafkas, redis_service = services
    if _recorded_pid(redis_service) is None and not _reachable(redis_service, settings, layout):
        _start_redis(settings, redis_service, files)
    for node, kafka in enumerate(kafkas, start=1):
        if _recorded_pid(kafka) is None and not _port_open(kafka.address):
            _start_kafka(settings, layout, node, kafka, files)
    _redis_ready(settings.stack.redis_port, timeout_s, _redis_password(settings, layout))
    admin = admin_kafka(settings, layout)
    asyncio.run(_kafka_up(settings, layout, admin, timeout_s))
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
    pid = _recorded_pid(service)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _recorded_pid(service) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _recorded_pid(service) is not None:
            log.warning("%s pid=%d ignored SIGTERM; killing it", service.name, pid)
            os.kill(pid, signal.SIGKILL)
    service.pid_file.unlink(missing_ok=True)


def stack_down(settings: Settings, timeout_s: float = 30.0) -> None:
    """Stop the processes `up` started (by their recorded pids), and nothing else."""
    for service in _services(settings, recorded_layout(settings)):
        _stop(service, timeout_s)


def stack_status(settings: Settings) -> list[ServiceState]:
    """Each service's state: up (answers), unreachable (our process, not answering), down."""
    layout = recorded_layout(settings)
    states = []
    for service in _services(settings, layout):
        pid = _recorded_pid(service)
        if _reachable(service, settings, layout):
            state: Literal["up", "down", "unreachable"] = "up"
        else:
            state = "unreachable" if pid is not None else "down"
        states.append(ServiceState(service, state, pid))
    return states


def status_report(settings: Settings) -> dict[str, Any]:
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
            for s in stack_status(settings)
        ],
        "ca_file": str(files.ca_cert) if layout.secure else None,
        "credentials_file": str(files.credentials) if layout.secure else None,
    }
