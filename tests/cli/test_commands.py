"""The installed `modpipe` command as a user runs it: a subprocess, from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import CONFIG


def modpipe(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modpipe", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_cost_runs_from_another_directory_on_the_packaged_config(tmp_path: Path) -> None:
    out = modpipe("cost", "--tokens-per-day", "1e9", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for name in ("frontier_only", "small_only", "hybrid"):
        assert data[name]["monthly_usd"] > 0 and data[name]["parts"]
    assert data["hybrid"]["monthly_usd"] < data["frontier_only"]["monthly_usd"]
    assert data["break_even_tokens_per_day"] > 0
    assert data["assumptions"]["posts_per_day"] == 2e8


def test_config_show_applies_the_environment_and_redacts_secrets(tmp_path: Path) -> None:
    secret = "sk-test-not-a-real-key-31337"
    out = modpipe(
        "config",
        "show",
        cwd=tmp_path,
        env={"OPENAI_API_KEY": secret, "MODPIPE_KAFKA__PARTITIONS": "7"},
    )
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["kafka"]["partitions"] == 7
    assert shown["openai_api_key"] == "**********"
    assert secret not in out.stdout + out.stderr


def test_modpipe_config_names_another_file(tmp_path: Path) -> None:
    data = yaml.safe_load(CONFIG.read_text())
    data["kafka"]["partitions"] = 9
    data["policy_file"] = str(CONFIG.parent / "policy.yaml")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    out = modpipe("config", "show", cwd=tmp_path, env={"MODPIPE_CONFIG": str(other)})
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["kafka"]["partitions"] == 9


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    # No policy_file key: the packaged policy is used.
    text = CONFIG.read_text().replace("batch_max: 256", "batch_max: many")
    bad.write_text("\n".join(x for x in text.splitlines() if not x.startswith("policy_file")))
    out = modpipe("config", "check", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert "triage.batch_max" in out.stderr
    good = modpipe("config", "check", str(CONFIG), cwd=tmp_path)
    assert good.returncode == 0 and "valid" in good.stdout
