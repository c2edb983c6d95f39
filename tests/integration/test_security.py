"""The pipeline on a secure stack of its own: SASL_SSL (SCRAM-SHA-512) with the
StandardAuthorizer and the pipeline's ACLs, Redis with a password over TLS.

The stack runs on its own ports and home and is stopped at the end; the shared broker
and Redis are not touched. Secrets reach the processes through the environment only,
and the test then looks for them everywhere a secret could leak.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from modpipe.core.probes import consumer_lag
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings, load_settings
from modpipe.stack import Layout, admin_kafka, load_overrides, secure_client_overrides
from tests.conftest import CONFIG
from tests.integration.conftest import Outputs, wait_until
from tests.openai_wire_server import OpenAIWireServer, openai_wire_server

PLAIN, SECURE, REDIS, REDIS_TLS = 29192, 29194, 26479, 26480
MODPIPE = [sys.executable, "-m", "modpipe"]
OPENAI_KEY = "sk-test-secure-run-0f9e8d7c6b5a"


@dataclass(frozen=True)
class SecureStack:
    home: Path
    stack_env: dict[str, str]
    kafka_password: str
    redis_password: str
    keystore_password: str


def _stack(action: str, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODPIPE, "stack", action, *flags], env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    home = tmp_path_factory.mktemp("secure-stack")
    shared = load_settings(CONFIG).stack
    jars = shared.home / f"kafka-{shared.kafka_version}"
    (home / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
    env = {
        **os.environ,
        "MODPIPE_STACK__HOME": str(home),
        "MODPIPE_KAFKA__BOOTSTRAP": f"127.0.0.1:{PLAIN}",
        "MODPIPE_STACK__SECURE_PORT": str(SECURE),
        "MODPIPE_STACK__REDIS_PORT": str(REDIS),
        "MODPIPE_STACK__REDIS_TLS_PORT": str(REDIS_TLS),
        "MODPIPE_STACK__KAFKA_HEAP": "256m",
    }
    try:
        up = _stack("up", env, "--secure")
        assert up.returncode == 0, up.stderr[-3000:]
        secure = home / "secure"
        yield SecureStack(
            home,
            env,
            (secure / "kafka.password").read_text(),
            (secure / "redis.password").read_text(),
            (secure / "keystore.password").read_text(),
        )
    finally:
        down = _stack("down", env)
        assert down.returncode == 0, down.stderr


def client_env(stack: SecureStack, **extra: str) -> dict[str, str]:
    """A modpipe process on the SASL_SSL listener and Redis over TLS, secrets in the env."""
    ca = str(stack.home / "secure" / "ca.pem")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODPIPE_")}
    return {
        **env,
        "MODPIPE_KAFKA__BOOTSTRAP": f"127.0.0.1:{SECURE}",
        "MODPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "MODPIPE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "MODPIPE_KAFKA__SASL_USERNAME": "modpipe",
        "MODPIPE_KAFKA__SASL_PASSWORD": stack.kafka_password,
        "MODPIPE_KAFKA__SSL_CAFILE": ca,
        "MODPIPE_REDIS__URL": f"rediss://127.0.0.1:{REDIS_TLS}/0",
        "MODPIPE_REDIS__PASSWORD": stack.redis_password,
        "MODPIPE_REDIS__SSL_CAFILE": ca,
        "MODPIPE_TRIAGE__STATE_DIR": str(stack.home / "faust"),
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_METRICS__ESCALATOR_PORT": "0",
        **extra,
    }


def base_settings(stack: SecureStack) -> Settings:
    """Settings of this stack as its operator sees them (default topics and groups)."""
    env = {k: v for k, v in stack.stack_env.items() if k.startswith("MODPIPE_")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_settings(CONFIG)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
async def wire() -> AsyncIterator[OpenAIWireServer]:
    async with openai_wire_server() as server:
        yield server


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 60) -> tuple[int, str]:
    proc = subprocess.run(
        [*MODPIPE, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    return proc.returncode, proc.stdout + proc.stderr


def one_line_error(output: str) -> str:
    """The one `modpipe: ...` line a refused start prints; fails on a stack trace."""
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("modpipe: ")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MODPIPE_KAFKA__SASL_PASSWORD": "not-the-password"}, "rejected the credentials"),
        ({"MODPIPE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "expects TLS"),
        ({"MODPIPE_KAFKA__SECURITY_PROTOCOL": "PLAINTEXT"}, "expects TLS"),
        ({"MODPIPE_KAFKA__SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt"}, "not trusted"),
        ({"MODPIPE_TOPICS__POSTS": "not-granted"}, "not authorized"),
    ],
    ids=["wrong-password", "no-tls-sasl", "no-tls-plaintext", "unknown-ca", "no-acl"],
)
def test_refused_start_is_one_clear_line(
    secure_stack: SecureStack, change: dict[str, str], expected: str
) -> None:
    for command in (["worker"], ["escalator"], ["produce", "/dev/null"]):
        code, output = run_cli(command, client_env(secure_stack, **change))
        assert code != 0
        line = one_line_error(output)
        assert expected in line, line
        assert secure_stack.kafka_password not in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MODPIPE_REDIS__PASSWORD": "not-the-password"}, "refused user 'default'"),
        ({"MODPIPE_REDIS__PASSWORD": ""}, "refused user 'default'"),
        ({"MODPIPE_REDIS__SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt"}, "not trusted"),
    ],
    ids=["wrong-password", "no-password", "unknown-ca"],
)
def test_redis_refusal_stops_the_escalator_start(
    secure_stack: SecureStack, change: dict[str, str], expected: str
) -> None:
    env = client_env(
        secure_stack,
        OPENAI_API_KEY=OPENAI_KEY,
        MODPIPE_ESCALATION__PROVIDER="chat",
        MODPIPE_ESCALATION__BASE_URL="http://127.0.0.1:9/v1",
        **change,
    )
    if not change.get("MODPIPE_REDIS__PASSWORD", "x"):
        del env["MODPIPE_REDIS__PASSWORD"]
    code, output = run_cli(["escalator"], env)
    assert code != 0
    line = one_line_error(output)
    assert expected in line, line
    assert secure_stack.redis_password not in output


def test_status_json_reports_listeners_and_credentials(secure_stack: SecureStack) -> None:
    status = _stack("status", secure_stack.stack_env, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    kafka = next(s for s in report["services"] if s["name"] == "kafka")
    assert {(x["address"], x["protocol"]) for x in kafka["listeners"]} == {
        (f"127.0.0.1:{PLAIN}", "PLAINTEXT"),
        (f"127.0.0.1:{SECURE}", "SASL_SSL"),
    }
    redis = next(s for s in report["services"] if s["name"] == "redis")
    assert (f"127.0.0.1:{REDIS_TLS}", "TLS") in {
        (x["address"], x["protocol"]) for x in redis["listeners"]
    }
    credentials = Path(report["credentials_file"])
    assert credentials.stat().st_mode & 0o777 == 0o600
    assert json.loads(credentials.read_text())["kafka_sasl_password"] == secure_stack.kafka_password
    assert Path(report["ca_file"]).exists()
    for secret in (secure_stack.kafka_password, secure_stack.redis_password):
        assert secret not in status.stdout + status.stderr


async def _metrics_page(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            return str(page.read().decode())

    return await asyncio.to_thread(get)


async def _wait_for_zero_lag(settings: Settings, timeout_s: float) -> dict[int, int]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        lag = await consumer_lag(settings.kafka, settings.app_id, settings.topics.posts)
        if sum(lag.values()) == 0 or asyncio.get_running_loop().time() > deadline:
            return lag
        await asyncio.sleep(0.5)


async def test_pipeline_on_sasl_ssl_leaks_no_secret(
    secure_stack: SecureStack, wire: OpenAIWireServer, tmp_path: Path
) -> None:
    operator = base_settings(secure_stack)
    admin = load_overrides(operator, {"kafka": admin_kafka(operator, Layout(1, True)).model_dump()})
    user = load_overrides(operator, secure_client_overrides(operator, Layout(1, True)))
    env = client_env(
        secure_stack,
        OPENAI_API_KEY=OPENAI_KEY,
        MODPIPE_ESCALATION__PROVIDER="chat",
        MODPIPE_ESCALATION__BASE_URL=wire.url,
        MODPIPE_ROUTING__ALLOW_BELOW="0.0",  # every post is escalated: both workers work
        MODPIPE_ROUTING__BLOCK_ABOVE="1.0",
        MODPIPE_METRICS__PORT="29464",
        MODPIPE_METRICS__ESCALATOR_PORT="29465",
    )
    posts = tmp_path / "posts.jsonl"
    n = 200
    posts.write_text(
        "".join(
            json.dumps({"post_id": f"s{i}", "text": f"secure post {i}"}) + "\n" for i in range(n)
        )
    )
    logs: list[str] = []
    # `produce` as the SCRAM user: creates the topics (CREATE ACL) and writes the posts.
    code, output = run_cli(["produce", str(posts)], env)
    logs.append(output)
    assert code == 0, output
    code, output = run_cli(["config", "show"], env)
    assert code == 0, output
    logs.append(output)
    assert "sasl_password: '**********'" in output and "password: '**********'" in output

    out_dir = tmp_path / "logs"
    out_dir.mkdir()
    procs = []
    cmdlines = []
    async with Outputs(admin) as outputs:  # the operator's PLAINTEXT door reads the outputs
        for name in ("worker", "escalator"):
            log_file = (out_dir / f"{name}.log").open("wb")
            procs.append(
                await asyncio.create_subprocess_exec(
                    *MODPIPE, "--log-level", "debug", name, env=env, stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        try:
            await wait_until(lambda: len(outputs.verdicts) >= n, 120, f"{n} verdicts")
            for p in procs:
                cmdlines.append(
                    Path(f"/proc/{p.pid}/cmdline").read_bytes().decode(errors="replace")
                )
            pages = [await _metrics_page(port) for port in (29464, 29465)]
            lag = await _wait_for_zero_lag(user, 30)  # the lag probe, as the SCRAM user
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            codes = [await asyncio.wait_for(p.wait(), 60) for p in procs]
    assert codes == [0, 0]
    assert set(outputs.verdicts) == {f"s{i}" for i in range(n)}
    assert {v[0]["tier"] for v in outputs.verdicts.values()} <= {"frontier", "cache"}
    assert lag and sum(lag.values()) == 0, lag
    assert all("modpipe_" in page for page in pages)
    redis = connect_redis(user.redis)  # verdicts were cached over TLS with the password
    try:
        cached = [k async for k in redis.scan_iter(f"{user.redis.key_prefix}:verdict:*")]
    finally:
        await redis.aclose()
    assert len(cached) >= n // 2

    # Every place a secret could leak: logs of every process (brokers and Redis too),
    # error messages, `config show`, /metrics, command lines.
    logs += [f.read_text(errors="replace") for f in out_dir.iterdir()]
    for path in [
        *secure_stack.home.glob("kafka*/kafka.log"),
        secure_stack.home / "redis" / "redis.log",
    ]:
        logs.append(path.read_text(errors="replace"))
    for pid_file in (secure_stack.home / "run").glob("*.pid"):
        pid = pid_file.read_text().strip()
        cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
    for change in ({"MODPIPE_KAFKA__SASL_PASSWORD": "wrong"}, {"MODPIPE_TOPICS__POSTS": "x"}):
        logs.append(run_cli(["worker"], {**env, **change})[1])
    haystack = "\n".join([*logs, *pages, *cmdlines])
    assert len(haystack) > 10_000  # the logs are really there
    secrets = {
        "kafka password": secure_stack.kafka_password,
        "redis password": secure_stack.redis_password,
        "keystore password": secure_stack.keystore_password,
        "openai key": OPENAI_KEY,
    }
    leaked = [name for name, secret in secrets.items() if secret in haystack]
    assert not leaked, leaked


# `modpipe doctor` on this stack (issue 24): healthy, then each secure item broken in turn.
def test_doctor_on_the_secure_stack(secure_stack: SecureStack) -> None:
    env = client_env(secure_stack)
    add = subprocess.run(
        [*MODPIPE, "review", "add-user", "lee", "--role", "lead"],
        env=env,
        input="correct-horse-battery\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    code, output = run_cli(["doctor"], env)
    print(output)
    assert code == 0, output
    assert "ok    kafka: 127.0.0.1:29194 (SASL_SSL) answers, user modpipe" in output
    for command in ("worker", "escalator", "review serve", "produce"):
        assert f"ok    ACLs for modpipe {command}: granted" in output, output
    assert "ok    console users: 1 lead" in output
    assert secure_stack.kafka_password not in output


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"MODPIPE_KAFKA__SASL_PASSWORD": "not-the-password"},
            ["FAIL  kafka: Kafka at 127.0.0.1:29194 (SASL_SSL) rejected the credentials"],
        ),
        (
            {"MODPIPE_KAFKA__SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt"},
            ["FAIL  kafka: Kafka at 127.0.0.1:29194 (SASL_SSL): TLS certificate not trusted"],
        ),
        (
            {"MODPIPE_TOPICS__DLQ": "not-granted"},
            [
                "FAIL  topic not-granted: TopicAuthorizationFailedError: grant DESCRIBE",
                "FAIL  ACLs for modpipe worker: User:modpipe lacks WRITE on topic not-granted",
            ],
        ),
        (
            {"MODPIPE_ESCALATION__GROUP_ID": "not-granted"},
            ["FAIL  ACLs for modpipe escalator: User:modpipe lacks READ on group not-granted"],
        ),
        (
            {"MODPIPE_REDIS__PASSWORD": "not-the-password"},
            ["FAIL  redis state: Redis at rediss://127.0.0.1:26480/0 refused user 'default'"],
        ),
    ],
    ids=["kafka-password", "kafka-ca", "topic-acl", "group-acl", "redis-password"],
)
def test_doctor_names_each_broken_secure_item(
    secure_stack: SecureStack, change: dict[str, str], expected: list[str]
) -> None:
    code, output = run_cli(["doctor"], client_env(secure_stack, **change))
    print(output)  # shown with -s: the lines operators will see
    assert code == 1, output
    assert "Traceback" not in output, output[-3000:]
    for line in expected:
        assert line in output, output
    assert secure_stack.kafka_password not in output
    assert secure_stack.redis_password not in output
