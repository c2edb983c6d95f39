"""Rule files: validation refuses what is wrong, each match kind hits what it should."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.rules_book import RulesInvalid, compile_rules, load_rules

BASE = Path(".")


def book(text: str, base: Path = BASE):  # type: ignore[no-untyped-def]
    return compile_rules(text.encode(), base, {"hate", "spam", "harassment"})


def hits(b, text: str, author: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    return [b.rules[i].id for i in b.match(text, author)]


def test_terms_with_word_boundaries_and_folds() -> None:
    b = book(
        """
version: "1"
rules:
  - {id: t, action: block, category: harassment, match: {terms: [idiot, "total moron"]}}
"""
    )
    assert hits(b, "you IDIOT!") == ["t"]
    assert hits(b, "you 1d10t") == ["t"]
    assert hits(b, "you \u0456d\u0456\u043et") == ["t"]  # Cyrillic look-alikes
    assert hits(b, "a Total   Moron") == ["t"]
    assert hits(b, "idiotic idiots") == []  # inside longer words: no hit


def test_regex_domains_authors_known() -> None:
    b = book(
        """
version: "2"
rules:
  - {id: re, action: review, match: {regex: 'wire \\$?\\d{3,} (usd|dollars)'}}
  - {id: dom, action: block, category: spam, match: {domains: [evil.example]}}
  - {id: psl, action: block, category: spam, match: {domains: [scam.co.uk]}}
  - {id: deny, action: block, category: spam, match: {authors: [bot-7]}}
  - {id: known, action: block, category: spam, match: {texts: ["Buy cheap pills now"]}}
"""
    )
    assert hits(b, "please wire 5000 dollars") == ["re"]
    assert hits(b, "see https://a.b.evil.example/x?y") == ["dom"]
    assert hits(b, "see evil.example.org") == []  # another registered domain
    assert hits(b, "go to http://login.scam.co.uk now") == ["psl"]
    assert hits(b, "hi", "bot-7") == ["deny"]
    assert hits(b, "  BUY cheap   pills now ") == ["known"]


def test_near_duplicates_with_small_edits() -> None:
    spam = "congratulations you have won a free iphone, click the link below to claim it today"
    b = book(
        f"""
version: "3"
rules:
  - id: wave
    action: block
    category: spam
    match: {{near_duplicates: {{texts: ["{spam}"], threshold: 0.6}}}}
"""
    )
    assert hits(b, spam.replace("free", "fr3e").replace("today", "now!!")) == ["wave"]
    assert hits(b, "a completely different post about the weather in lisbon today") == []


def test_lists_from_files(tmp_path: Path) -> None:
    (tmp_path / "terms.txt").write_text("# slurs\nfoo\nbar baz\n")
    (tmp_path / "rules.yaml").write_text(
        "version: a\nrules:\n  - {id: l, action: block, category: hate,"
        " match: {terms_file: terms.txt}}\n"
    )
    b = load_rules(tmp_path / "rules.yaml")
    assert hits(b, "bar  baz!") == ["l"]
    assert b.files == [tmp_path / "terms.txt"]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("version: 1\nrules: [{id: x, action: nuke, match: {terms: [a]}}]", "action"),
        ("version: '1'\nrules: [{id: x, action: block, match: {terms: [a]}}]", "category"),
        ("version: '1'\nrules: [{id: x, action: allow, match: {}}]", "one kind"),
        (
            "version: '1'\nrules: [{id: x, action: allow, match: {terms: [a], regex: [b]}}]",
            "one kind",
        ),
        ("version: '1'\nrules: [{id: x, action: review, match: {regex: ['(a)\\1']}}]", "x"),
        ("version: '1'\nrules: [{id: x, action: review, match: {regex: ['(?=a)b']}}]", "x"),
        (
            "version: '1'\nrules: [{id: x, action: block, category: nope, match: {terms: [a]}}]",
            "unknown categories",
        ),
        ("version: '1'\nrules: [{id: x, action: allow, match: {hashes: [zz]}}]", "SHA-256"),
        (
            "version: '1'\nrules: [{id: x, action: allow, match: {terms: [a]}},"
            " {id: x, action: allow, match: {terms: [b]}}]",
            "twice",
        ),
        ("{[", "YAML"),
    ],
)
def test_invalid_files_are_refused(text: str, why: str) -> None:
    with pytest.raises(RulesInvalid, match=why):
        book(text)


def test_hostile_regex_runs_in_linear_time() -> None:
    # Catastrophic for a backtracking engine: (x+x+)+y on 'x' * n never finishes there.
    b = book("version: '1'\nrules: [{id: evil, action: review, match: {regex: ['(x+x+)+y']}}]")
    assert hits(b, "x" * 50_000) == []  # returns at all: a backtracking engine would not
