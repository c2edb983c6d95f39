"""Tiny models the real-vLLM tests build themselves, from random weights (nothing downloaded).

- `llama3_tokenizer(dir)`: Meta's Llama 3 tokenizer, from the `tokenizer.model` (tiktoken BPE
  ranks) that the `llama-models` package ships, converted with transformers'
  `TikTokenConverter`, with the 256 special tokens at Meta's ids and BOS added like the
  released Llama 3 tokenizers.
- `guard_model(dir)`: a Llama-3-shaped causal LM (hidden 64, one 64-wide head, 2 layers) over
  that tokenizer that behaves like a guard: its first generated token is `safe` or `unsafe`
  (which one, and how sure, depends on the whole prompt through its random layers), then a
  hand-set bigram path finishes the answer: `safe` -> `<|eot_id|>`, `unsafe` -> `\\n` -> `S`
  -> `10` -> `<|eot_id|>`. So greedy answers read `safe` or `unsafe\\nS10`, and the forced
  category pass (after `unsafe\\n`) reads `S10`.
  Its tokenizer carries Llama Guard 3's chat template (`LLAMA_GUARD_3_CHAT`), which renders
  one user message as guard_prompt.guard_text does: the model's own template, for the chat
  path of `vllm-guard` (`classifier.guard_endpoint: chat`).
- `base_model(dir)`: the same shape with random weights, a base for `modpipe finetune`.

How the guard's answer is wired: a few hidden dimensions are reserved, one per bigram source
token; only that token's embedding writes there (large), and no layer writes there (the
rows of `o_proj` and `down_proj` for those dimensions are zero), so after the final norm the
dimension is large exactly when the input token is that source. The `lm_head` row of its
target reads only that dimension. `safe` and `unsafe` read opposite directions of the other
dimensions; every other row is zero, so one of the two always wins the first position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HIDDEN = 64
LAYERS = 2
SOURCES = 5  # reserved dimensions: safe, unsafe, "\n", "S", "10"


def _meta_tokenizer() -> Any:
    from llama_models.llama3.tokenizer import Tokenizer

    return Tokenizer.get_instance()


def llama3_tokenizer(where: Path) -> Any:
    """Meta's Llama 3 tokenizer as a transformers fast tokenizer, saved to `where`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    meta = _meta_tokenizer()
    specials = sorted(meta.special_tokens, key=meta.special_tokens.__getitem__)
    import llama_models

    model_file = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    converted = TikTokenConverter(
        vocab_file=str(model_file), pattern=meta.pat_str, extra_special_tokens=specials
    ).converted()
    bos = "<|begin_of_text|>"
    converted.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, meta.bos_id)]
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converted,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=1024,
    )
    tokenizer.save_pretrained(where)
    return tokenizer


def llama_guard_3_chat() -> str:
    """A Jinja chat template that renders the last user message as Llama Guard 3's card
    prompt (guard_prompt.guard_text's bytes: header, trimmed post, instructions)."""
    from classifiers.guard_prompt import ASSISTANT_HEADER, CONTENT_HEAD, CONTENT_TAIL, USER_HEADER

    return (
        "{% for message in messages if message['role'] == 'user' %}{% if loop.last %}"
        + USER_HEADER
        + CONTENT_HEAD
        + "{{ message['content'] | trim }}"
        + CONTENT_TAIL
        + ASSISTANT_HEADER
        + "{% endif %}{% endfor %}"
    )


def _config(vocab: int, **extra: Any) -> Any:
    from transformers import LlamaConfig

    meta = _meta_tokenizer()
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=HIDDEN,
        max_position_embeddings=1024,
        bos_token_id=meta.bos_id,
        eos_token_id=meta.special_tokens["<|eot_id|>"],
        pad_token_id=meta.special_tokens["<|finetune_right_pad_id|>"],
        tie_word_embeddings=False,
        torch_dtype="float32",
        **extra,
    )


def guard_model(
    where: Path, calibration: list[list[int]], seed: int = 0, spread: float = 2.0
) -> Path:
    """The guard-shaped causal LM and its tokenizer, saved to `where` (about 17M parameters).

    `calibration`: a few guard prompts (token ids). The `safe`/`unsafe` rows read the
    direction along which their last hidden states differ most, scaled so the logit gap
    varies by about `spread` across them and centred on their mean: some prompts come out
    safe, some unsafe, none by a landslide. A shared component lifts both words to a logit
    of about 15, so the other 128K tokens (logit 0) take little probability.
    """
    import torch
    from transformers import LlamaForCausalLM

    meta = _meta_tokenizer()
    tokenizer = llama3_tokenizer(where)
    tokenizer.chat_template = llama_guard_3_chat()
    tokenizer.save_pretrained(where)
    vocab = len(tokenizer)

    def one(text: str) -> int:
        ids = meta.encode(text, bos=False, eos=False)
        assert len(ids) == 1, (text, ids)
        return int(ids[0])

    safe, unsafe, newline, s, ten = (one(t) for t in ("safe", "unsafe", "\n", "S", "10"))
    eot = meta.special_tokens["<|eot_id|>"]
    path = {safe: eot, unsafe: newline, newline: s, s: ten, ten: eot}
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(vocab)).eval()
    free = slice(SOURCES, HIDDEN)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, :SOURCES] = 0.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:SOURCES, :] = 0.0
            layer.mlp.down_proj.weight[:SOURCES, :] = 0.0
        head = model.lm_head.weight
        head.zero_()
        for dim, (source, target) in enumerate(path.items()):
            emb[source, dim] = 50.0
            head[target, dim] = 20.0
        last = torch.stack(
            [model.model(torch.tensor([ids])).last_hidden_state[0, -1, free] for ids in calibration]
        )
        mean = last.mean(0)
        centred = last - mean
        direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        direction -= (direction @ mean) / (mean @ mean) * mean  # no gap at the mean
        gap = centred @ direction
        direction *= spread / (2 * float(gap.std()))
        lift = 15.0 * mean / (mean @ mean)
        head[safe, free] = lift + direction
        head[unsafe, free] = lift - direction
    model.save_pretrained(where, safe_serialization=True)
    return where


def base_model(where: Path, seed: int = 0) -> Path:
    """A random Llama-3-shaped causal LM with Meta's tokenizer: a base for `modpipe finetune`."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = llama3_tokenizer(where)
    torch.manual_seed(seed)
    LlamaForCausalLM(_config(len(tokenizer))).save_pretrained(where, safe_serialization=True)
    return where
