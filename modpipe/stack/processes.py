"""Starting the local stack's processes: Kafka's jars (Maven, once), its properties and
storage, the broker and Redis processes, and waiting for Redis."""

from __future__ import annotations

import base64
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import redis

from modpipe.core.errors import StackError
from modpipe.core.progress import Progress, no_progress
from modpipe.core.settings import Settings
from modpipe.stack.layout import Layout, Service, broker_ports
from modpipe.stack.tls import SecureFiles, scram_argument

log = logging.getLogger(__name__)

MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def kafka_jars(settings: Settings, progress: Progress = no_progress) -> Path:
    """The broker's jars, fetched with Maven on first use (counted to `progress`)."""
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
    stage = f"fetching Kafka {settings.stack.kafka_version} jars (once)"
    with resources.as_file(pom) as pom_path, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
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
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while proc.poll() is None:  # Maven copies the jars only after resolving them all
            progress(stage, len(list(staging.glob("*.jar"))), None)
            time.sleep(0.5)
        progress(stage, len(list(staging.glob("*.jar"))), None)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(f"Maven could not fetch the Kafka jars:\n{output[-5000:]}")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(libs)  # atomic: a half-fetched directory never looks complete
    return libs


def kafka_properties(
    settings: Settings, layout: Layout, node: int, data_dir: Path, files: SecureFiles | None
) -> str:
    host, port, controller, secure = broker_ports(settings, node)
    voters = ",".join(
        f"{n}@{h}:{c}"
        for n in range(1, layout.brokers + 1)
        for h, _, c, _ in [broker_ports(settings, n)]
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


def spawn(args: list[str], log_path: Path, pid_file: Path) -> int:
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


def cluster_id() -> str:
    # Kafka's Uuid.toString: 16 random bytes, URL-safe base64 without padding, no leading "-".
    while True:
        uuid = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not uuid.startswith("-"):
            return uuid


def broker_home(settings: Settings, node: int) -> Path:
    return settings.stack.home / ("kafka" if node == 1 else f"kafka-{node}")


def start_kafka(
    settings: Settings, layout: Layout, node: int, service: Service, files: SecureFiles | None
) -> None:
    home = broker_home(settings, node)
    data = home / "data"
    home.mkdir(parents=True, exist_ok=True)
    classpath = f"{kafka_jars(settings)}/*"
    props = home / "server.properties"
    fd = os.open(props, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # keystore password
    with os.fdopen(fd, "w") as out:
        out.write(kafka_properties(settings, layout, node, data, files))
    java = ["java", f"-Xmx{settings.stack.kafka_heap}", f"-Xms{settings.stack.kafka_heap}"]
    java += ["-cp", classpath]
    if not (data / "meta.properties").exists():
        id_file = settings.stack.home / "run" / "cluster.id"
        if not id_file.exists():
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(cluster_id())
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
        pid = spawn(args, home / "kafka.log", service.pid_file)
    log.info("started %s pid=%d log=%s", service.name, pid, home / "kafka.log")


def start_redis(settings: Settings, service: Service, files: SecureFiles | None) -> None:
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
    pid = spawn([binary, str(conf)], home / "redis.log", service.pid_file)
    log.info("started redis pid=%d", pid)


def redis_password(settings: Settings, layout: Layout) -> str | None:
    if not layout.secure:
        return None
    return SecureFiles(settings.stack.home / "secure").redis_password.read_text()


def redis_ready(port: int, timeout_s: float, password: str | None = None) -> None:
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


def port_open(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False
