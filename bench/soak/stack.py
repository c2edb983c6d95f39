"""The soak's own stack (Kafka and Redis on ports of their own, restarted on cue) and the
supervisor that runs the workers and the console as subprocesses and kills them."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from modpipe.core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "default.yaml"
BIG = 4 * 1024 * 1024  # the soak's posts topic takes the corpus's 1.5 MB record


class SoakStack:
    """A second Kafka + Redis, on its own ports and in a home of its own."""

    def __init__(self, port: int, redis_port: int) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="modpipe-soak-"))
        shared = load_settings(CONFIG).stack
        jars = shared.home / f"kafka-{shared.kafka_version}"
        (self.home / jars.name).symlink_to(jars)  # reuse the fetched jars, not the data
        self.bootstrap = f"127.0.0.1:{port}"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.env = {
            **os.environ,
            "MODPIPE_STACK__HOME": str(self.home),
            "MODPIPE_KAFKA__BOOTSTRAP": self.bootstrap,
            "MODPIPE_STACK__REDIS_PORT": str(redis_port),
            "MODPIPE_REDIS__URL": self.redis_url,
        }

    def _stack(self, action: str) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "modpipe", "stack", action],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"stack {action} failed: {out.stderr[-2000:]}")

    async def up(self) -> None:
        await asyncio.to_thread(self._stack, "up")

    async def restart_broker(self) -> float:
        """SIGTERM the soak's broker, wait until it is gone, start it again; the seconds down."""
        started = time.monotonic()
        pid = int((self.home / "run" / "kafka.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the workers see the broker gone for a while
        await self.up()
        return time.monotonic() - started

    async def redis_aof(self) -> None:
        """Turn on Redis's append-only file (fsync every second, as deploy/redis.yaml runs
        the state Redis); wait until it is written."""
        client = aioredis.from_url(self.redis_url)
        try:
            await client.config_set("appendonly", "yes")
            while True:
                info = await client.info("persistence")
                busy = info["aof_rewrite_in_progress"] or info.get("aof_rewrite_scheduled")
                if info["aof_enabled"] and not busy:
                    return
                await asyncio.sleep(0.2)
        finally:
            await client.aclose()

    async def restart_redis(self, mode: str) -> float:
        """Stop the soak's Redis and start it again; the seconds it did not answer.

        `save`: SHUTDOWN SAVE, back with all its data (a restart of a Redis with
        persistence); `wipe`: SHUTDOWN NOSAVE, back empty (the stack's own Redis persists
        nothing); `kill`: kill -9 of a Redis on its append-only file (see `redis_aof`),
        back with what the file holds (up to a second of writes may be missing).
        """
        started = time.monotonic()
        pid_file = self.home / "run" / "redis.pid"
        pid = int(pid_file.read_text())
        if mode == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            client = aioredis.from_url(self.redis_url)
            try:
                await client.shutdown(save=mode == "save", nosave=mode != "save")
            except RedisError as exc:  # redis-py raises when the server is still there
                print(f"  redis shutdown: {exc}; SIGTERM", flush=True)
                os.kill(pid, signal.SIGTERM)
            finally:
                with suppress(Exception):
                    await client.aclose()
        while Path(f"/proc/{pid}").exists():
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # the workers see Redis gone for a while
        if mode == "kill":  # `stack up` would start it without its append-only file
            home = self.home / "redis"
            with (home / "redis.log").open("ab") as log:
                proc = subprocess.Popen(
                    [
                        shutil.which("redis-server") or "redis-server",
                        str(home / "redis.conf"),
                        "--appendonly",
                        "yes",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            pid_file.write_text(str(proc.pid))
        else:
            await self.up()
        client = aioredis.from_url(self.redis_url)
        try:
            while True:
                with suppress(RedisError, OSError):
                    if await client.ping():
                        break
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        return time.monotonic() - started

    def down(self, keep: bool = False) -> None:
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            self._stack("down")
        if keep:
            print(f"stack home kept (Kafka's and Redis's data): {self.home}", flush=True)
        else:
            shutil.rmtree(self.home, ignore_errors=True)


@dataclass
class Proc:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    deaths: list[int] = field(default_factory=list)  # exit codes of unplanned exits


class Supervisor:
    """Keeps each worker running: restarts it when it exits; counts the unplanned exits."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._env = env
        self._logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = {
            "worker": Proc("worker", ["worker"]),
            "escalator": Proc("escalator", ["escalator"]),
            "console": Proc("console", ["review", "serve"]),
        }

    def _start(self, p: Proc) -> None:
        log = (self._logs / f"{p.name}.log").open("ab")
        p.process = subprocess.Popen(
            [sys.executable, "-m", "modpipe", *p.args],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        p.starts += 1

    def start(self) -> None:
        for p in self.procs.values():
            self._start(p)

    def kill(self, name: str) -> None:
        """kill -9, then start it again at once (as a process supervisor would)."""
        p = self.procs[name]
        assert p.process is not None
        if p.process.poll() is None:
            p.process.send_signal(signal.SIGKILL)
        code = p.process.wait()
        if code != -signal.SIGKILL:  # it had exited by itself before the kill
            p.deaths.append(code)
            print(f"  {p.name} had exited with {code}", flush=True)
        else:
            p.kills += 1
        self._start(p)

    def poll(self) -> None:
        for p in self.procs.values():
            if p.process is not None and p.process.poll() is not None:
                p.deaths.append(p.process.returncode)
                print(f"  {p.name} exited with {p.process.returncode}; restarting", flush=True)
                self._start(p)

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every worker; their exit codes (None if one had to be killed)."""
        codes: dict[str, int | None] = {}
        for p in self.procs.values():
            if p.process is not None:
                p.process.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            if p.process is None:
                continue
            try:
                codes[p.name] = p.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.process.kill()
                codes[p.name] = None
        return codes

    def tracebacks(self) -> int:
        return sum(
            f.read_text(errors="replace").count("Traceback") for f in self._logs.glob("*.log")
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
