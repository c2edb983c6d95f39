"""Dead letters: a record no consumer could read, kept for operators with where it was
found and why it was refused (`moderation.dlq`); always within `wire_limits(...).dlq_bytes`."""

from __future__ import annotations

import base64
import hashlib
import logging
import traceback

from pydantic import BaseModel, Field

from modpipe.core.errors import InvalidRecord
from modpipe.core.records import (
    DLQ_KEEP_BYTES,
    DLQ_KEEP_KEY_BYTES,
    DLQ_MAX_KAFKA_KEY,
    DLQ_PREFIX_BYTES,
    ERROR_MAX_CHARS,
    Incoming,
    Outgoing,
    encode,
    now_rfc3339,
)

log = logging.getLogger(__name__)


class DeadLetter(BaseModel):
    """A record no consumer could read, kept for operators with where it was found.

    The value is kept whole up to DLQ_KEEP_BYTES (the key up to DLQ_KEEP_KEY_BYTES);
    beyond, its first DLQ_PREFIX_BYTES are kept and `truncated` is true. The size and
    SHA-256 of the whole value (and key) are always there to match the original.
    """

    value_b64: str  # "" for a null value (a tombstone); see `error`
    key_b64: str | None
    topic: str
    partition: int
    offset: int
    error: str
    reason: str
    value_size: int = 0
    value_sha256: str = ""
    key_size: int | None = None
    key_sha256: str | None = None
    truncated: bool = False
    failed_at: str = Field(default_factory=now_rfc3339)


def _kept(data: bytes, keep: int) -> tuple[str, bool]:
    if len(data) <= keep:
        return base64.b64encode(data).decode(), False
    return base64.b64encode(data[:DLQ_PREFIX_BYTES]).decode(), True


def readable_error(error: BaseException) -> str:
    """One line on why a record failed: InvalidRecord's message, else the type, message
    and the innermost frame (an `internal` failure is a bug to report)."""
    if isinstance(error, InvalidRecord):
        text = str(error)
    else:
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        text = f"internal error {type(error).__name__}: {error}{where}"
    # Messages may quote input: never let them break the JSON of the dead letter.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 1] + "…"


def dead_letter(msg: Incoming, error: BaseException, dlq_topic: str) -> Outgoing:
    """The DLQ record for `msg`: its raw bytes, where it was found, and why it was refused.

    `reason` is InvalidRecord's, or `internal` for any other exception raised while
    handling this one record. Keyed by the original key (when at most
    DLQ_MAX_KAFKA_KEY bytes), or by topic:partition:offset, so every dead letter can be
    traced back to the exact message. Always fits `wire_limits(...).dlq_bytes`.
    """
    reason = error.reason if isinstance(error, InvalidRecord) else "internal"
    text = readable_error(error)
    log.warning(  # one bad record: rate-limited per reason (modpipe/core/logs.py)
        "dead letter topic=%s partition=%d offset=%d reason=%s: %s",
        msg.topic,
        msg.partition,
        msg.offset,
        reason,
        text,
        extra={"per_record": f"dead letter {reason}"},
    )
    value = msg.value or b""
    value_b64, value_cut = _kept(value, DLQ_KEEP_BYTES)
    key_b64, key_cut = _kept(msg.key, DLQ_KEEP_KEY_BYTES) if msg.key is not None else (None, False)
    letter = DeadLetter(
        value_b64=value_b64,
        key_b64=key_b64,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        error=text,
        reason=reason,
        value_size=len(value),
        value_sha256=hashlib.sha256(value).hexdigest(),
        key_size=len(msg.key) if msg.key is not None else None,
        key_sha256=hashlib.sha256(msg.key).hexdigest() if msg.key is not None else None,
        truncated=value_cut or key_cut,
    )
    key = (
        msg.key
        if msg.key and len(msg.key) <= DLQ_MAX_KAFKA_KEY
        else f"{msg.topic}:{msg.partition}:{msg.offset}".encode()
    )
    return Outgoing(dlq_topic, key, encode(letter))
