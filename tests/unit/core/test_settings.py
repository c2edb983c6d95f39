from pathlib import Path

import pytest

from modpipe.core.errors import ConfigError
from modpipe.core.settings import load_settings

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "default.yaml"


def test_defaults_load_with_policy() -> None:
    settings = load_settings(CONFIG)
    assert settings.topics.posts == "posts"
    assert settings.policy.cpu_category in settings.policy.categories


def test_environment_overrides_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODPIPE_KAFKA__BOOTSTRAP", "127.0.0.1:19092")
    monkeypatch.setenv("MODPIPE_TOPICS__VERDICTS", "v2")
    monkeypatch.setenv("MODPIPE_APP_ID", "other")
    settings = load_settings(CONFIG)
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.topics.verdicts == "v2"
    assert settings.topics.posts == "posts"  # siblings keep their file values
    assert settings.app_id == "other"


def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODPIPE_TRIAGE__BATCH_MAX", "many")
    with pytest.raises(ConfigError, match=r"triage\.batch_max"):
        load_settings(CONFIG)


def test_misspelled_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"policy_file: {CONFIG.parent / 'policy.yaml'}\ntriage:\n  batch_maxx: 3\n")
    with pytest.raises(ConfigError, match=r"triage\.batch_maxx"):
        load_settings(cfg)


def test_inverted_band_is_an_error() -> None:
    with pytest.raises(ConfigError, match="allow_below must not exceed block_above"):
        load_settings(CONFIG, {"routing": {"allow_below": 0.9, "block_above": 0.1}})


def test_unknown_category_override_is_an_error() -> None:
    bad = {"routing": {"per_category": {"spam": {"allow_below": 0.1, "block_above": 0.5}}}}
    with pytest.raises(ConfigError, match="spam"):
        load_settings(CONFIG, bad)


def test_openai_key_only_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert load_settings(CONFIG).provider == "none"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = load_settings(CONFIG)
    assert settings.provider == "chat"
    assert "sk-test" not in repr(settings)
