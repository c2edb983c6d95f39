"""Statements of reasons (DSA Art. 17): one per restrictive decision, built from the verdict
and the policy file's `dsa` mapping.

A block is restrictive, whoever decided it: a machine tier, a reviewer after review, a
reviewer deciding an appeal (tier `human`, model `appeal:<outcome>`). Allow and review
verdicts are not. What the statement says about automation follows from the tier:

    tier small, frontier, cache, rules, fallback   decision FULLY
    tier human after review (the models scored it) decision PARTIALLY
    tier human with no scores (a flagger's notice) decision NOT_AUTOMATED
    tier human on an appeal                        decision NOT_AUTOMATED

Detection is automated (Yes) unless a notice reported the post (No, with the notice's
source type). No field
holds personal data: no author, no post text, no reviewer; `decision_facts` is a template
filled from the category, the tier and the policy version. The `puid` is derived from the
verdict's id, so the same decision always yields the same statement (and the database
refuses a second copy as a duplicate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from modpipe.core import dsa
from modpipe.core.records import Verdict, first_verdict_id
from modpipe.core.settings import DsaGround, DsaPolicy, Policy

MACHINE_TIERS = frozenset({"small", "frontier", "cache", "rules", "fallback"})
APPEAL_MODEL_PREFIX = "appeal:"
PUID_PREFIX = "modpipe-"

Source = Literal["voluntary", "notice", "trusted_flagger"]
_SOURCE_TYPE = {
    "voluntary": dsa.SOURCE_VOLUNTARY,
    "notice": dsa.SOURCE_NOTICE,
    "trusted_flagger": dsa.SOURCE_TRUSTED_FLAGGER,
}
_TIER_WORDS = {
    "small": "an automated classifier run by the service",
    "frontier": "a large language model instructed with the moderation policy",
    "cache": "automated means, repeating an earlier automated decision on identical content",
    "rules": "an automated rule",
    "fallback": "automated means",
}
_OTHER = DsaGround(
    decision_ground="DECISION_GROUND_INCOMPATIBLE_CONTENT",
    category="STATEMENT_CATEGORY_OTHER_VIOLATION_TC",
    ground="Terms and conditions",
    explanation="The content does not comply with the terms and conditions.",
)


@dataclass(frozen=True)
class Context:
    """What the verdict alone does not say: whether a notice reported the post."""

    source: Source = "voluntary"


def is_restrictive(verdict: Verdict) -> bool:
    """Whether the decision restricts the content (and so needs a statement of reasons)."""
    return verdict.action == "block"


def is_appeal_outcome(verdict: Verdict) -> bool:
    """An appeal's decision: a human verdict whose model names the appeal outcome."""
    return verdict.tier == "human" and verdict.model.startswith(APPEAL_MODEL_PREFIX)


def verdict_key(verdict: Verdict) -> str:
    """The verdict's id, or a stable one for a verdict written before ids existed."""
    if verdict.verdict_id:
        return verdict.verdict_id
    if verdict.tier != "human":
        return first_verdict_id(verdict.post_id)
    seed = f"{verdict.post_id}\0{verdict.model}\0{verdict.decided_at}".encode()
    return hashlib.sha256(b"verdict\0human\0" + seed).hexdigest()[:32]


def puid_for(verdict: Verdict) -> str:
    """The statement's platform unique id: stable per decision, never reused."""
    return PUID_PREFIX + verdict_key(verdict)


def automation(verdict: Verdict, context: Context) -> tuple[str, str]:
    """(automated_detection, automated_decision) for this decision."""
    detected = "No" if context.source != "voluntary" else "Yes"
    if verdict.tier in MACHINE_TIERS:
        return detected, dsa.FULLY
    if is_appeal_outcome(verdict) or not verdict.scores:
        return detected, dsa.NOT_AUTOMATED  # no model output was before the reviewer
    return detected, dsa.PARTIALLY


def _ordered(verdict: Verdict, mapping: DsaPolicy) -> list[tuple[str, DsaGround]]:
    # The most specific first: an illegality before a terms-and-conditions breach, then
    # the category the models scored highest.
    named = [c for c in dict.fromkeys(verdict.categories) if c in mapping.categories]
    named.sort(
        key=lambda c: (
            mapping.categories[c].decision_ground != dsa.ILLEGAL,
            -verdict.scores.get(c, 0.0),
            c,
        )
    )
    return [(c, mapping.categories[c]) for c in named]


def _facts(verdict: Verdict, names: list[str], decision: str, source: Source) -> str:
    what = ", ".join(names) if names else "a breach of the terms and conditions"
    how = {
        dsa.FULLY: f"The decision was taken by {_TIER_WORDS.get(verdict.tier, 'automated means')}"
        ", without human review.",
        dsa.PARTIALLY: "A human moderator took the decision after automated classification "
        "had flagged the content.",
        dsa.NOT_AUTOMATED: "A human moderator took the decision.",
    }[decision]
    if is_appeal_outcome(verdict):
        outcome = verdict.model[len(APPEAL_MODEL_PREFIX) :].replace("_", " ")
        how = (
            "A human moderator decided a complaint against an earlier decision on this "
            f"content (outcome: {outcome}); the restriction stands as stated here."
        )
    why = {
        "voluntary": "The content was reviewed on the service's own initiative.",
        "notice": "The content was reported through the notice and action mechanism.",
        "trusted_flagger": "The content was reported by a trusted flagger.",
    }[source]
    return (
        f"The content was found to be {what} under the moderation policy "
        f"(version {verdict.policy_version}). {why} {how} The restriction applies to this "
        "content item only."
    )


def build_statement(
    verdict: Verdict, policy: Policy, context: Context | None = None
) -> dict[str, Any] | None:
    """The statement of reasons for `verdict`, or None when the decision restricts nothing."""
    if not is_restrictive(verdict):
        return None
    if policy.dsa is None:
        raise ValueError("the policy file has no `dsa` mapping: statements need one")
    context = context or Context()
    mapping = policy.dsa
    ordered = _ordered(verdict, mapping) or [("", _OTHER)]
    main = ordered[0][1]
    detection, decision = automation(verdict, context)
    day = verdict.decided_at[:10]
    statement: dict[str, Any] = {
        "decision_visibility": [main.visibility],
        "decision_ground": main.decision_ground,
        "category": main.category,
        "content_type": list(mapping.content_type),
        "territorial_scope": list(mapping.territorial_scope),
        "content_date": day,
        "application_date": day,
        "decision_facts": _facts(verdict, [c for c, _ in ordered if c], decision, context.source),
        "source_type": _SOURCE_TYPE[context.source],
        "automated_detection": detection,
        "automated_decision": decision,
        "puid": puid_for(verdict),
    }
    if main.decision_ground == dsa.ILLEGAL:
        statement["illegal_content_legal_ground"] = main.ground
        statement["illegal_content_explanation"] = main.explanation
    else:
        statement["incompatible_content_ground"] = main.ground
        statement["incompatible_content_explanation"] = main.explanation
        if main.illegal is not None:
            statement["incompatible_content_illegal"] = main.illegal
    additions = sorted({g.category for _, g in ordered[1:]} - {main.category})
    if additions:
        statement["category_addition"] = additions
    keywords = sorted({k for _, g in ordered for k in g.keywords})
    if keywords:
        statement["category_specification"] = keywords
    if mapping.terms_url and main.decision_ground == dsa.INCOMPATIBLE:
        statement["decision_ground_reference_url"] = mapping.terms_url
    return statement
