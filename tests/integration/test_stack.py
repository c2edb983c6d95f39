"""`modpipe stack` on ports of its own: up is idempotent, status tells, down stops its pids."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from modpipe.core.settings import load_settings
from modpipe.stack.processes import port_open
from tests.conftest import CONFIG


def stack(action: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modpipe", "stack", action],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_second_stack_up_status_down(tmp_path: Path) -> None:
    shared = load_settings(CONFIG).stack
    jars = shared.home / f"kafka-{shared.kafka_version}"
    (tmp_path / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
    env = {
        **os.environ,
        "MODPIPE_STACK__HOME": str(tmp_path),
        "MODPIPE_KAFKA__BOOTSTRAP": "127.0.0.1:19092",
        "MODPIPE_STACK__REDIS_PORT": "16379",
    }
    try:
        up = stack("up", env)
        assert up.returncode == 0, up.stderr
        pids = (
            (tmp_path / "run" / "kafka.pid").read_text(),
            (tmp_path / "run" / "redis.pid").read_text(),
        )
        again = stack("up", env)
        assert again.returncode == 0
        assert (
            (tmp_path / "run" / "kafka.pid").read_text(),
            (tmp_path / "run" / "redis.pid").read_text(),
        ) == pids, "up started twice"
        status = stack("status", env)
        assert status.returncode == 0
        assert "127.0.0.1:19092" in status.stdout and "127.0.0.1:16379" in status.stdout
        assert status.stdout.count(" up ") == 2
    finally:
        down = stack("down", env)
    assert down.returncode == 0
    after = stack("status", env)
    assert after.returncode == 1 and after.stdout.count(" down ") == 2
    # The shared stack the other tests use is untouched.
    assert stack("status", {**os.environ}).returncode == 0


def test_a_port_taken_by_another_redis_is_named(tmp_path: Path) -> None:
    # A Redis left over on the stack's port, with a password this stack does not know: `up`
    # says the port is taken, not that Redis refused the password.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "MODPIPE_STACK__HOME": str(tmp_path),
        "MODPIPE_KAFKA__BOOTSTRAP": "127.0.0.1:19492",  # never started: up stops first
        "MODPIPE_STACK__REDIS_PORT": str(port),
    }
    stranger = subprocess.Popen(
        ["redis-server", "--port", str(port), "--requirepass", "not-ours", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not port_open(f"127.0.0.1:{port}") and time.monotonic() < deadline:
            time.sleep(0.05)
        up = stack("up", env)
        assert up.returncode != 0
        assert f"127.0.0.1:{port} is taken by a server this stack did not start" in up.stderr
        assert "refused the password" not in up.stderr
    finally:
        stack("down", env)
        stranger.terminate()
        stranger.wait(10)
