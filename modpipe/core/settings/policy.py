"""The policy (categories, the DSA grounds) and the rules, shadow and promotion stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from modpipe.core import dsa
from modpipe.core.settings.base import Section


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
