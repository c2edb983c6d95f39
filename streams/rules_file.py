"""A rule file's schema (docs/rules.md): the version and the rules, each with one kind of
match, an action and an optional expiry. Validation only; `streams.rules_book` compiles a
validated file for matching.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

RuleAction = Literal["block", "allow", "review", "escalate", "score"]
MatchKind = Literal["terms", "regex", "domains", "authors", "known", "near_duplicates", "rate"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NearDuplicates(_Strict):
    texts: list[str] = Field(min_length=1)
    threshold: float = Field(0.7, gt=0, le=1)


class Rate(_Strict):
    posts: int = Field(ge=1)
    per_s: float = Field(gt=0, le=86400)


class Match(_Strict):
    """One kind of match per rule; list files are relative to the rule file."""

    terms: list[str] | None = None
    terms_file: Path | None = None
    regex: list[str] | None = None
    domains: list[str] | None = None
    authors: list[str] | None = None
    hashes: list[str] | None = None
    hashes_file: Path | None = None
    texts: list[str] | None = None
    near_duplicates: NearDuplicates | None = None
    rate: Rate | None = None

    @field_validator("regex", "terms", "domains", "authors", "texts", "hashes", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def kind(self) -> MatchKind:
        """The single kind of this match (validated)."""
        return _kinds(self)[0]

    @model_validator(mode="after")
    def _exactly_one(self) -> Match:
        kinds = _kinds(self)
        if len(kinds) != 1:
            raise ValueError(f"a rule matches one kind, got {kinds or 'none'}")
        return self


def _kinds(m: Match) -> list[MatchKind]:
    kinds: list[MatchKind] = []
    if m.terms is not None or m.terms_file is not None:
        kinds.append("terms")
    if m.regex is not None:
        kinds.append("regex")
    if m.domains is not None:
        kinds.append("domains")
    if m.authors is not None:
        kinds.append("authors")
    if m.hashes is not None or m.hashes_file is not None or m.texts is not None:
        kinds.append("known")
    if m.near_duplicates is not None:
        kinds.append("near_duplicates")
    if m.rate is not None:
        kinds.append("rate")
    return kinds


class Rule(_Strict):
    """One rule: what it matches, what it does, and until when."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    action: RuleAction
    category: str | None = None
    match: Match
    score: float = Field(0.5, ge=0, le=1)  # action `score`: added to the category's score
    expires: datetime | None = None
    note: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.action in ("block", "score") and self.category is None:
            raise ValueError(f"rule {self.id}: action {self.action} needs a category")
        if self.match.kind == "rate" and self.action not in ("review", "escalate", "block"):
            raise ValueError(f"rule {self.id}: a rate rule reviews, escalates or blocks")
        return self

    def active(self, now: datetime) -> bool:
        """False once the rule has expired."""
        if self.expires is None:
            return True
        expires = self.expires if self.expires.tzinfo else self.expires.replace(tzinfo=UTC)
        return now < expires


class RuleFile(_Strict):
    """The whole file: a version every verdict names, and the rules."""

    version: str = Field(min_length=1, max_length=128)
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleFile:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id} appears twice")
            seen.add(rule.id)
        return self
