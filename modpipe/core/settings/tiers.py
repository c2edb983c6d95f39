"""The tiers' settings: triage, routing, the classifier, escalation, Redis, prices, metrics."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from modpipe.core.settings.base import Section, no_password, secret_from_file


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
        return secret_from_file(data, "password", "password_file")

    @field_validator("url", "cache_url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        return no_password(value)


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
