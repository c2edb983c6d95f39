"""Wire records: the JSON values on every modpipe topic (the contract with other services).

Posts are validated strictly but keep unknown fields, so a platform can add its own
without a release of modpipe. Everything modpipe writes is built here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import msgspec
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
)

from modpipe.core.decoding import load_object
from modpipe.core.errors import InvalidRecord

log = logging.getLogger(__name__)

Action = Literal["allow", "block", "review"]
Tier = Literal["small", "frontier", "cache", "fallback", "human", "rules"]
Scores = dict[str, float]
ReviewReason = Literal[
    "audit", "provider_failed", "budget", "no_provider", "classifier_failed", "rule", "notice"
]

MAX_POST_ID = 256
MAX_DEPTH = 32  # nesting of a post value; the records that carry a post get one level more
DLQ_KEEP_BYTES = 1024 * 1024  # a value up to this is kept whole in its dead letter
DLQ_KEEP_KEY_BYTES = 64 * 1024  # the same for a key
DLQ_PREFIX_BYTES = 64 * 1024  # what is kept of a larger one, with its SHA-256 and size
DLQ_MAX_KAFKA_KEY = 1024  # a longer original key is not reused as the dead letter's key
ERROR_MAX_CHARS = 2000


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Byte limits that follow from `kafka.max_message_bytes`, so every record fits.

    `post_bytes`: the largest post value. `record_bytes`: the largest escalation or
    review item either worker writes or the escalator reads (a post may grow when it is
    written again inside one). `dlq_bytes`: the largest dead letter (a kept value is a
    third larger in base64). The topic sizes (`max.message.bytes`) add room for the
    record batch around one record, and the producers' request size holds any of them.
    """

    post_bytes: int
    record_bytes: int
    dlq_bytes: int

    @property
    def record_topic_bytes(self) -> int:
        """`max.message.bytes` for the escalations and review topics."""
        return self.record_bytes + 64 * 1024

    @property
    def dlq_topic_bytes(self) -> int:
        """`max.message.bytes` for the DLQ topic."""
        return self.dlq_bytes + 64 * 1024

    @property
    def request_bytes(self) -> int:
        """The producers' `max_request_size`: any one record either worker writes."""
        return max(self.record_topic_bytes, self.dlq_topic_bytes)


