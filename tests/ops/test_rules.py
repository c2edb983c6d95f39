"""promtool on the shipped Prometheus config and alert rules, and the rules' unit tests."""

from __future__ import annotations

import subprocess

import yaml

from tests.ops.prometheus import DOCKER, tool


def promtool(*args: str) -> str:
    done = subprocess.run(
        [tool("promtool"), *args], cwd=DOCKER, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_config_is_valid_and_loads_the_rules() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out


def test_rules_are_valid() -> None:
    assert "10 rules found" in promtool("check", "rules", "alerts.yml")


def test_every_alert_has_a_unit_test_and_a_runbook_line() -> None:
    promtool("test", "rules", "alerts.test.yml")
    rules = yaml.safe_load((DOCKER / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    cases = yaml.safe_load((DOCKER / "alerts.test.yml").read_text())["tests"]
    tested = {
        t["alertname"]
        for case in cases
        for t in case["alert_rule_test"]
        if t["exp_alerts"]  # a case where the alert must fire, not only stay quiet
    }
    assert alerts == tested
    readme = (DOCKER.parent / "README.md").read_text()
    readme += "".join(p.read_text() for p in sorted((DOCKER.parent / "docs").rglob("*.md")))
    for alert in alerts:
        assert f"`{alert}`" in readme, f"no runbook line for {alert} in the README or docs/"


def test_the_in_cluster_scrape_config_is_valid(tmp_path) -> None:
    # Debian's Prometheus is built without Kubernetes discovery, so that one block is
    # swapped for a static target; the relabelling, the jobs and the rules are checked.
    config = yaml.safe_load((DOCKER.parent / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs")[0]["namespaces"]["names"] == ["modpipe"]
    job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "alerts.yml").write_text((DOCKER / "alerts.yml").read_text())
    out = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert "10 rules found" in out
    jobs = {r.get("replacement") for r in job["relabel_configs"] if r.get("target_label") == "job"}
    assert {"modpipe-worker", "modpipe-escalator"} <= jobs  # what the alert rules match
