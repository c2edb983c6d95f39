"""`modpipe finetune`: a decoder LM (Llama-3.1-8B, Qwen2.5-7B or similar) fine-tuned as a
multi-label classifier over the policy's categories, for the `vllm-classify` backend.

The base model gets a sequence-classification head (one logit per policy category, read at
the last token, trained with binary cross-entropy: `problem_type:
multi_label_classification`); LoRA adapters on the attention and MLP projections and the
new head are trained, then merged, so the saved directory is a plain
`*ForSequenceClassification` checkpoint with the tokenizer and `id2label` = the policy's
categories. `vllm serve DIR --runner pooling --max-model-len MAX_LENGTH` serves it on
`/classify`; `modpipe.yaml` in the directory holds the matching `classifier` settings:
`model_dir` points at the directory itself, so the backend reads labels (`id2label`) and
activation (`problem_type`) from the same config.json vLLM loads, never a second copy.
Serving with the training `max_length` as the context makes vLLM truncate a long post
where training did.

Needs the `finetune` extra (torch, transformers, peft, accelerate), imported only here.
A post labelled violating without categories counts as `policy.cpu_category`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from modpipe.core.errors import ConfigError
from modpipe.core.progress import Progress, no_progress

log = logging.getLogger(__name__)

PROBE = 8  # examples whose scores are kept to check a reload against
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class FinetuneOptions:
    """Training knobs; the defaults suit a 7-8B model on one GPU."""

    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 2e-4
    max_length: int = 256
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 13
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on CPU


@dataclass(frozen=True)
class Example:
    """One training text and its multi-hot target over the policy's categories."""

    text: str
    target: list[float]


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(
            "modpipe finetune needs the fine-tuning stack: pip install 'modpipe[finetune]'"
        ) from exc
    return torch


def load_examples(path: Path, categories: list[str], default_category: str) -> list[Example]:
    """JSONL rows with `text`, `label` and optional `categories` (as `modpipe dataset build`
    writes them) as multi-hot targets; categories outside the policy are errors."""
    if not path.exists():
        raise ConfigError(f"no such data file: {path}")
    index = {c: i for i, c in enumerate(categories)}
    out = []
    for n, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if "text" not in row or "label" not in row:
            raise ConfigError(f"{path}: row {n} lacks `text` or `label`")
        target = [0.0] * len(categories)
        if int(row["label"]):
            for c in row.get("categories") or [default_category]:
                if c not in index:
                    raise ConfigError(f"{path}: row {n} names {c!r}, not a policy category")
                target[index[c]] = 1.0
        if str(row["text"]).strip():
            out.append(Example(str(row["text"]), target))
    if not out:
        raise ConfigError(f"{path}: no rows")
    return out


def _dtype(torch: Any, name: str) -> Any:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


def load_for_training(base: str | Path, categories: list[str], opts: FinetuneOptions) -> Any:
    """The base model with a fresh multi-label head and LoRA adapters, and its tokenizer."""
    torch = _torch()
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base),
        num_labels=len(categories),
        id2label=dict(enumerate(categories)),
        label2id={c: i for i, c in enumerate(categories)},
        problem_type="multi_label_classification",
        dtype=_dtype(torch, opts.dtype),
    )
    # The head reads the last non-pad token, found through pad_token_id.
    model.config.pad_token_id = tokenizer.pad_token_id
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in present]
    if not targets:
        raise ConfigError(f"{base}: none of the LoRA target modules {LORA_TARGETS} found")
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # also trains and saves the new `score` head
        r=opts.lora_rank,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=targets,
    )
    return get_peft_model(model, lora), tokenizer


def finetune(
    base: str | Path,
    examples: list[Example],
    categories: list[str],
    out: Path,
    opts: FinetuneOptions,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Train, merge the adapters, save `out`; returns what was measured (also in
    `out/finetune.json`), with the merged model's probabilities on the first examples so
    that a reload can be checked against them."""
    torch = _torch()
    torch.manual_seed(opts.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_for_training(base, categories, opts)
    model.to(device).train()
    steps, losses, tokens, seconds = _train(
        torch, model, tokenizer, examples, opts, device, progress
    )
    merged = model.merge_and_unload()
    merged.eval()
    probe = [e.text for e in examples[:PROBE]]
    probe_scores = _probabilities(torch, merged, tokenizer, probe, opts.max_length, device)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    report = {
        "base": str(base),
        "examples": len(examples),
        "steps": steps,
        "first_loss": losses[0],
        "last_loss": sum(losses[-5:]) / len(losses[-5:]),
        "losses": [round(x, 5) for x in losses],
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "device": device,
        "categories": categories,
        "probe_texts": probe,
        "probe_scores": probe_scores,
        "options": asdict(opts),
    }
    (out / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "modpipe.yaml").write_text(serving_settings(out, opts.max_length))
    return report


def _train(
    torch: Any,
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    opts: FinetuneOptions,
    device: str,
    progress: Progress,
) -> tuple[int, list[float], int, float]:
    """AdamW over reshuffled batches with a linear decay: (steps, losses, tokens, seconds)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=opts.learning_rate)
    steps = max(1, math.ceil(len(examples) * opts.epochs / opts.batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / (steps + 1))
    order: list[Example] = []
    rng = random.Random(opts.seed)
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    for step in range(steps):
        if len(order) < opts.batch_size:
            fresh = list(examples)
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[: opts.batch_size], order[opts.batch_size :]
        enc = tokenizer(
            [e.text for e in batch],
            padding=True,
            truncation=True,
            max_length=opts.max_length,
            return_tensors="pt",
        ).to(device)
        target = torch.tensor([e.target for e in batch], device=device)
        logits = model(**enc).logits.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        progress("fine-tuning (steps)", step + 1, steps)
        tokens += int(enc["attention_mask"].sum())
        if step % 50 == 0:
            log.info("step %d/%d loss %.4f", step + 1, steps, losses[-1])
    return steps, losses, tokens, time.perf_counter() - started


def served_labels(model_dir: Path) -> list[str]:
    """The policy category of each class, in class-index order, from the saved id2label."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
        id2label = config["id2label"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{model_dir}: no readable config.json with id2label: {exc}") from exc
    return [id2label[str(i)] for i in range(len(id2label))]


def serve_command(model_dir: Path, max_length: int) -> str:
    """How to serve the saved model so that vLLM truncates where training did."""
    return f"vllm serve {model_dir} --runner pooling --max-model-len {max_length}"


def serving_settings(model_dir: Path, max_length: int = 256) -> str:
    """The `classifier` section that points the vllm-classify backend at this model: labels
    and activation are read from the directory's config.json (`model_dir`)."""
    section = {
        "classifier": {
            "backend": "vllm-classify",
            "model": str(model_dir.resolve()),  # the name `vllm serve DIR` serves it under
            "model_dir": str(model_dir.resolve()),
        }
    }
    head = f"# written by `modpipe finetune`; serve with: {serve_command(model_dir, max_length)}\n"
    return head + yaml.safe_dump(section, sort_keys=False)


def predict(model_dir: Path, texts: list[str], max_length: int = 256) -> list[list[float]]:
    """Per-category probabilities (sigmoid of the logits) from a saved model, on CPU."""
    torch = _torch()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    return _probabilities(torch, model, tokenizer, texts, max_length, "cpu")


def _probabilities(
    torch: Any, model: Any, tokenizer: Any, texts: list[str], max_length: int, device: str
) -> list[list[float]]:
    if not texts:
        return []
    with torch.no_grad():
        enc = tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        probs = torch.sigmoid(model.to(device)(**enc).logits.float())
    return [[float(p) for p in row] for row in probs]
