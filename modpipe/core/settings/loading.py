"""The settings object, and reading it: the file, the environment, overrides, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from modpipe.core.errors import ConfigError
from modpipe.core.settings.base import config_path, packaged_config
from modpipe.core.settings.kafka import DeliverySettings, KafkaSettings, TopicSettings
from modpipe.core.settings.people import (
    AppealsSettings,
    LearningSettings,
    LoggingSettings,
    ReviewSettings,
    StackSettings,
    StatementsSettings,
)
from modpipe.core.settings.policy import Policy, PromoteSettings, RulesSettings, ShadowSettings
from modpipe.core.settings.tiers import (
    ClassifierSettings,
    EscalationSettings,
    MetricsSettings,
    PriceSettings,
    RedisSettings,
    RoutingSettings,
    TriageSettings,
)


class Settings(BaseSettings):
    """Everything modpipe reads at start; see configs/default.yaml for the meaning of each."""

    model_config = SettingsConfigDict(
        env_prefix="MODPIPE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    app_id: str = "modpipe-triage"
    policy_file: Path = Path("policy.yaml")
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    delivery: DeliverySettings = DeliverySettings()
    triage: TriageSettings = TriageSettings()
    routing: RoutingSettings = RoutingSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    escalation: EscalationSettings = EscalationSettings()
    redis: RedisSettings = RedisSettings()
    prices: PriceSettings = PriceSettings()
    metrics: MetricsSettings = MetricsSettings()
    stack: StackSettings = StackSettings()
    review: ReviewSettings = ReviewSettings()
    learning: LearningSettings = LearningSettings()
    rules: RulesSettings = RulesSettings()
    shadow: ShadowSettings = ShadowSettings()
    promote: PromoteSettings = PromoteSettings()
    appeals: AppealsSettings = AppealsSettings()
    statements: StatementsSettings = StatementsSettings()
    logging: LoggingSettings = LoggingSettings()
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("OPENAI_API_KEY"), exclude=True
    )
    policy: Policy

    @classmethod
    def settings_customise_sources(  # type: ignore[override]
        cls,
        settings_cls: type[BaseSettings],
        init_settings: Any,
        env_settings: Any,
        **_: Any,
    ) -> tuple[Any, ...]:
        # The environment wins over the file, which arrives as init arguments.
        return (env_settings, init_settings)

    @property
    def provider(self) -> Literal["chat", "moderation", "none"]:
        """The escalation provider in effect (`auto` resolved)."""
        if self.escalation.provider != "auto":
            return self.escalation.provider
        has_endpoint = self.openai_api_key is not None or self.escalation.base_url is not None
        return "chat" if has_endpoint else "none"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, nested mappings merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# Secrets never come from a settings file, which gets committed, copied and shown.
_FILE_FORBIDDEN = (
    ("kafka", "sasl_password", "MODPIPE_KAFKA__SASL_PASSWORD"),
    ("redis", "password", "MODPIPE_REDIS__PASSWORD"),
    ("statements", "token", "MODPIPE_STATEMENTS__TOKEN"),
)


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read, merge and validate settings; any problem is a ConfigError naming the setting.

    `path` defaults to $MODPIPE_CONFIG, else the packaged default.
    """
    path = config_path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping at top level")
    for section, secret, env in _FILE_FORBIDDEN:
        if isinstance(data.get(section), dict) and secret in data[section]:
            raise ConfigError(
                f"{section}.{secret} must not be in a config file ({path}): "
                f"set {env} or {section}.{secret}_file"
            )
    data = deep_merge(data, overrides or {})
    if "policy_file" in data:  # relative to the settings file that names it
        policy_path = Path(data["policy_file"]).expanduser()
        if not policy_path.is_absolute():
            policy_path = path.parent / policy_path
    else:
        policy_path = packaged_config().parent / "policy.yaml"
    try:
        data["policy"] = yaml.safe_load(policy_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read policy {policy_path}: {exc}") from exc
    data["policy_file"] = policy_path
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings ({path}): {problems}") from exc
    known = set(settings.policy.categories)
    unknown = set(settings.routing.per_category) - known
    if unknown:
        raise ConfigError(f"routing.per_category names unknown categories: {sorted(unknown)}")
    unknown = {c for c in settings.classifier.labels if c is not None} - known
    if unknown:
        raise ConfigError(f"classifier.labels names unknown categories: {sorted(unknown)}")
    return settings


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, every secret shown as `**********` (or null)."""
    data = settings.model_dump(mode="json", exclude={"policy"})  # nested SecretStr: ******
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        if field.exclude and (value is None or isinstance(value, SecretStr)):
            data[name] = None if value is None else "**********"
    return data