def wire_limits(max_message_bytes: int) -> WireLimits:
    """The limits for a pipeline whose posts are at most `max_message_bytes`."""
    kept = 4 * ((DLQ_KEEP_BYTES + 2) // 3) + 4 * ((DLQ_KEEP_KEY_BYTES + 2) // 3)
    # Fields, an error of ERROR_MAX_CHARS escaped at worst 6 bytes a character, the topic.
    return WireLimits(
        post_bytes=max_message_bytes,
        record_bytes=4 * max_message_bytes,
        dlq_bytes=kept + 6 * ERROR_MAX_CHARS + 4096,
    )


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed Kafka message, as either worker received it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_s: float

    @classmethod
    def of(cls, record: ConsumedRecord) -> Incoming:
        """From a consumer's record (aiokafka's ConsumerRecord: timestamp in ms)."""
        return cls(
            record.key,
            record.value,
            record.topic,
            record.partition,
            record.offset,
            record.timestamp / 1000,
        )


class ConsumedRecord(Protocol):
    """What `Incoming.of` reads from a consumed record."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


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


def first_verdict_id(post_id: str) -> str:
    """The `verdict_id` of a post's first final verdict, whichever tier decides it: anyone
    can name the verdict a human decision replaces from the post_id alone."""
    return hashlib.sha256(b"verdict\0" + post_id.encode()).hexdigest()[:32]


class Verdict(BaseModel):
    """A decision on a post, on `moderation.verdicts`.

    Each post has exactly one first final verdict (`verdict_id` = first_verdict_id(post_id)).
    A later verdict (a human decision after `review`, an appeal's outcome) has its own id
    and names the one it replaces in `supersedes`.
    """

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
    verdict_id: str = ""  # first_verdict_id(post_id) for the first final verdict
    reviewer: str | None = None  # tier `human` only: who decided
    supersedes: str | None = None  # the verdict_id this one replaces
    # Tier `rules` only: the rule that decided, and its rule file's version.
    rule_id: str | None = None
    rule_version: str | None = None
    # Tier `small` only: the classifier's probability that the post violates the policy at
    # all, allows included (vllm-guard: P(unsafe)); absent (not null) where none is known.
    p_violation: float | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Machine verdicts keep their exact wire shape: no `reviewer: null`.
        return _present(handler(self))

    def wire(self) -> bytes:
        """The verdict's wire value, by the one verdict encoder (`encode_verdict`)."""
        return encode_verdict(**self.model_dump())


class Escalation(BaseModel):
    """A borderline post on its way to the frontier tier."""

    post: dict[str, Any]
    scores: Scores
    model: str
    policy_version: str
    escalated_at: str = Field(default_factory=now_rfc3339)
    reason: str = "borderline"
    cost_usd: float = 0.0  # what tier 1 spent on the post; its verdict carries the total
    # --- the small tier's own P(violation) (issue 21): see Verdict.p_violation ---
    p_violation: float | None = None


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


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def _load_object(
    raw: bytes | None, max_bytes: int, max_depth: int = MAX_DEPTH + 1
) -> dict[str, Any]:
    # The records that carry a post (escalations, review items) nest it one level deeper.
    return load_object(raw, max_bytes, max_depth)


def parse_post(raw: bytes | None, max_bytes: int) -> Post:
    """Decode and validate a `posts` value; raises InvalidRecord with a readable message.

    Decoding is strict (modpipe/core/decoding.py); the reasons are `empty`, `size`,
    `depth`, `encoding`, `json` and `schema`.
    """
    obj = _load_object(raw, max_bytes, MAX_DEPTH)
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


def parse_review(raw: bytes | None, max_bytes: int) -> tuple[ReviewItem, Post]:
    """Decode a review item and the post inside it; raises InvalidRecord."""
    obj = _load_object(raw, max_bytes)
    try:
        item = ReviewItem.model_validate(obj)
        return item, Post.model_validate(item.post)
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid review item: {_errors(exc)}", "schema") from exc


def encode(record: BaseModel) -> bytes:
    """A record as the UTF-8 JSON bytes that go on the wire (a verdict by `encode_verdict`)."""
    if isinstance(record, Verdict):
        return record.wire()
    return record.model_dump_json(exclude_none=False).encode()


_ABSENT_WHEN_NONE = ("reviewer", "supersedes", "rule_id", "rule_version", "p_violation")


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    # A verdict's optional fields are absent, never null, where they do not apply.
    for name in _ABSENT_WHEN_NONE:
        if fields.get(name, 0) is None:
            del fields[name]
    return fields


def encode_verdict(
    *,
    post_id: str,
    action: Action,
    categories: list[str],
    scores: Scores,
    tier: Tier,
    model: str,
    policy_version: str,
    latency_ms: float,
    cost_usd: float,
    decided_at: str,
    verdict_id: str,
    reviewer: str | None = None,
    supersedes: str | None = None,
    rule_id: str | None = None,
    rule_version: str | None = None,
    p_violation: float | None = None,
) -> bytes:
    """A verdict's wire value: the one verdict encoder (`Verdict.wire` and `encode` use it).

    Tier 1 calls it directly, one per post, without building a Verdict (a tenth of the
    time); the caller passes values that are already valid. Fields in the model's order;
    the optional ones absent, not null, where they do not apply.
    """
    return msgspec.json.encode(
        _present(
            {
                "post_id": post_id,
                "action": action,
                "categories": categories,
                "scores": scores,
                "tier": tier,
                "model": model,
                "policy_version": policy_version,
                "latency_ms": latency_ms,
                "cost_usd": cost_usd,
                "decided_at": decided_at,
                "verdict_id": verdict_id,
                "reviewer": reviewer,
                "supersedes": supersedes,
                "rule_id": rule_id,
                "rule_version": rule_version,
                "p_violation": p_violation,
            }
        )
    )
