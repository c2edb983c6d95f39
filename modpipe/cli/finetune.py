"""`modpipe finetune`: a decoder LM as a LoRA-tuned multi-label classifier over the policy's
categories, saved for `vllm serve --runner pooling` (see modpipe/quality/finetune.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from modpipe.cli.progress import progress_bars
from modpipe.core.settings import Settings
from modpipe.quality.finetune import FinetuneOptions, finetune, load_examples, serve_command


def cmd_finetune(settings: Settings, args: argparse.Namespace) -> int:
    categories = list(settings.policy.categories)
    examples = load_examples(args.data, categories, settings.policy.cpu_category)
    opts = FinetuneOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        seed=args.seed,
        dtype=args.dtype,
    )
    with progress_bars() as progress:
        report = finetune(args.base, examples, categories, args.out, opts, progress)
    summary = {k: v for k, v in report.items() if k not in ("losses", "probe_scores")}
    print(json.dumps(summary, indent=2))
    print(f"serve: {serve_command(args.out, args.max_length)}")
    print(f"settings for the vllm-classify backend: {args.out / 'modpipe.yaml'}")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("finetune", help="LoRA-tune a decoder LM as tier 1 (needs [finetune])")
    s.add_argument("--base", required=True, help="a local model directory or hub name")
    s.add_argument("--data", type=Path, required=True, help="JSONL: text, label, categories")
    s.add_argument("--out", type=Path, required=True, help="directory to write")
    s.add_argument("--epochs", type=float, default=1.0)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--learning-rate", type=float, default=2e-4)
    s.add_argument("--max-length", type=int, default=256, help="tokens per text")
    s.add_argument("--lora-rank", type=int, default=16)
    s.add_argument("--seed", type=int, default=13)
    s.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    s.set_defaults(func=cmd_finetune)
