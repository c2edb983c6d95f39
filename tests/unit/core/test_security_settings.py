"""Kafka and Redis security settings: secrets from the environment or a file, never YAML."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from modpipe.core.errors import ConfigError
from modpipe.core.kafka import client_options
from modpipe.core.settings import load_settings, redacted

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "default.yaml"
POLICY = CONFIG.parent / "policy.yaml"

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "modpipe",
}


def test_password_in_a_settings_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy_file: {POLICY}\nkafka:\n  sasl_password: hunter2\n")
    with pytest.raises(ConfigError, match="MODPIPE_KAFKA__SASL_PASSWORD") as err:
        load_settings(cfg)
    assert "hunter2" not in str(err.value)
    cfg.write_text(f"policy_file: {POLICY}\nredis:\n  password: hunter2\n")
    with pytest.raises(ConfigError, match="MODPIPE_REDIS__PASSWORD"):
        load_settings(cfg)


def test_password_in_a_redis_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="no password in the URL") as err:
        load_settings(CONFIG, {"redis": {"url": "rediss://:hunter2@127.0.0.1:6380/0"}})
    assert "hunter2" not in str(err.value)


def test_passwords_from_environment_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "redis-password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("MODPIPE_KAFKA__SASL_PASSWORD", "from-the-env")
    settings = load_settings(CONFIG, {"kafka": SASL, "redis": {"password_file": str(secret)}})
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "from-the-env"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "from-a-file"
    shown = str(redacted(settings))
    assert "from-the-env" not in shown and "from-a-file" not in shown
    assert "from-the-env" not in repr(settings)


def test_sasl_without_a_password_names_the_way_to_give_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sasl_password_file"):
        load_settings(CONFIG, {"kafka": SASL})
    with pytest.raises(ConfigError, match="cannot read sasl_password_file"):
        load_settings(CONFIG, {"kafka": {**SASL, "sasl_password_file": str(tmp_path / "no")}})


def test_client_options_carry_tls_and_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODPIPE_KAFKA__SASL_PASSWORD", "pw")
    kafka = load_settings(CONFIG, {"kafka": SASL}).kafka
    options = client_options(kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("modpipe", "pw")
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    plain = client_options(load_settings(CONFIG).kafka)
    assert plain["security_protocol"] == "PLAINTEXT" and "ssl_context" not in plain


def test_the_consoles_redis_url_refuses_a_password_too(make_settings) -> None:
    with pytest.raises(ConfigError, match="no password in the URL"):
        make_settings(review={"redis_url": "redis://:hunter2@127.0.0.1:6379/1"})
