"""The Transparency Database's validation rules for one statement of reasons.

What `POST /api/v1/statement(s)` refuses with a 422, as ../shared/DSA.md states them
(required fields, enumerations, lengths, dates, the puid pattern, conditional fields).
Used by the statement builder's tests, the test server (tests/dsa_database_server.py)
and, before sending, the submitter: a statement that would be refused never blocks
the batch it is in.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from modpipe.core import dsa

_PUID = re.compile(dsa.PUID_PATTERN)
_LANG = re.compile(r"^[A-Z]{2}$")
_URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
_ENUMS: dict[str, tuple[str, ...]] = {
    "decision_monetary": dsa.DECISION_MONETARY,
    "decision_provision": dsa.DECISION_PROVISION,
    "decision_account": dsa.DECISION_ACCOUNT,
    "account_type": dsa.ACCOUNT_TYPE,
    "decision_ground": dsa.DECISION_GROUND,
    "incompatible_content_illegal": dsa.YES_NO,
    "category": dsa.CATEGORY,
    "source_type": dsa.SOURCE_TYPE,
    "automated_detection": dsa.YES_NO,
    "automated_decision": dsa.AUTOMATED_DECISION,
}
_ARRAYS: dict[str, tuple[str, ...]] = {
    "decision_visibility": dsa.DECISION_VISIBILITY,
    "content_type": dsa.CONTENT_TYPE,
    "category_addition": dsa.CATEGORY,
    "category_specification": dsa.KEYWORD,
    "territorial_scope": dsa.EEA,
}
_LENGTHS = {
    "decision_visibility_other": 500,
    "decision_monetary_other": 500,
    "decision_ground_reference_url": 500,
    "illegal_content_legal_ground": 500,
    "illegal_content_explanation": 2000,
    "incompatible_content_ground": 500,
    "incompatible_content_explanation": 2000,
    "content_type_other": 500,
    "category_specification_other": 500,
    "decision_facts": 5000,
    "source_identity": 500,
    "puid": dsa.PUID_MAX,
}
_DATES = {
    "content_date": (date(2000, 1, 1), date(2038, 1, 1)),
    "application_date": (date(2020, 1, 1), date(2038, 1, 1)),
    "end_date_visibility_restriction": (date.min, date(2038, 1, 1)),
    "end_date_monetary_restriction": (date.min, date(2038, 1, 1)),
    "end_date_service_restriction": (date.min, date(2038, 1, 1)),
    "end_date_account_restriction": (date.min, date(2038, 1, 1)),
}
REQUIRED = (
    "decision_ground",
    "content_type",
    "category",
    "territorial_scope",
    "content_date",
    "application_date",
    "decision_facts",
    "source_type",
    "automated_detection",
    "automated_decision",
    "puid",
)
DECISIONS = ("decision_visibility", "decision_monetary", "decision_provision", "decision_account")
KNOWN = frozenset([*_ENUMS, *_ARRAYS, *_LENGTHS, *_DATES, *REQUIRED])


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != []


def _check_value(name: str, value: Any, out: dict[str, list[str]]) -> None:
    if name in _ENUMS and (not isinstance(value, str) or value not in _ENUMS[name]):
        out.setdefault(name, []).append(f"The selected {name} is invalid.")
    if name in _ARRAYS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            out.setdefault(name, []).append(f"The {name} must be an array.")
        elif set(value) - set(_ARRAYS[name]):
            out.setdefault(name, []).append(f"The selected {name} is invalid.")
    if name in _LENGTHS and (not isinstance(value, str) or len(value) > _LENGTHS[name]):
        out.setdefault(name, []).append(
            f"The {name} must be a string of at most {_LENGTHS[name]} characters."
        )
    if name in _DATES:
        low, high = _DATES[name]
        try:
            day = date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
        except ValueError:
            day = None
        if day is None:
            out.setdefault(name, []).append(f"The {name} does not match the format Y-m-d.")
        elif not low <= day <= high:
            out.setdefault(name, []).append(f"The {name} must be between {low} and {high}.")


def problems(statement: Any) -> dict[str, list[str]]:
    """The database's errors for `statement`, by field (empty: it would be accepted)."""
    if not isinstance(statement, dict):
        return {"statement": ["The statement must be an object."]}
    out: dict[str, list[str]] = {}
    for name in REQUIRED:
        if not _present(statement.get(name)):
            out.setdefault(name, []).append(f"The {name} field is required.")
    if not any(_present(statement.get(d)) for d in DECISIONS):
        out.setdefault("decision_visibility", []).append(
            "One of decision_visibility, decision_monetary, decision_provision or "
            "decision_account is required."
        )
    for name, value in statement.items():
        if value is not None:
            _check_value(name, value, out)
    puid = statement.get("puid")
    if isinstance(puid, str) and puid and not _PUID.match(puid):
        out.setdefault("puid", []).append("The puid format is invalid.")
    url = statement.get("decision_ground_reference_url")
    if isinstance(url, str) and url and not _URL.match(url):
        out.setdefault("decision_ground_reference_url", []).append(
            "The decision_ground_reference_url must be a valid URL."
        )
    lang = statement.get("content_language")
    if lang is not None and (not isinstance(lang, str) or not _LANG.match(lang)):
        out.setdefault("content_language", []).append("The selected content_language is invalid.")
    _conditional(statement, out)
    return out


def _conditional(s: dict[str, Any], out: dict[str, list[str]]) -> None:
    ground = s.get("decision_ground")
    needs = {
        dsa.ILLEGAL: ("illegal_content_legal_ground", "illegal_content_explanation"),
        dsa.INCOMPATIBLE: ("incompatible_content_ground", "incompatible_content_explanation"),
    }.get(ground if isinstance(ground, str) else "", ())
    for name in needs:
        if not _present(s.get(name)):
            out.setdefault(name, []).append(f"The {name} field is required for {ground}.")
    visibility, content = s.get("decision_visibility"), s.get("content_type")
    others = (
        (
            "decision_visibility_other",
            isinstance(visibility, list) and "DECISION_VISIBILITY_OTHER" in visibility,
        ),
        ("decision_monetary_other", s.get("decision_monetary") == "DECISION_MONETARY_OTHER"),
        ("content_type_other", isinstance(content, list) and "CONTENT_TYPE_OTHER" in content),
    )
    for name, needed in others:
        if needed and not _present(s.get(name)):
            out.setdefault(name, []).append(f"The {name} field is required for OTHER.")
    content_day, applied = s.get("content_date"), s.get("application_date")
    if isinstance(content_day, str) and isinstance(applied, str) and content_day > applied:
        out.setdefault("content_date", []).append(
            "The content_date must be a date before or equal to application_date."
        )
