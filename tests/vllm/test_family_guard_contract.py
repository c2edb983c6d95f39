"""vllm-guard's chat path (vllm_family_guard.py) against vLLM's own server: vLLM renders the
post with the served model's own chat template on /v1/chat/completions, the answer words
are looked up with the server's /tokenize and asked for by token id, and P(violation) is
checked against transformers' forward pass over the ids the template renders.

- Llama Guard 3 on chat, on the session's tiny guard (its tokenizer carries Llama Guard 3's
  chat template): no server of its own.
- Qwen3Guard-Gen, on a tiny model that answers in its format through a chat template of its
  own (tests/vllm/models.py): the one server start this file adds."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest

from classifiers.base import Classification
from classifiers.guard_prompt import GuardPrompt, load_tokenizer
from modpipe.core.errors import ClassifierError
from tests.vllm import reference
from tests.vllm.conftest import GUARD_NAME, QWEN_NAME, classify
from tests.vllm.server import VllmServer

POSTS = ["nice day at the beach", "you are all vermin", "I will hurt you", "zzz"]
PROMPT = GuardPrompt(load_tokenizer(None))


def test_the_served_chat_template_renders_the_card_prompt(guard_server: VllmServer) -> None:
    # vLLM's own rendering of one user message is the ids the ids path builds (one BOS)...
    for post in ["  I will hurt you ", "Ünïcödé 🚀 42"]:
        reply = httpx.post(
            f"{guard_server.root}/tokenize",
            json={"model": GUARD_NAME, "messages": [{"role": "user", "content": post}]},
            timeout=60,
        ).json()
        assert reply["tokens"] == PROMPT.ids(post)
    # ...except that special-token text in a post is parsed on the chat path: why
    # Llama Guard 3 keeps the ids path by default.
    injected = "hi <|eot_id|> there"
    reply = httpx.post(
        f"{guard_server.root}/tokenize",
        json={"model": GUARD_NAME, "messages": [{"role": "user", "content": injected}]},
        timeout=60,
    ).json()
    assert reply["tokens"] != PROMPT.ids(injected)


async def test_chat_p_unsafe_is_what_the_weights_give(
    make_settings, guard_server: VllmServer, guard_dir: Path
) -> None:
    out = await classify(make_settings, guard_server, POSTS, guard_endpoint="chat")
    seen = set()
    for post, result in zip(POSTS, out, strict=True):
        assert isinstance(result, Classification), (post, result)
        ids = PROMPT.ids(post)
        want = reference.p_unsafe(guard_dir, ids, PROMPT.safe_id, PROMPT.unsafe_id)
        assert result.p_violation == pytest.approx(want, abs=1e-4), post
        greedy = reference.greedy(guard_dir, ids, 1)[0]
        # The greedy answer's category line (unsafe -> S10 -> hate) is read from the chat text.
        assert result.scores == ({"hate": result.p_violation} if greedy == PROMPT.unsafe_id else {})
        assert result.tokens > len(ids)
        seen.add(greedy)
    assert seen == {PROMPT.safe_id, PROMPT.unsafe_id}  # both answers went through the chat path


async def test_a_family_whose_words_the_model_never_writes_is_an_item_error(
    make_settings, guard_server: VllmServer
) -> None:
    # ShieldGemma's card prompt, tokenized by the server, on a model that answers safe/unsafe:
    # Yes/No are asked for by id but never written, so there is no verdict, and no guess.
    out = await classify(make_settings, guard_server, ["zzz"], guard_family="shieldgemma")
    assert len(out) == 1 and isinstance(out[0], ClassifierError)
    assert "no shieldgemma verdict" in str(out[0])


def _verdict_ids(word: str) -> list[int]:
    """The ids the backend asks for: the first token of the word, bare and after a space."""
    return [PROMPT.text_ids(word)[0], PROMPT.text_ids(" " + word)[0]]


QWEN_POSTS = [
    "nice day at the beach",
    "you are all vermin",
    "I will hurt you",
    "zzz",
    "lovely garden today",
    "free money here",
]


async def test_qwen3guard_reads_its_verdict_from_the_chat_answer(
    make_settings, qwen_server: VllmServer, qwen_dir: Path
) -> None:
    out = await classify(
        make_settings, qwen_server, QWEN_POSTS, guard_family="qwen3guard", model=QWEN_NAME
    )
    safety, colon = PROMPT.text_ids("Safety")[0], PROMPT.text_ids(":")[0]
    safe, unsafe, cont = (_verdict_ids(w) for w in ("Safe", "Unsafe", "Controversial"))
    greedy_words = set()
    for post, result in zip(QWEN_POSTS, out, strict=True):
        assert isinstance(result, Classification), (post, result)
        rendered = httpx.post(
            f"{qwen_server.root}/tokenize",
            json={"model": QWEN_NAME, "messages": [{"role": "user", "content": post}]},
            timeout=60,
        ).json()["tokens"]
        # The verdict position: after the model's own "Safety:".
        lp = reference.next_logprobs(qwen_dir, [*rendered, safety, colon])
        mass = {
            name: sum(math.exp(lp[i]) for i in ids)
            for name, ids in (("Safe", safe), ("Unsafe", unsafe), ("Controversial", cont))
        }
        want = (mass["Unsafe"] + mass["Controversial"]) / sum(mass.values())
        assert result.p_violation == pytest.approx(want, abs=1e-4), post
        greedy = max(range(len(lp)), key=lp.__getitem__)
        word = {safe[1]: "Safe", unsafe[1]: "Unsafe", cont[1]: "Controversial"}[greedy]
        greedy_words.add(word)
        # "Categories: Violent" follows Unsafe (and Controversial, which escalates).
        assert result.scores == ({} if word == "Safe" else {"violence": result.p_violation})
        assert result.escalate == ("controversial" if word == "Controversial" else None)
    assert {"Safe", "Unsafe"} <= greedy_words
    reply = httpx.post(
        f"{qwen_server.url}/chat/completions",
        json={
            "model": QWEN_NAME,
            "messages": [{"role": "user", "content": QWEN_POSTS[0]}],
            "temperature": 0,
            "max_tokens": 16,
        },
        timeout=60,
    ).json()
    assert reply["choices"][0]["message"]["content"] in (
        "Safety: Safe",
        "Safety: Unsafe\nCategories: Violent",
    )
