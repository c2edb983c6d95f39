"""`modpipe dataset build`: labelled JSONL from what the pipeline decided (see
modpipe/quality/dataset.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.settings import Settings
from modpipe.quality.dataset import build, in_test, snapshot, write
from modpipe.quality.public import LOADERS, load_public


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    with progress_bars() as progress:
        snap = asyncio.run(snapshot(settings, progress))
    data = build(snap, settings)
    out: Path = args.out or settings.learning.out_dir / "dataset"
    paths = write(data, out)
    print(json.dumps(data.counts, indent=2))
    for name, path in paths.items():
        print(f"{name:<8} {path}")
    return 0


def cmd_public(settings: Settings, args: argparse.Namespace) -> int:
    rows = load_public(args.data_dir, args.sets)
    args.out.mkdir(parents=True, exist_ok=True)
    halves: dict[str, list[str]] = {"stream": [], "eval": []}
    for row in rows:
        line = {"text": row.text, "label": row.label, "categories": list(row.categories)}
        half = "eval" if in_test(row.text, args.eval_share, salt="eval") else "stream"
        halves[half].append(json.dumps({**line, "source": row.source, "origin": row.origin}))
    for half, lines in halves.items():
        random.Random(half).shuffle(lines)  # the loaders emit set after set; a stream mixes
        (args.out / f"{half}.jsonl").write_text("".join(f"{x}\n" for x in lines))
        print(f"{half:<7} {len(lines):>6} rows  {args.out / f'{half}.jsonl'}")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("dataset", help="labelled data from the pipeline's own decisions")
    actions = s.add_subparsers(dest="action", required=True)
    b = actions.add_parser(
        "build", help="join escalations, verdicts and reviewers' labels from Kafka into JSONL"
    )
    b.add_argument(
        "--out", type=Path, help="directory to write (default: learning.out_dir/dataset)"
    )
    b.set_defaults(func=cmd_build)
    p = actions.add_parser(
        "public", help="the public sets mapped onto the policy, as stream and eval JSONL"
    )
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--sets", nargs="*", choices=sorted(LOADERS), help="default: all")
    p.add_argument("--eval-share", type=float, default=0.5, help="by a hash of the text")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_public)
