"""Fine-tuning throughput of `modpipe finetune`'s recipe on an 8B-shaped model (for a GPU).

An 8B Llama shape (Llama-3.1-8B's config) with random weights in bfloat16: nothing is
downloaded, so it runs on a machine without network. It wraps the model exactly as
`modpipe.quality.finetune` does (sequence-classification head over the policy's
categories, LoRA on the attention and MLP projections), runs timed training steps on
random token ids and reports tokens/s and MFU.

MFU counts the conventional 6N FLOPs per token (N = parameters outside the embeddings)
plus attention (12 * layers * hidden * sequence), against the GPU's dense bf16 peak; LoRA
skips the frozen weights' gradients, so the work actually done is nearer 4N, reported as
`mfu_lora` (the fairer figure for this recipe).

    python -m bench.finetune                # on a GPU: the 8B shape
    python -m bench.finetune --tiny         # anywhere: a smoke run of the same code
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

EIGHT_B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def peak_tflops(torch: Any) -> float | None:
    """The dense bf16 peak of the GPU in use, if known."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def build_model(
    args: argparse.Namespace, torch: Any, device: str, dtype: Any, shape: dict[str, int]
) -> tuple[Any, int, int]:
    """A randomly initialised Llama of `shape` with LoRA adapters, in training mode; its
    parameter count and its embedding's, before the adapters."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from modpipe.quality.finetune import LORA_TARGETS

    config = LlamaConfig(
        **shape,
        max_position_embeddings=max(8192, args.seq),
        num_labels=args.labels,
        problem_type="multi_label_classification",
        pad_token_id=0,
    )
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = LlamaForSequenceClassification(config)
    torch.set_default_dtype(torch.float32)
    if args.checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    params = sum(p.numel() for p in model.parameters())
    embed = model.model.embed_tokens.weight.numel()
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        target_modules=LORA_TARGETS,
    )
    model = get_peft_model(model, lora)
    model.train()
    return model, params, embed


def timed(args: argparse.Namespace, torch: Any, step: Any, cuda: bool) -> float:
    """Seconds for `args.steps` steps after `args.warmup` untimed ones."""
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        raise SystemExit("bench.finetune: no GPU here; use --tiny for a CPU smoke run")
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    shape = TINY if args.tiny else EIGHT_B
    model, params, embed = build_model(args, torch, device, dtype, shape)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(1, shape["vocab_size"], (args.batch, args.seq), device=device)
    mask = torch.ones_like(ids)
    target = torch.randint(0, 2, (args.batch, args.labels), device=device).to(dtype)

    def step() -> float:
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    seconds = timed(args, torch, step, cuda)
    tokens = args.batch * args.seq * args.steps
    n = params - embed
    attention = 12 * shape["num_hidden_layers"] * shape["hidden_size"] * args.seq
    tokens_per_s = tokens / seconds
    peak = peak_tflops(torch)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "shape": "tiny" if args.tiny else "llama-3.1-8b",
        "parameters": params,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "gradient_checkpointing": args.checkpointing,
        "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens_per_s, 1),
        "tflops_6n": round(tokens_per_s * (6 * n + attention) / 1e12, 2),
        "peak_tflops": peak,
    }
    if peak:
        report["mfu"] = round(tokens_per_s * (6 * n + attention) / (peak * 1e12), 4)
        report["mfu_lora"] = round(tokens_per_s * (4 * n + attention) / (peak * 1e12), 4)
    if cuda:
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a small shape, for a CPU smoke run")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--labels", type=int, default=7, help="policy categories")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    print(json.dumps(run(p.parse_args()), indent=2))


if __name__ == "__main__":
    main()
