"""Debian's Prometheus as a test fixture: a real server on a free port, its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
INSTALL_HINT = "install it with `make prometheus` (Debian's prometheus package)"


def tool(name: str) -> str:
    """The path of `promtool` or `prometheus`; fails the test with how to install it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_config(targets: dict[str, str], interval_s: float) -> dict[str, Any]:
    """docker/prometheus.yml with each job's targets replaced (jobs not given dropped)."""
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = f"{round(interval_s * 1000)}ms"
    config["global"]["evaluation_interval"] = f"{round(interval_s * 1000)}ms"
    config["rule_files"] = [str(DOCKER / f) for f in config["rule_files"]]
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            jobs.append(job)
    assert set(targets) == {j["job_name"] for j in jobs}, "a job is missing from prometheus.yml"
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    """A running Prometheus: instant queries and the rules it loaded."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert reply["status"] == "success", f"{expr}: {reply}"
        return reply["data"]["result"]  # type: ignore[no-any-return]

    def rules(self) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/rules", timeout=5).json()
        return [r for g in reply["data"]["groups"] for r in g["rules"]]

    def scrapes_of(self, job: str) -> float:
        """How many scrapes of `job` Prometheus has stored (0 before the first)."""
        result = self.query(f'count_over_time(up{{job="{job}"}}[10m])')
        return float(result[0]["value"][1]) if result else 0.0


@contextmanager
def prometheus(
    config: dict[str, Any], workdir: Path, timeout_s: float = 20.0
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port with `config`, stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise AssertionError(
                    "prometheus did not start: " + (workdir / "prometheus.log").read_text()[-2000:]
                )
            time.sleep(0.2)
        yield Prometheus(url)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
