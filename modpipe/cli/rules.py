"""`modpipe rules check RULES` and `modpipe rules test RULES POSTS.jsonl` (a dry run)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from modpipe.core.errors import ConfigError
from modpipe.core.records import Post
from modpipe.core.settings import Settings
from streams.rules_book import RuleBook, load_rules
from streams.rules_dry import DryRun, dry_run

EXAMPLE_CHARS = 100


def read_posts(path: Path) -> list[Post]:
    """Posts from a JSONL file (the `posts` topic's format); a bad line is an error."""
    posts: list[Post] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            posts.append(Post.model_validate(json.loads(line)))
        except ValueError as exc:
            raise ConfigError(f"{path}:{n}: not a post: {exc}") from None
    return posts


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXAMPLE_CHARS else flat[: EXAMPLE_CHARS - 1] + "…"


def report(
    book: RuleBook, posts: list[Post], new: DryRun, old: DryRun | None, examples: int
) -> dict[str, Any]:
    """The dry run as data: per rule hits with examples, and the outcomes that change."""
    rules = []
    for rule in book.rules:
        hit = new.hits.get(rule.id, [])
        decided = sum(1 for o in new.outcomes if o.rule is rule)
        rules.append(
            {
                "rule": rule.id,
                "action": rule.action,
                "kind": rule.match.kind,
                "hits": len(hit),
                "decided": decided,
                "examples": [
                    {"post_id": posts[i].post_id, "text": _short(posts[i].text)}
                    for i in hit[:examples]
                ],
            }
        )
    changes: Counter[tuple[str, str]] = Counter()
    changed: list[dict[str, str]] = []
    if old is not None:
        for post, before, after in zip(posts, old.outcomes, new.outcomes, strict=True):
            if before.label != after.label:
                changes[before.label, after.label] += 1
                if len(changed) < examples * 4:
                    changed.append(
                        {
                            "post_id": post.post_id,
                            "before": before.label,
                            "after": after.label,
                            "text": _short(post.text),
                        }
                    )
    return {
        "version": book.version,
        "posts": len(posts),
        "decided_by_rules": sum(1 for o in new.outcomes if o.rule is not None),
        "rules": rules,
        "changed": sum(changes.values()),
        "changes": [{"before": b, "after": a, "posts": n} for (b, a), n in changes.most_common()],
        "changed_examples": changed,
    }


def run_test(
    settings: Settings, rules: Path, posts_path: Path, against: Path | None, examples: int
) -> dict[str, Any]:
    """Dry-run `rules` on the posts, against `against` (default: today's `rules.path`)."""
    categories = set(settings.policy.categories)
    book = load_rules(rules, categories)
    posts = read_posts(posts_path)
    old_path = against if against is not None else settings.rules.path
    old = dry_run(load_rules(old_path, categories), posts) if old_path is not None else None
    if old is None:  # no rules today: every post goes to tier 1
        old = dry_run(RuleBook("none", [], ""), posts)
    return report(book, posts, dry_run(book, posts), old, examples)


def _print(result: dict[str, Any]) -> None:
    print(
        f"rules version {result['version']}: {result['decided_by_rules']} of "
        f"{result['posts']} posts decided by rules"
    )
    print(f"{'rule':<24} {'action':<9} {'kind':<16} {'hits':>7} {'decided':>8}")
    for r in result["rules"]:
        print(f"{r['rule']:<24} {r['action']:<9} {r['kind']:<16} {r['hits']:>7} {r['decided']:>8}")
        for ex in r["examples"]:
            print(f"    {ex['post_id']}: {ex['text']}")
    print(f"\nverdicts that would change: {result['changed']}")
    for c in result["changes"]:
        print(f"  {c['before']:>28} -> {c['after']:<28} {c['posts']}")
    for ex in result["changed_examples"]:
        print(f"    {ex['post_id']}: {ex['before']} -> {ex['after']}: {ex['text']}")


def cmd_rules(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "check":
        book = load_rules(args.rules, set(settings.policy.categories))
        print(f"{args.rules}: valid, version {book.version}, {len(book.rules)} rules")
        return 0
    result = run_test(settings, args.rules, args.posts, args.against, args.examples)
    if args.json:
        print(json.dumps(result))
    else:
        _print(result)
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("rules", help="check a rule file, or dry-run it on a file of posts")
    actions = s.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate and compile a rule file")
    check.add_argument("rules", type=Path)
    test = actions.add_parser(
        "test", help="dry run: per rule hits and examples, and the verdicts that would change"
    )
    test.add_argument("rules", type=Path)
    test.add_argument("posts", type=Path, help="JSONL, one post per line")
    test.add_argument(
        "--against", type=Path, default=None, help="the rules to compare with (default: rules.path)"
    )
    test.add_argument("--examples", type=int, default=3, help="examples per rule")
    test.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_rules)
