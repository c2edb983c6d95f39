"""Llama Guard 3's prompt as token ids, built with the Llama 3 tokenizer on this side.

The text is the Llama-Guard-3-8B chat template's rendering of one user message (the
template's bytes: `categories.<|eot_id|>`, no space); the ids are what Meta's own
`llama_models` ChatFormat builds for it: BOS, the user header, the content encoded as
ordinary text, `<|eot_id|>`, the assistant header. Building ids here rather than sending
text means vLLM adds no second BOS, and special-token text inside a post (`<|eot_id|>`...)
stays ordinary text: a post cannot close its own turn or write the model's answer.

The tokenizer is Meta's (`llama_models.llama3.tokenizer`, tiktoken over the published BPE
ranks), installed with the `gpu` extra; `classifier.tokenizer_path` may name another copy
of the same file (the model repository's `original/tokenizer.model`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modpipe.core.errors import ConfigError

GUARD_CATEGORIES = (
    "S1: Violent Crimes.",
    "S2: Non-Violent Crimes.",
    "S3: Sex Crimes.",
    "S4: Child Exploitation.",
    "S5: Defamation.",
    "S6: Specialized Advice.",
    "S7: Privacy.",
    "S8: Intellectual Property.",
    "S9: Indiscriminate Weapons.",
    "S10: Hate.",
    "S11: Self-Harm.",
    "S12: Sexual Content.",
    "S13: Elections.",
    "S14: Code Interpreter Abuse.",
)
# The user turn's content around the post, as the chat template writes it.
CONTENT_HEAD = (
    "Task: Check if there is unsafe content in 'User' messages in conversations according "
    "our safety policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n" + "\n".join(GUARD_CATEGORIES) + "\n"
    "<END UNSAFE CONTENT CATEGORIES>\n\n"
    "<BEGIN CONVERSATION>\n\n"
    "User: "
)
CONTENT_TAIL = (
    "\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST User message in the above "
    "conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated "
    "categories."
)
USER_HEADER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
ASSISTANT_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
# The most a generation can need: "unsafe\n" and all 14 codes is 30 tokens, with spaces
# after the commas 43, then <|eot_id|>. Generation stops at <|eot_id|>, so a cap costs nothing.
MAX_TOKENS = 64


def guard_text(post: str) -> str:
    """The rendered prompt for one post (the template trims the message), as text."""
    return USER_HEADER + CONTENT_HEAD + post.strip() + CONTENT_TAIL + ASSISTANT_HEADER


def load_tokenizer(path: Path | None) -> Any:
    """Meta's Llama 3 tokenizer over `path` (null: the copy shipped in llama-models)."""
    try:
        from llama_models.llama3.tokenizer import Tokenizer
    except ImportError as exc:
        raise ConfigError(
            "vllm-guard tokenizes on this side: install the gpu extra "
            "(pip install 'modpipe[gpu]': tiktoken and llama-models)"
        ) from exc
    if path is None:
        return Tokenizer.get_instance()
    if not path.is_file():
        raise ConfigError(f"classifier.tokenizer_path: no file at {path}")
    return Tokenizer(path)


class GuardPrompt:
    """Token ids of the guard prompt, and the ids of the answers it is read by."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        special = tokenizer.special_tokens
        self._bos = special["<|begin_of_text|>"]
        self._user = [special["<|start_header_id|>"], *self.text_ids("user")]
        self._user += [special["<|end_header_id|>"], *self.text_ids("\n\n")]
        self._assistant = [special["<|eot_id|>"], special["<|start_header_id|>"]]
        self._assistant += [*self.text_ids("assistant"), special["<|end_header_id|>"]]
        self._assistant += self.text_ids("\n\n")
        self.safe_id, self.unsafe_id = self._single("safe"), self._single("unsafe")
        # The forced second pass continues after the model's own "unsafe" and newline.
        self.forced_ids = self.text_ids("unsafe\n")
        # Everything but the post; the space after "User:" goes with the post's first word.
        self.fixed_tokens = len(self.ids("x")) - len(self.text_ids(" x"))

    def text_ids(self, text: str) -> list[int]:
        """`text` as ordinary text: special-token names in it are not special tokens."""
        return list(self._tok.encode(text, bos=False, eos=False, allowed_special=set()))

    def _single(self, word: str) -> int:
        ids = self.text_ids(word)
        if len(ids) != 1:
            raise ConfigError(f"the tokenizer splits {word!r} into {ids}: not Llama 3's")
        return ids[0]

    def tail_ids(self) -> list[int]:
        """What follows the post: the instructions and the assistant header."""
        return self.text_ids(CONTENT_TAIL) + self._assistant

    def ids(self, post: str) -> list[int]:
        """The prompt for one post. The content is encoded in one piece, as a tokenizer
        does the rendered template between two special tokens (the post's first word
        takes the space after "User:", its last character may merge with the tail)."""
        content = CONTENT_HEAD + post.strip() + CONTENT_TAIL
        return [self._bos, *self._user, *self.text_ids(content), *self._assistant]

    def token_name(self, token_id: int) -> str:
        """The text of one token id."""
        return str(self._tok.decode([token_id]))
