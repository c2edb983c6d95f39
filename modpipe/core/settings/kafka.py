"""Kafka settings: the connection and its security, delivery, topic names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from modpipe.core.settings.base import Section, secret_from_file


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
        return secret_from_file(data, "sasl_password", "sasl_password_file")

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
