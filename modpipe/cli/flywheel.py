"""`modpipe flywheel`: replay the learning loop on labelled JSONL (see
modpipe/quality/flywheel.py).

Its frontier is a label oracle (modpipe/quality/label_oracle.py): an OpenAI-compatible
endpoint that answers each escalated post with its label from `--data`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.settings import Settings, config_path
from modpipe.quality.datasets import Labelled, load_labelled
from modpipe.quality.flywheel import FlywheelOptions, run_flywheel
from modpipe.quality.label_oracle import label_oracle
from modpipe.quality.promote import Heldout, check_lines, load_heldout

COLUMNS = (
    ("round", "{:>5}"),
    ("auroc", "{:>7.4f}"),
    ("auprc", "{:>7.4f}"),
    ("auto_error_rate", "{:>15.4f}"),
    ("escalation_rate", "{:>15.4f}"),
    ("tier1_share_at_5pct", "{:>19.4f}"),
    ("frontier_calls", "{:>14}"),
    ("frontier_cost_usd", "{:>17.4f}"),
)


async def _replay(
    settings: Settings,
    base: Path,
    data: Labelled,
    evalset: Labelled,
    heldout: Heldout | None,
    opts: FlywheelOptions,
    quiet: bool,
) -> list[dict[str, Any]]:
    category = settings.policy.cpu_category
    answers = {t: [category] if y else [] for t, y in zip(data.texts, data.labels, strict=True)}
    async with label_oracle(answers) as server:
        if not quiet:
            print(
                " ".join(
                    f"{name:>{len(fmt.format(0)) if name != 'round' else 5}}"
                    for name, fmt in COLUMNS
                )
            )
        with progress_bars() as progress:
            return await run_flywheel(
                base,
                data,
                evalset,
                server.url,
                opts,
                (lambda _: None) if quiet else _row,
                progress,
                heldout,
            )


def _row(result: dict[str, Any]) -> None:
    print(" ".join(fmt.format(result[name]) for name, fmt in COLUMNS), flush=True)
    if result.get("gate"):  # the round's retrained model before the promotion gate
        verdict = "promoted" if result["promoted"] else "refused (the active model stays)"
        lines = [f"      {line}" for line in check_lines(result["gate"])]
        print("\n".join([f"      candidate {verdict}", *lines]), flush=True)


def cmd_flywheel(settings: Settings, args: argparse.Namespace) -> int:
    for chatty in ("httpx", "httpx2", "aiohttp.access", "openai"):  # a line per frontier call
        logging.getLogger(chatty).setLevel(logging.WARNING)
    data, evalset = load_labelled(args.data), load_labelled(args.eval)
    # JSONL rows may carry the slices the gate judges (categories, lang, surface).
    heldout = load_heldout(args.eval) if args.eval.suffix == ".jsonl" else None
    opts = FlywheelOptions(
        rounds=args.rounds,
        slice_size=args.slice,
        escalation_rate=args.escalation_rate,
        audit_rate=args.audit_rate,
        out_dir=args.out or settings.learning.out_dir / "flywheel",
        prior=not args.no_prior,
    )
    rounds = asyncio.run(
        _replay(settings, config_path(args.config), data, evalset, heldout, opts, args.json)
    )
    if args.json:
        print(json.dumps({"rounds": rounds}))
    else:
        print(
            f"models, datasets, candidates and rounds.json under {opts.out_dir}; "
            f"the settings in force at the end: {opts.out_dir / 'active.yaml'}"
        )
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("flywheel", help="replay the learning loop on labelled JSONL")
    s.add_argument("--data", type=Path, required=True, help="the stream: JSONL with text and label")
    s.add_argument("--eval", type=Path, required=True, help="held-out JSONL with text and label")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--slice", type=int, default=3000, help="posts per round (at most)")
    s.add_argument(
        "--escalation-rate", type=float, default=0.2, help="bands are recalibrated to this"
    )
    s.add_argument(
        "--audit-rate", type=float, default=0.1, help="share of auto-decided posts reviewed"
    )
    s.add_argument(
        "--no-prior",
        action="store_true",
        help="n-gram model alone, not stacked on the packaged one",
    )
    s.add_argument("--out", type=Path, help="default: learning.out_dir/flywheel")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_flywheel)
