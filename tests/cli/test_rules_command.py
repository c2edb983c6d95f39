"""`modpipe rules test`: per rule hits with examples, and the verdicts that would change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modpipe.cli import main

OLD = """
version: old
rules:
  - {id: slurs, action: block, category: harassment, match: {terms: [idiot]}}
"""
NEW = """
version: new
rules:
  - {id: slurs, action: block, category: harassment, match: {terms: [idiot, moron]}}
  - {id: vip, action: allow, match: {authors: [newsroom]}}
  - {id: flood, action: review, match: {rate: {posts: 2, per_s: 60}}}
  - {id: hint, action: score, category: illicit, match: {regex: ['\\bpills?\\b']}}
"""


def write(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "old.yaml").write_text(OLD)
    (tmp_path / "new.yaml").write_text(NEW)
    posts = [
        {"post_id": "p1", "text": "you idiot"},
        {"post_id": "p2", "text": "you moron"},
        {"post_id": "p3", "text": "breaking news", "author_id": "newsroom"},
        {"post_id": "p4", "text": "cheap pills", "author_id": "x"},
        {"post_id": "p5", "text": "more pills", "author_id": "x"},
        {"post_id": "p6", "text": "and more", "author_id": "x"},
        {"post_id": "p7", "text": "hello"},
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in posts) + "\n")
    return tmp_path / "old.yaml", tmp_path / "new.yaml", path


def test_dry_run_reports_hits_and_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, posts = write(tmp_path)
    assert main(["rules", "test", str(new), str(posts), "--against", str(old), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    hits = {r["rule"]: (r["hits"], r["decided"]) for r in result["rules"]}
    assert hits == {"slurs": (2, 2), "vip": (1, 1), "flood": (1, 1), "hint": (2, 0)}
    slurs = next(r for r in result["rules"] if r["rule"] == "slurs")
    assert [e["post_id"] for e in slurs["examples"]] == ["p1", "p2"]
    changes = {(c["before"], c["after"]): c["posts"] for c in result["changes"]}
    assert changes == {
        ("tier 1", "block by slurs"): 1,
        ("tier 1", "allow by vip"): 1,
        ("tier 1", "review by flood"): 1,
    }
    assert result["changed"] == 3


def test_the_text_report_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, new, posts = write(tmp_path)
    assert main(["rules", "check", str(new)]) == 0
    assert "valid, version new, 4 rules" in capsys.readouterr().out
    assert main(["rules", "test", str(new), str(posts)]) == 0  # against no rules today
    out = capsys.readouterr().out
    assert "4 of 7 posts decided by rules" in out
    assert "verdicts that would change: 4" in out


def test_an_invalid_rule_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text("version: x\nrules: [{id: a, action: nuke}]\n")
    assert main(["rules", "check", str(tmp_path / "bad.yaml")]) == 2
    assert "action" in capsys.readouterr().err
