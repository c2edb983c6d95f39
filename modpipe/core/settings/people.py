"""Settings of the loop around the tiers: learning, review, appeals, statements, logging,
the local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from modpipe.core.settings.base import Section, no_password, secret_from_file


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
        return no_password(value)


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
        return secret_from_file(data, "token", "token_file")


class LoggingSettings(Section):
    """How commands log (modpipe/core/logs.py): text or JSON lines, and how many
    per-record warnings of one reason pass per interval."""

    format: Literal["text", "json"] = "text"
    per_record_limit: int = Field(5, ge=1)
    per_record_interval_s: float = Field(60.0, gt=0)


class StackSettings(Section):
    home: Path = Path("~/.cache/modpipe").expanduser()
    kafka_version: str = "4.1.1"
    kafka_heap: str = "1g"  # Kafka's own default (kafka-server-start.sh)
    redis_port: int = 6379
    secure_port: int = Field(9094, ge=1, le=65535)  # `up --secure`: SASL_SSL listener
    redis_tls_port: int = Field(6380, ge=1, le=65535)  # `up --secure`: Redis over TLS
    sasl_username: str = "modpipe"  # `up --secure`: the SCRAM user given the pipeline's ACLs
