"""Settings: one validated object, built once at start and passed down.

Values come from a YAML file (the `default.yaml` shipped in the `configs` package unless
`--config` or `MODPIPE_CONFIG` names another),
overridden by environment variables with the prefix `MODPIPE_` and `__` between nesting
levels (`MODPIPE_KAFKA__BOOTSTRAP=127.0.0.1:9092`). Unknown keys are errors, so a
misspelled option fails at start instead of being silently ignored. The only secret,
`OPENAI_API_KEY`, is read from the environment alone.
"""

from __future__ import annotations

import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from modpipe.core import dsa
from modpipe.core.errors import ConfigError

CONFIG_ENV = "MODPIPE_CONFIG"


def packaged_config() -> Path:
    """The default settings file shipped inside the installed `configs` package."""
    return Path(str(resources.files("configs").joinpath("default.yaml")))


def config_path(explicit: Path | None = None) -> Path:
    """The settings file to read: `explicit`, else $MODPIPE_CONFIG, else the packaged one."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get(CONFIG_ENV)
    return Path(from_env) if from_env else packaged_config()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret_from_file(data: Any, secret: str, path_field: str) -> Any:
    """Read `secret` from the file `path_field` names (a mounted secret) unless it is set."""
    if not isinstance(data, dict) or not data.get(path_field) or data.get(secret):
        return data
    path = Path(data[path_field]).expanduser()
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path_field} {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{path_field} {path} is empty")
    return {**data, secret: value}


class KafkaSettings(Section):
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    max_message_bytes: int = Field(65536, ge=256)
    session_timeout_s: float = Field(10.0, ge=6)
    publish_deadline_s: float = Field(120.0, gt=0)
    start_timeout_s: float = Field(120.0, gt=0)
    reconnect_backoff_s: float = Field(0.25, gt=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None  # environment or sasl_password_file only
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _password_file(cls, data: Any) -> Any:
        return _secret_from_file(data, "sasl_password", "sasl_password_file")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and a password "
                "(MODPIPE_KAFKA__SASL_PASSWORD or kafka.sasl_password_file)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        return self


class DeliverySettings(Section):
    """How each worker's outputs and input offsets reach Kafka (docs: exactly-once)."""

    guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    # The first final verdict per post_id is kept on the state Redis this long (at least the
    # input topics' retention), so a redelivered post gets those bytes again.
    final_verdict_ttl_s: int = Field(7 * 24 * 3600, ge=60)


class TopicSettings(Section):
    posts: str = "posts"
    verdicts: str = "moderation.verdicts"
    escalations: str = "moderation.escalations"
    review: str = "moderation.review"
    dlq: str = "moderation.dlq"
    labels: str = "moderation.labels"
    notices: str = "moderation.notices"  # users' and trusted flaggers' reports (DSA Art. 16)
    appeals: str = "moderation.appeals"  # complaints against a verdict (DSA Art. 20)
    statements: str = "moderation.statements"  # statements of reasons (DSA Art. 17), by puid


class TriageSettings(Section):
    batch_max: int = Field(256, ge=1)
    max_batches_in_flight: int = Field(4, ge=1)
    audit_rate: float = Field(0.001, ge=0, le=1)
    on_classifier_failure: Literal["escalate", "review"] = "escalate"
    commit_interval_s: float = Field(0.2, gt=0)
    state_dir: Path = Path("~/.cache/modpipe/faust")

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class Band(Section):
    allow_below: float = Field(ge=0, le=1)
    block_above: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.allow_below > self.block_above:
            raise ValueError("allow_below must not exceed block_above")
        return self


class RoutingSettings(Section):
    allow_below: float = Field(0.35, ge=0, le=1)
    block_above: float = Field(0.92, ge=0, le=1)
    per_category: dict[str, Band] = {}
    expected_escalation_rate: float = Field(0.10, ge=0, le=1)  # what calibration measured

    @model_validator(mode="after")
    def _ordered(self) -> RoutingSettings:
        Band(allow_below=self.allow_below, block_above=self.block_above)
        return self

    @cached_property
    def default_band(self) -> Band:
        """The band of every category without an override (built once: routing is per post)."""
        return Band(allow_below=self.allow_below, block_above=self.block_above)

    def band(self, category: str) -> Band:
        """The band for one category: its override, else the default."""
        return self.per_category.get(category) or self.default_band


