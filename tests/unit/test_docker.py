"""No Docker engine runs here: check the compose stack and dashboard against the code."""

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from modpipe.core.metrics import Metrics
from modpipe.core.settings import load_settings

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics(registry)
    names = set()
    for family in registry.collect():
        names.add(family.name)
        kind = family.type
        if kind == "counter":
            names.add(family.name + "_total")
        elif kind == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_compose_has_every_service_with_loopback_ports() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {
        "kafka",
        "redis-state",
        "redis-cache",
        "vllm",
        "worker",
        "escalator",
        "prometheus",
        "grafana",
    }
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DOCKER / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"
    assert "--enable-prefix-caching" in services["vllm"]["command"]
    assert services["worker"]["environment"]["MODPIPE_CLASSIFIER__BACKEND"] == "vllm-guard"


def test_prometheus_scrapes_the_ports_the_workers_serve() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {
        t for job in prom["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    worker = int(compose["worker"]["environment"]["MODPIPE_METRICS__PORT"])
    escalator = int(compose["escalator"]["environment"]["MODPIPE_METRICS__ESCALATOR_PORT"])
    review = int(compose["review"]["environment"]["MODPIPE_METRICS__REVIEW_PORT"])
    assert {
        f"worker:{worker}",
        f"escalator:{escalator}",
        f"review:{review}",
        "vllm:8000",
    } <= targets
    assert f"127.0.0.1:{escalator}:{escalator}" in compose["escalator"]["ports"]
    assert prom["rule_files"] == ["alerts.yml"]
    mounts = compose["prometheus"]["volumes"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def redis_policy(service: dict) -> str:
    command = service["command"]
    return command[command.index("--maxmemory-policy") + 1]


def test_compose_environment_is_valid_settings_with_two_redis_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    for name in ("worker", "escalator", "review"):
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, str(value))
        settings = load_settings()  # an unknown MODPIPE_* key or a bad value fails here
        assert settings.metrics.host == "0.0.0.0"
    cache_host = settings.redis.cache_url.split("//")[1].split(":")[0]
    state_host = settings.redis.url.split("//")[1].split(":")[0]
    # Cached verdicts may be evicted; the budget counter and the locks never.
    assert redis_policy(services[cache_host]) == "allkeys-lru"
    assert redis_policy(services[state_host]) == "noeviction"
    assert set(services["escalator"]["depends_on"]) >= {cache_host, state_host}
    for name in ("worker", "escalator"):
        port = services[name]["ports"][0].split(":")[1]
        assert f"127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"])
        assert services[name]["stop_grace_period"] == "45s"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "modpipe.json").read_text())
    exported = exported_names()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(re.findall(r"\bmodpipe_[a-z_]+", expr))
        assert used, expr
        assert used <= exported, f"{expr} uses {used - exported}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "cost per tier",
        "escalation rate",
        "latency",
        "cache hit",
        "budget",
        "dlq",
        "lag",
        "decisions",
    ):
        assert topic in titles
