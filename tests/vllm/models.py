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


def _wired_lm(
    where: Path,
    tokenizer: Any,
    path: dict[int, int],
    choices: dict[int, tuple[float, float]],
    calibration: list[list[int]],
    seed: int,
    spread: float,
) -> Path:
    """A Llama-3-shaped causal LM over `tokenizer` whose greedy answer is wired: after a
    token in `path` comes its target (a bigram through a reserved hidden dimension per
    source); after any other token, one of `choices`, each row `level * lift + sign *
    direction` (the direction along which the last hidden states of the `calibration`
    prompts differ most, scaled so the gap between sign +1 and -1 varies by about `spread`
    across them, centred on their mean; `lift` puts a level-1 word at a logit of about 15,
    so the other tokens, at logit 0, take little probability). Saved to `where`."""
    import torch
    from transformers import LlamaForCausalLM

    reserved = len(path)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_config(len(tokenizer))).eval()
    free = slice(reserved, HIDDEN)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, :reserved] = 0.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:reserved, :] = 0.0
            layer.mlp.down_proj.weight[:reserved, :] = 0.0
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
        for token, (level, sign) in choices.items():
            head[token, free] = level * lift + sign * direction
    model.save_pretrained(where, safe_serialization=True)
    return where


def _one(text: str) -> int:
    ids = _meta_tokenizer().encode(text, bos=False, eos=False)
    assert len(ids) == 1, (text, ids)
    return int(ids[0])


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
    tokenizer = llama3_tokenizer(where)
    tokenizer.chat_template = llama_guard_3_chat()
    tokenizer.save_pretrained(where)
    safe, unsafe, newline, s, ten = (_one(t) for t in ("safe", "unsafe", "\n", "S", "10"))
    eot = _meta_tokenizer().special_tokens["<|eot_id|>"]
    path = {safe: eot, unsafe: newline, newline: s, s: ten, ten: eot}
    choices = {safe: (1.0, 1.0), unsafe: (1.0, -1.0)}
    return _wired_lm(where, tokenizer, path, choices, calibration, seed, spread)


# A Qwen3Guard-Gen-shaped guard's own chat template (the real one is Qwen's; this one is the
# tiny model's): the last user message, then the assistant header, whose last token ("\n\n")
# starts the answer.
QWEN3GUARD_CHAT = (
    "{% for message in messages if message['role'] == 'user' %}{% if loop.last %}"
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "# Task: is THE LAST USER's query safe, unsafe or controversial?\n\nUSER: "
    "{{ message['content'] | trim }}"
    "\n\nAnswer with a Safety line and a Categories line."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% endif %}{% endfor %}"
)
QWEN_CATEGORIES = "Categories:"  # one added token: Llama 3 has no second colon to wire


def qwen3guard_model(where: Path, posts: list[str], seed: int = 1, spread: float = 2.0) -> Path:
    """A causal LM that answers like Qwen3Guard-Gen through its chat template: greedy
    "Safety: Safe", or "Safety: Unsafe\nCategories: Violent" (after Controversial, the same
    category line), with Safe/Unsafe/Controversial chosen by the post at the verdict
    position (Controversial a logit below the other two). Meta's Llama 3 tokenizer plus one
    added token, `Categories:`; saved to `where`."""
    from tokenizers import AddedToken

    tokenizer = llama3_tokenizer(where)
    tokenizer.add_tokens([AddedToken(QWEN_CATEGORIES, normalized=False)])
    tokenizer.chat_template = QWEN3GUARD_CHAT
    tokenizer.save_pretrained(where)
    eot = _meta_tokenizer().special_tokens["<|eot_id|>"]
    safety, colon, newline, header = (_one(t) for t in ("Safety", ":", "\n", "\n\n"))
    safe, unsafe, cont = (_one(t) for t in (" Safe", " Unsafe", " Cont"))
    rovers, ial, viol, ent = (_one(t) for t in ("rovers", "ial", " Viol", "ent"))
    categories = int(tokenizer.convert_tokens_to_ids(QWEN_CATEGORIES))
    path = {header: safety, safety: colon, safe: eot, unsafe: newline, cont: rovers}
    path |= {rovers: ial, ial: newline, newline: categories, categories: viol, viol: ent}
    path |= {ent: eot}
    choices = {safe: (1.0, 1.0), unsafe: (1.0, -1.0), cont: (14.0 / 15.0, 0.0)}
    calibration = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True
        )
        for p in posts
    ]
    calibration = [[*_ids(c), safety, colon] for c in calibration]
    return _wired_lm(where, tokenizer, path, choices, calibration, seed, spread)


def _ids(rendered: Any) -> list[int]:
    """apply_chat_template's ids (a list, or a BatchEncoding in transformers 5)."""
    return [int(i) for i in (rendered["input_ids"] if hasattr(rendered, "keys") else rendered)]


def base_model(where: Path, seed: int = 0) -> Path:
    """A random Llama-3-shaped causal LM with Meta's tokenizer: a base for `modpipe finetune`."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = llama3_tokenizer(where)
    torch.manual_seed(seed)
    LlamaForCausalLM(_config(len(tokenizer))).save_pretrained(where, safe_serialization=True)
    return where
