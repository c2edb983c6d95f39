"""Wire records: the JSON values on every modpipe topic (the contract with other services).

Posts are validated strictly but keep unknown fields, so a platform can add its own
without a release of modpipe. Everything modpipe writes is built here.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from modpipe.core.errors import InvalidRecord

log = logging.getLogger(__name__)

Action = Literal["allow", "block", "review"]
Tier = Literal["small", "frontier", "cache", "fallback", "human"]
Scores = dict[str, float]
ReviewReason = Literal["audit", "provider_failed", "budget", "no_provider", "classifier_failed"]

MAX_POST_ID = 256


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed Kafka message, as either worker received it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_s: float


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to publish: topic, key, value bytes, and optionally the timestamp to keep."""

    topic: str
    key: bytes
    value: bytes
    timestamp_s: float | None = None


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Post(BaseModel):
    """A post as published by a platform service. Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    post_id: StrictStr = Field(min_length=1, max_length=MAX_POST_ID)
    text: StrictStr
    author_id: StrictStr | None = None
    created_at: StrictStr | None = None
    lang: StrictStr | None = None
    surface: StrictStr | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("created_at")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError("must be an RFC 3339 timestamp") from exc
        return value

    def wire(self) -> dict[str, Any]:
        """The post as received: the fields it came with, unknown ones included."""
        return self.model_dump(mode="json", exclude_unset=True)


class Verdict(BaseModel):
    """The one final decision on a post, on `moderation.verdicts`."""

    post_id: str
    action: Action
    categories: list[str]
    scores: Scores
    tier: Tier
    model: str
    policy_version: str
    latency_ms: float
    cost_usd: float  # this post's share over every tier it went through
    decided_at: str = Field(default_factory=now_rfc3339)


class Escalation(BaseModel):
    """A borderline post on its way to the frontier tier."""

    post: dict[str, Any]
    scores: Scores
    model: str
    policy_version: str
    escalated_at: str = Field(default_factory=now_rfc3339)
    reason: str = "borderline"
    cost_usd: float = 0.0  # what tier 1 spent on the post; its verdict carries the total


class ReviewItem(BaseModel):
    """A post for human reviewers, with why it needs one."""

    post: dict[str, Any]
    scores: Scores
    model: str
    policy_version: str
    reason: ReviewReason
    detail: str = ""
    proposed: Verdict | None = None
    queued_at: str = Field(default_factory=now_rfc3339)


class Label(BaseModel):
    """A reviewer's decision on `moderation.labels`: the audit log and tier 1's training data."""

    post: dict[str, Any]  # the post as received
    action: Literal["allow", "block"]
    categories: list[str]
    source: Literal["human"] = "human"
    reviewer: str
    reason: str  # why the post was in review (a ReviewReason)
    note: str = ""
    decided_at: str = Field(default_factory=now_rfc3339)


class DeadLetter(BaseModel):
    """A value no consumer could read, kept whole for operators."""

    value_b64: str
    key_b64: str | None
    topic: str
    partition: int
    offset: int
    error: str
    reason: str
    failed_at: str = Field(default_factory=now_rfc3339)


def dead_letter(msg: Incoming, error: InvalidRecord, dlq_topic: str) -> Outgoing:
    """The DLQ record for `msg`: its raw bytes, where it was found, and why it was refused.

    Keyed by the original key, or by topic:partition:offset when it had none, so every
    dead letter can be traced back to the exact message.
    """
    log.warning(
        "dead letter topic=%s partition=%d offset=%d: %s",
        msg.topic,
        msg.partition,
        msg.offset,
        error,
    )
    letter = DeadLetter(
        value_b64=base64.b64encode(msg.value or b"").decode(),
        key_b64=base64.b64encode(msg.key).decode() if msg.key is not None else None,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        error=str(error),
        reason=error.reason,
    )
    key = msg.key if msg.key else f"{msg.topic}:{msg.partition}:{msg.offset}".encode()
    return Outgoing(dlq_topic, key, encode(letter))


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def _load_object(raw: bytes | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidRecord("value is empty (null)", "empty")
    if len(raw) > max_bytes:
        raise InvalidRecord(f"value is {len(raw)} bytes, over the maximum of {max_bytes}", "size")
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRecord(f"value is not UTF-8 JSON: {exc}", "json") from exc
    if not isinstance(value, dict):
        raise InvalidRecord(f"value is a JSON {type(value).__name__}, not an object", "json")
    return value


def parse_post(raw: bytes | None, max_bytes: int) -> Post:
    """Decode and validate a `posts` value; raises InvalidRecord with a readable message."""
    obj = _load_object(raw, max_bytes)
    try:
        return Post.model_validate(obj)
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid post: {_errors(exc)}", "schema") from exc


def parse_escalation(raw: bytes | None, max_bytes: int) -> tuple[Escalation, Post]:
    """Decode an escalation and the post inside it; raises InvalidRecord."""
    obj = _load_object(raw, max_bytes)
    try:
        escalation = Escalation.model_validate(obj)
        return escalation, Post.model_validate(escalation.post)
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid escalation: {_errors(exc)}", "schema") from exc


def encode(record: BaseModel) -> bytes:
    """A record as the UTF-8 JSON bytes that go on the wire."""
    return record.model_dump_json(exclude_none=False).encode()
