"""Settings: one validated object, built once at start and passed down.

Values come from a YAML file (the `default.yaml` shipped in the `configs` package unless
`--config` or `MODPIPE_CONFIG` names another),
overridden by environment variables with the prefix `MODPIPE_` and `__` between nesting
levels (`MODPIPE_KAFKA__BOOTSTRAP=127.0.0.1:9092`). Unknown keys are errors, so a
misspelled option fails at start instead of being silently ignored. The only secret,
`OPENAI_API_KEY`, is read from the environment alone.

The models live one module per group of sections (`kafka`, `tiers`, `people`,
`policy`), the file's location and the shared checks in `base`, the root object and its
loading in `loading`; every public name is importable from here.
"""

from __future__ import annotations

from modpipe.core.settings.base import CONFIG_ENV, Section, config_path, packaged_config
from modpipe.core.settings.kafka import DeliverySettings, KafkaSettings, TopicSettings
from modpipe.core.settings.loading import Settings, deep_merge, load_settings, redacted
from modpipe.core.settings.people import (
    AppealsSettings,
    LearningSettings,
    LoggingSettings,
    ReviewSettings,
    StackSettings,
    StatementsSettings,
)
from modpipe.core.settings.policy import (
    DsaGround,
    DsaPolicy,
    Policy,
    PromoteSettings,
    RulesSettings,
    ShadowSettings,
)
from modpipe.core.settings.tiers import (
    Band,
    ClassifierSettings,
    CpuPrice,
    EscalationSettings,
    FrontierPrice,
    MetricsSettings,
    PriceSettings,
    RedisSettings,
    RoutingSettings,
    SmallPrice,
    TriageSettings,
)

__all__ = [
    "CONFIG_ENV",
    "AppealsSettings",
    "Band",
    "ClassifierSettings",
    "CpuPrice",
    "DeliverySettings",
    "DsaGround",
    "DsaPolicy",
    "EscalationSettings",
    "FrontierPrice",
    "KafkaSettings",
    "LearningSettings",
    "LoggingSettings",
    "MetricsSettings",
    "Policy",
    "PriceSettings",
    "PromoteSettings",
    "RedisSettings",
    "ReviewSettings",
    "RoutingSettings",
    "RulesSettings",
    "Section",
    "Settings",
    "ShadowSettings",
    "SmallPrice",
    "StackSettings",
    "StatementsSettings",
    "TopicSettings",
    "TriageSettings",
    "config_path",
    "deep_merge",
    "load_settings",
    "packaged_config",
    "redacted",
]