GuardFamily = Literal["llama-guard-3", "qwen3guard", "shieldgemma"]


class ClassifierSettings(Section):
    backend: Literal["cpu", "vllm-guard", "vllm-classify"] = "cpu"
    model_path: Path | None = None
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "meta-llama/Llama-Guard-3-8B"
    timeout_s: float = Field(10.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    max_in_flight: int = Field(4, ge=1)
    labels: list[str | None] = []  # vllm-classify: policy category per class, null = none
    # vllm-classify: applied here to the raw logits (softmax: single-label, sigmoid: multi-label)
    activation: Literal["softmax", "sigmoid"] = "softmax"
    tokenizer_path: Path | None = None  # vllm-guard: Llama 3 BPE ranks; null = llama-models'
    # vllm-guard: llama-guard-3 is sent as ids built here; the others are tokenized by vLLM.
    guard_family: GuardFamily = "llama-guard-3"  # vllm-guard: see docs/gpu-tier.md
    guard_endpoint: Literal["ids", "chat"] = "ids"  # llama-guard-3: chat = the served template
    controversial: Literal["escalate", "unsafe", "safe"] = "escalate"  # qwen3guard's verdict
    # vllm-classify (issue 21): the served model's directory (or its config.json); labels
    # from its id2label, activation from its problem_type, instead of labels/activation.
    model_dir: Path | None = None
    # The service rate assumed until one is measured (prompt tokens/s); sizes timeouts.
    service_tokens_per_s: float = Field(1000.0, gt=0)


class EscalationSettings(Section):
    group_id: str = "modpipe-escalator"
    provider: Literal["auto", "chat", "moderation", "none"] = "auto"
    base_url: str | None = None
    model: str = "gpt-4.1-mini"
    moderation_model: str = "omni-moderation-latest"
    moderation_block_above: float = Field(0.5, ge=0, le=1)
    timeout_s: float = Field(20.0, gt=0)
    deadline_s: float = Field(60.0, gt=0)
    max_in_flight: int = Field(64, ge=1)
    daily_budget_usd: float = Field(500.0, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    commit_interval_s: float = Field(0.1, gt=0)
    # `reasoning` models (o-series, gpt-5) refuse `max_tokens` and `temperature`: they get
    # `max_completion_tokens` and the server's sampling (so an invalid reply is retried).
    model_family: Literal["chat", "reasoning"] = "chat"


def _no_password(url: str | None) -> str | None:
    """A Redis URL without credentials: a password in it would reach logs and config show."""
    if url is not None and urlsplit(url).password is not None:
        raise ValueError("no password in the URL: MODPIPE_REDIS__PASSWORD or redis.password_file")
    return url


class RedisSettings(Section):
    url: str = "redis://127.0.0.1:6379/0"  # rediss:// for TLS; never a password in it
    # The verdict cache's own Redis (allkeys-lru) apart from the state one (budget, locks;
    # noeviction); None = the same server as `url`.
    cache_url: str | None = None
    username: str | None = None  # an ACL user; null = the default user
    password: SecretStr | None = None  # environment or password_file only
    password_file: Path | None = None
    ssl_cafile: Path | None = None
    key_prefix: str = "modpipe"
    cache_ttl_s: int = Field(604800, ge=1)
    lock_ttl_s: float = Field(30.0, gt=0)
    timeout_s: float = Field(0.5, gt=0)
    breaker_failures: int = Field(3, ge=1)
    breaker_cooldown_s: float = Field(5.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _password_file(cls, data: Any) -> Any:
        return _secret_from_file(data, "password", "password_file")

    @field_validator("url", "cache_url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        return _no_password(value)


class FrontierPrice(Section):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class SmallPrice(Section):
    gpu_usd_per_hour: float = Field(2.5, ge=0)
    tokens_per_second: float = Field(20000, gt=0)
    monthly_usd: float | None = Field(None, ge=0)
    ops_monthly_usd: float = Field(0.0, ge=0)


class CpuPrice(Section):
    core_usd_per_hour: float = Field(0.04, ge=0)
    posts_per_core_second: float = Field(2000, gt=0)


class PriceSettings(Section):
    frontier: dict[str, FrontierPrice] = {}
    small: SmallPrice = SmallPrice()
    cpu: CpuPrice = CpuPrice()


class MetricsSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    escalator_port: int = Field(9465, ge=0, le=65535)
    review_port: int = Field(9466, ge=0, le=65535)


class LearningSettings(Section):
    """The learning loop: where labelled data goes and how long post texts are kept."""

    out_dir: Path = Path("~/.cache/modpipe/learning")
    text_retention_days: float = Field(30.0, gt=0)
    test_share: float = Field(0.2, gt=0, lt=1)

    @field_validator("out_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class ReviewSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    group_id: str = "modpipe-review"
    redis_url: str | None = None  # null = redis.url; same credentials
    lease_s: float = Field(600.0, gt=0)
    session_ttl_s: int = Field(43200, ge=60)
    cookie_name: str = Field("modpipe_session", pattern=r"^[A-Za-z0-9_-]+$")
    cookie_secure: bool = False
    login_window_s: int = Field(900, ge=1)
    login_failures_per_user: int = Field(5, ge=1)
    login_failures_per_address: int = Field(20, ge=1)
    publish_deadline_s: float = Field(10.0, gt=0)
    outbox_retry_s: float = Field(30.0, gt=0)
    decided_keep_s: int = Field(604800, ge=60)
    commit_interval_s: float = Field(1.0, gt=0)
    stats_interval_s: float = Field(5.0, gt=0)
    # Request bodies above this are refused (413) before any session or login is looked at.
    max_body_bytes: int = Field(65536, ge=1024)
    # Proxies whose X-Forwarded-For names the client (login limits count per address);
    # empty = the socket's peer is the client.
    trusted_proxies: list[str] = []

    @field_validator("redis_url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        return _no_password(value)


class AppealsSettings(Section):
    """Complaints against verdicts (DSA Art. 20): the intake in the review console."""

    window_days: float = Field(183.0, gt=0)  # at least six months after the decision
    group_id: str = "modpipe-appeals"


class StatementsSettings(Section):
    """Statements of reasons: building them from verdicts and sending them to the EU database."""

    group_id: str = "modpipe-statements"  # the builder's group on topics.verdicts
    submit_group_id: str = "modpipe-statements-submitter"  # the submitter's on topics.statements
    base_url: str = "https://transparency.dsa.ec.europa.eu"
    token: SecretStr | None = None  # MODPIPE_STATEMENTS__TOKEN or token_file only
    token_file: Path | None = None
    batch_max: int = Field(100, ge=1, le=100)  # the API takes 1-100 per call
    requests_per_s: float = Field(20.0, gt=0, le=150)  # under the API's 200/s and 12,000/min
    timeout_s: float = Field(30.0, gt=0)
    stored_keep_days: float = Field(400.0, gt=0)  # how long a stored puid is remembered
    publish_deadline_s: float = Field(60.0, gt=0)
    port: int = Field(9467, ge=0, le=65535)  # the submitter's /metrics; 0 disables

    @model_validator(mode="before")
    @classmethod
    def _token_file(cls, data: Any) -> Any:
        return _secret_from_file(data, "token", "token_file")


class LoggingSettings(Section):
    """How commands log (modpipe/core/logs.py): text or JSON lines, and how many
    per-record warnings of one reason pass per interval."""

    format: Literal["text", "json"] = "text"
    per_record_limit: int = Field(5, ge=1)
    per_record_interval_s: float = Field(60.0, gt=0)


class StackSettings(Section):
    home: Path = Path("~/.cache/modpipe").expanduser()
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"
    redis_port: int = 6379
    secure_port: int = Field(9094, ge=1, le=65535)  # `up --secure`: SASL_SSL listener
    redis_tls_port: int = Field(6380, ge=1, le=65535)  # `up --secure`: Redis over TLS
    sasl_username: str = "modpipe"  # `up --secure`: the SCRAM user given the pipeline's ACLs


class DsaGround(Section):
    """How one policy category reads in a statement of reasons (the policy file's `dsa`)."""

    decision_ground: Literal[
        "DECISION_GROUND_ILLEGAL_CONTENT", "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    ]
    category: str
    keywords: list[str] = []
    ground: str = Field(min_length=1, max_length=500)  # the T&C clause, or the legal ground
    explanation: str = Field(min_length=1, max_length=2000)
    illegal: Literal["Yes", "No"] | None = None  # incompatible content that is also illegal
    visibility: str = "DECISION_VISIBILITY_CONTENT_REMOVED"

    @model_validator(mode="after")
    def _known_values(self) -> DsaGround:
        if self.category not in dsa.CATEGORY:
            raise ValueError(f"category {self.category!r} is not a database category")
        unknown = sorted(set(self.keywords) - set(dsa.KEYWORD))
        if unknown:
            raise ValueError(f"keywords not in the database's list: {unknown}")
        if self.visibility not in dsa.DECISION_VISIBILITY or self.visibility.endswith("_OTHER"):
            raise ValueError(f"visibility {self.visibility!r} is not a database restriction")
        return self


class DsaPolicy(Section):
    """The policy's mapping onto the DSA Transparency Database (statements of reasons)."""

    terms_url: str | None = Field(None, max_length=500)  # decision_ground_reference_url
    content_type: list[str] = ["CONTENT_TYPE_TEXT"]
    territorial_scope: list[str] = list(dsa.EEA)
    categories: dict[str, DsaGround]

    @model_validator(mode="after")
    def _known_values(self) -> DsaPolicy:
        if not self.content_type or set(self.content_type) - set(dsa.CONTENT_TYPE):
            raise ValueError(f"content_type must be database content types: {self.content_type}")
        if "CONTENT_TYPE_OTHER" in self.content_type:
            raise ValueError("content_type OTHER would need a description; name a type")
        if self.terms_url is not None and not self.terms_url.startswith(("https://", "http://")):
            raise ValueError("terms_url must be an http(s) URL")
        if not self.territorial_scope or set(self.territorial_scope) - set(dsa.EEA):
            raise ValueError("territorial_scope must be EEA country codes (upper case)")
        return self


class Policy(Section):
    """The taxonomy all tiers map onto, loaded from `policy_file`."""

    version: str
    categories: dict[str, str]
    cpu_category: str
    openai_moderation: dict[str, str] = {}
    llama_guard: dict[str, str | None] = {}
    dsa: DsaPolicy | None = None  # statements of reasons need it for every category

    @model_validator(mode="after")
    def _known_categories(self) -> Policy:
        guard = {c for c in self.llama_guard.values() if c is not None}
        named = {self.cpu_category, *self.openai_moderation.values(), *guard}
        unknown = named - set(self.categories)
        if unknown:
            raise ValueError(f"mapped to unknown categories: {sorted(unknown)}")
        if self.dsa is not None and set(self.dsa.categories) != set(self.categories):
            missing = sorted(set(self.categories) - set(self.dsa.categories))
            extra = sorted(set(self.dsa.categories) - set(self.categories))
            raise ValueError(
                f"dsa.categories must map every category: missing {missing}, unknown {extra}"
            )
        return self


class RulesSettings(Section):
    """The rules stage before tier 1 (issue 23; docs/rules.md)."""

    path: Path | None = None  # the rule file (YAML); null = no rules stage
    reload_interval_s: float = Field(1.0, gt=0)  # how often the file is checked for changes


class ShadowSettings(Section):
    """`modpipe shadow`: a candidate beside production (docs/rules.md)."""

    group_id: str = "modpipe-shadow"
    topic: str = "moderation.shadow"


class PromoteSettings(Section):
    """`modpipe promote`: the gate before a candidate becomes the active configuration."""

    margin: float = Field(0.02, ge=0, le=1)  # how much worse than production is tolerated
    min_slice_posts: int = Field(30, ge=1)  # slices smaller than this are not judged
    worst_share: float = Field(0.05, gt=0, le=1)  # the tail: the worst 5% of slices
    min_shadow_posts: int = Field(200, ge=0)
    min_agreement: float = Field(0.9, ge=0, le=1)
    escalation_room: float = Field(0.02, ge=0, le=1)  # above expected_escalation_rate


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
