"""The compliance topics' wire records: notices and appeals (in), and their parsing.

A notice (`moderation.notices`, DSA Art. 16) reports a post: the post as received, its
`notice_id`, the category the notifier claims, whether a trusted flagger sent it, when it
was received. An appeal (`moderation.appeals`, Art. 20) contests a verdict: `appeal_id`,
`post_id`, the appellant's statement, when it was received, optionally the `verdict_id`
it contests (default: the post's latest verdict) and the post as received (what the
reviewer reads; without it the reviewer sees the post id only).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
)

from modpipe.core.decoding import load_object
from modpipe.core.errors import InvalidRecord
from modpipe.core.records import MAX_DEPTH, MAX_POST_ID, Post

MAX_STATEMENT = 5000
AppealOutcome = ("upheld", "reversed", "partially_reversed")


def appeal_verdict_id(appeal_id: str) -> str:
    """The verdict id of an appeal's outcome (stable: one outcome per appeal)."""
    return hashlib.sha256(b"verdict\0appeal\0" + appeal_id.encode()).hexdigest()[:32]


def _instant(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be an RFC 3339 timestamp") from exc
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset")
    return value


class Notice(BaseModel):
    """A report of a post by a user or a trusted flagger."""

    model_config = ConfigDict(extra="allow", frozen=True)

    notice_id: StrictStr = Field(min_length=1, max_length=256)
    post: dict[str, Any]
    category: StrictStr | None = None  # claimed; null = not specified
    trusted_flagger: StrictBool = False
    received_at: StrictStr

    _received = field_validator("received_at")(classmethod(lambda cls, v: _instant(v)))


class Appeal(BaseModel):
    """A complaint against a verdict."""

    model_config = ConfigDict(extra="allow", frozen=True)

    appeal_id: StrictStr = Field(min_length=1, max_length=256)
    post_id: StrictStr = Field(min_length=1, max_length=MAX_POST_ID)
    statement: StrictStr = Field(max_length=MAX_STATEMENT)
    received_at: StrictStr
    verdict_id: StrictStr | None = None
    post: dict[str, Any] | None = None

    _received = field_validator("received_at")(classmethod(lambda cls, v: _instant(v)))


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
    )


def parse_notice(raw: bytes | None, max_bytes: int) -> tuple[Notice, Post]:
    """Decode a notice and its post; raises InvalidRecord."""
    obj = load_object(raw, max_bytes, MAX_DEPTH + 1)
    try:
        notice = Notice.model_validate(obj)
        return notice, Post.model_validate(notice.post)
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid notice: {_errors(exc)}", "schema") from exc


def parse_appeal(raw: bytes | None, max_bytes: int) -> Appeal:
    """Decode an appeal; raises InvalidRecord."""
    obj = load_object(raw, max_bytes, MAX_DEPTH + 1)
    try:
        appeal = Appeal.model_validate(obj)
        if appeal.post is not None:
            post = Post.model_validate(appeal.post)
            if post.post_id != appeal.post_id:
                raise InvalidRecord("the appeal's post has another post_id", "schema")
        return appeal
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid appeal: {_errors(exc)}", "schema") from exc
