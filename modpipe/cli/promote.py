"""`modpipe promote CANDIDATE.yaml`: the gate before a candidate becomes the active settings."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from classifiers import build_classifier
from modpipe.core.errors import ConfigError
from modpipe.core.records import now_rfc3339
from modpipe.core.settings import Settings, config_path, load_settings, packaged_config
from modpipe.quality.bands import score
from modpipe.quality.promote import Verdict, gate, load_heldout, write_active


async def _scores(settings: Settings, texts: list[str]) -> list[dict[str, float]]:
    classifier = build_classifier(settings)
    try:
        return await score(classifier, texts)
    finally:
        await classifier.aclose()


def run_promote(
    production: Settings,
    candidate_path: Path,
    data_path: Path,
    shadow_path: Path | None,
    active: Path,
    dry_run: bool,
) -> tuple[Verdict, bool]:
    """The gate's verdict, and whether the candidate was written to `active`."""
    candidate = load_settings(candidate_path)
    data = load_heldout(data_path)
    shadow: dict[str, Any] | None = None
    if shadow_path is not None:
        try:
            shadow = json.loads(shadow_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read shadow report {shadow_path}: {exc}") from None
    prod_scores = asyncio.run(_scores(production, data.texts))
    cand_scores = asyncio.run(_scores(candidate, data.texts))
    verdict = gate(
        production, candidate, data, prod_scores, cand_scores, shadow, production.promote
    )
    if not verdict.passed or dry_run:
        return verdict, False
    digest = hashlib.sha256(candidate_path.read_bytes()).hexdigest()[:16]
    write_active(
        candidate_path,
        active,
        f"promoted by `modpipe promote` at {now_rfc3339()} from {candidate_path} "
        f"(sha256 {digest}) on {data_path}",
    )
    return verdict, True


def cmd_promote(settings: Settings, args: argparse.Namespace) -> int:
    active = args.active or config_path(args.config)
    if active.resolve() == packaged_config().resolve():
        raise ConfigError("the active settings are the packaged defaults: name a file, --active")
    verdict, written = run_promote(
        settings, args.candidate, args.data, args.shadow, active, args.dry_run
    )
    if args.json:
        print(json.dumps({"passed": verdict.passed, "written": written, "checks": verdict.checks}))
    else:
        for c in verdict.checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['check']:<16} {c['detail']}")
        if written:
            print(f"promoted: {args.candidate} is now the active settings ({active})")
        elif verdict.passed:
            print("passed (dry run: nothing written)")
        else:
            print(f"refused: {args.candidate} was not promoted")
    return 0 if verdict.passed else 1


def register(sub: Any) -> None:
    s = sub.add_parser(
        "promote",
        help="gate a candidate settings file on evidence; write it as active if it passes",
    )
    s.add_argument("candidate", type=Path, help="the candidate's complete settings file")
    s.add_argument("--data", type=Path, required=True, help="held-out labelled JSONL")
    s.add_argument(
        "--shadow", type=Path, default=None, help="`modpipe shadow report --json` output"
    )
    s.add_argument(
        "--active", type=Path, default=None, help="the active settings file (default: --config)"
    )
    s.add_argument("--dry-run", action="store_true", help="judge only; write nothing")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_promote)
