"""`modpipe promote CANDIDATE.yaml`: the gate before a candidate becomes the active settings."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings, config_path, packaged_config
from modpipe.quality.promote import Verdict, check_lines, load_heldout, promote


def run_promote(
    production: Settings,
    candidate_path: Path,
    data_path: Path,
    shadow_path: Path | None,
    active: Path,
    dry_run: bool,
) -> tuple[Verdict, bool]:
    """The gate's verdict, and whether the candidate was written to `active`."""
    data = load_heldout(data_path)
    shadow: dict[str, Any] | None = None
    if shadow_path is not None:
        try:
            shadow = json.loads(shadow_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read shadow report {shadow_path}: {exc}") from None
    return asyncio.run(
        promote(
            production, candidate_path, data, shadow, active, source=str(data_path), dry_run=dry_run
        )
    )


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
        print("\n".join(check_lines(verdict.checks)))
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
