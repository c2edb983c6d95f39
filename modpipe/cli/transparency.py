"""`modpipe transparency report --from D --to D [--out DIR]`: the DSA transparency report.

Reads the topics, writes the Annex I CSVs, a plain-language summary and a chart
(docs/compliance.md), and prints where they are.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import date
from pathlib import Path
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.errors import ConfigError
from modpipe.core.settings import Settings


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from modpipe.compliance.report import collect, compute, write

    if args.start > args.end:
        raise ConfigError(f"--from {args.start} is after --to {args.end}")
    if settings.policy.dsa is None:
        raise ConfigError("the policy file has no `dsa` mapping: the report needs one")
    with progress_bars() as progress:  # on stderr, and only on a terminal
        history = asyncio.run(collect(settings, progress=progress))
    report = compute(history, args.start, args.end, settings.policy)
    out = args.out or Path(f"transparency-{args.start}-{args.end}")
    for path in write(report, out):
        print(path)
    return 0


def register(sub: Any) -> None:
    tr = sub.add_parser("transparency", help="the DSA transparency report (Annex I CSVs)")
    actions = tr.add_subparsers(dest="action", required=True)
    p = actions.add_parser("report", help="write the report for a period from the topics")
    p.add_argument("--from", dest="start", type=date.fromisoformat, required=True, metavar="D")
    p.add_argument("--to", dest="end", type=date.fromisoformat, required=True, metavar="D")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the files (default: transparency-FROM-TO)")  # fmt: skip
    p.set_defaults(func=cmd_report)
