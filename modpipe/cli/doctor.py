"""`modpipe doctor`: what a start needs, checked from the effective settings, one line each."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from modpipe.core.settings import Settings
from modpipe.doctor import run_doctor


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    findings = asyncio.run(run_doctor(settings))
    if args.json:
        print(json.dumps([_row(f) for f in findings]))
    else:
        for finding in findings:
            print(finding.line())
    failed = sum(f.status == "FAIL" for f in findings)
    if not args.json:
        print(f"{failed} to fix" if failed else "nothing to fix")
    return 1 if failed else 0


def _row(finding: Any) -> dict[str, str]:
    return {"status": finding.status, "item": finding.item, "text": finding.text}


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check what a start needs, from the effective settings")
    p.add_argument("--json", action="store_true", help="one JSON list of findings")
    p.set_defaults(func=cmd_doctor)
