"""Start, stop and inspect the local Kafka and Redis processes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import redis

from modpipe.core.errors import StackError
from modpipe.core.kafka import kafka_ready
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


@dataclass(frozen=True, slots=True)
class Service:
    """One local service: its name, address, pid file and the word its command line holds."""

    name: Literal["kafka", "redis"]
    address: str
    pid_file: Path
    marker: str


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What `status` reports for a service."""

    service: Service
    state: Literal["up", "down", "unreachable"]
    pid: int | None


def _services(settings: Settings) -> tuple[Service, Service]:
    run = settings.stack.home / "run"
    return (
        Service("kafka", settings.kafka.bootstrap, run / "kafka.pid", "kafka.Kafka"),
        Service(
            "redis", f"127.0.0.1:{settings.stack.redis_port}", run / "redis.pid", "redis-server"
        ),
    )


def _recorded_pid(service: Service) -> int | None:
    """The recorded pid if that process is alive and still the service (pids get reused)."""
    try:
        pid = int(service.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if service.marker.encode() in cmdline else None


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


def _kafka_properties(settings: Settings, data_dir: Path) -> str:
    host, _, port = settings.kafka.bootstrap.rpartition(":")
    controller = int(port) + 1
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{controller}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            f"num.partitions={settings.kafka.partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ]
    )


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


def _start_kafka(settings: Settings, service: Service) -> None:
    home = settings.stack.home / "kafka"
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    classpath = f"{_kafka_jars(settings)}/*"
    props = home / "server.properties"
    props.write_text(_kafka_properties(settings, data))
    java = ["java", f"-Xmx{settings.stack.kafka_heap}", "-Xms256m", "-cp", classpath]
    if not (data / "meta.properties").exists():
        cluster_id = subprocess.run(
            [*java, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        subprocess.run(
            [*java, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
            capture_output=True,
            text=True,
            check=True,
        )
    with resources.as_file(resources.files("modpipe.stack") / "log4j2.properties") as log4j:
        args = [*java, f"-Dlog4j2.configurationFile={log4j}", "kafka.Kafka", str(props)]
        pid = _spawn(args, home / "kafka.log", service.pid_file)
    log.info("started kafka pid=%d log=%s", pid, home / "kafka.log")


def _start_redis(settings: Settings, service: Service) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server not found; apt-get install redis-server")
    home = settings.stack.home / "redis"
    home.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(settings.stack.redis_port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(home),
    ]
    pid = _spawn(args, home / "redis.log", service.pid_file)
    log.info("started redis pid=%d", pid)


def _redis_ready(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    while True:
        try:
            client.ping()
            return
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


def _reachable(service: Service, settings: Settings) -> bool:
    if not _port_open(service.address):
        return False
    try:
        if service.name == "kafka":
            asyncio.run(kafka_ready(service.address, timeout_s=3))
        else:
            _redis_ready(settings.stack.redis_port, timeout_s=0.5)
    except StackError:
        return False
    return True


def stack_up(settings: Settings, timeout_s: float = 90.0) -> None:
    """Start whatever is not running yet and wait until both answer."""
    kafka, redis_service = _services(settings)
    settings.stack.home.mkdir(parents=True, exist_ok=True)
    if _recorded_pid(redis_service) is None and not _reachable(redis_service, settings):
        _start_redis(settings, redis_service)
    if _recorded_pid(kafka) is None and not _reachable(kafka, settings):
        _start_kafka(settings, kafka)
    _redis_ready(settings.stack.redis_port, timeout_s)
    asyncio.run(kafka_ready(kafka.address, timeout_s))


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
    for service in _services(settings):
        _stop(service, timeout_s)


def stack_status(settings: Settings) -> list[ServiceState]:
    """Each service's state: up (answers), unreachable (our process, not answering), down."""
    states = []
    for service in _services(settings):
        pid = _recorded_pid(service)
        if _reachable(service, settings):
            state: Literal["up", "down", "unreachable"] = "up"
        else:
            state = "unreachable" if pid is not None else "down"
        states.append(ServiceState(service, state, pid))
    return states
