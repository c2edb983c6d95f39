"""The independent computation the real server's answers are checked against: transformers'
own forward pass over the same model directory (float32, one prompt at a time, no padding).
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _causal(model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


@cache
def _classifier(model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype="float32")
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def next_logprobs(model_dir: Path, ids: list[int]) -> list[float]:
    """log-softmax of the next-token logits after `ids`."""
    import torch

    with torch.no_grad():
        model = _causal(model_dir)
        logits = model(torch.tensor([ids]), logits_to_keep=1).logits[0, -1].double()
    return [float(v) for v in torch.log_softmax(logits, -1)]


def p_unsafe(model_dir: Path, ids: list[int], safe: int, unsafe: int) -> float:
    """P(unsafe) as the guard backend defines it: softmax over the two words' logprobs."""
    lp = next_logprobs(model_dir, ids)
    return 1.0 / (1.0 + math.exp(lp[safe] - lp[unsafe]))


def greedy(model_dir: Path, ids: list[int], steps: int) -> list[int]:
    """Greedy continuation of `ids`."""
    import torch

    out = list(ids)
    model = _causal(model_dir)
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([out]), logits_to_keep=1).logits[0, -1]
            out.append(int(logits.argmax()))
    return out[len(ids) :]


def class_logits(model_dir: Path, text: str, max_length: int = 1024) -> list[float]:
    """The sequence classifier's logits for one text, tokenized as the model's own
    tokenizer does by default (special tokens added, truncated at `max_length`)."""
    import torch

    model, tokenizer = _classifier(model_dir)
    enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return [float(v) for v in model(**enc).logits[0].double()]
