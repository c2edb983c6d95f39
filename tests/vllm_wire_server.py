"""A local HTTP server that answers like vLLM's OpenAI-compatible server, for tests only.

`/v1/completions` returns Llama Guard style generations with `logprobs` (tokens and
top_logprobs per position); `/classify` returns `data[].probs`. A post containing
"BLOCK" is unsafe (S10), "MAYBE" is borderline (greedy `safe`, P(unsafe) = 0.45),
anything else is safe. Faults: 500s, slow or hanging replies, top-k without the
safe/unsafe tokens, NaN values, and replies with a wrong number of items.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from classifiers.vllm_guard import PROMPT_HEAD, PROMPT_TAIL
from tests.loopback import serve


def json_with_nan(obj: Any) -> str:
    """JSON as vLLM writes it, NaN included."""
    return json.dumps(obj, allow_nan=True)


@dataclass
class VllmBehaviour:
    """`script` faults are used up one per request, then `always` applies."""

    latency_s: float = 0.0
    script: list[str] = field(default_factory=list)
    always: str | None = None


def _post_of(prompt: str) -> str:
    return prompt.removeprefix(PROMPT_HEAD).split(PROMPT_TAIL)[0]


def _generation(prompt: str, fault: str | None) -> dict[str, Any]:
    if prompt.endswith(PROMPT_TAIL + "unsafe\n"):  # the forced category line
        return {
            "text": "S10",
            "logprobs": {"tokens": ["S", "10"], "top_logprobs": [{"S": -0.01}, {"10": -0.2}]},
        }
    post = _post_of(prompt)
    if "BLOCK" in post:
        p_unsafe, text = 0.97, "unsafe\nS10"
    elif "MAYBE" in post:
        p_unsafe, text = 0.45, "safe"
    else:
        p_unsafe, text = 0.02, "safe"
    top = {"safe": math.log(1 - p_unsafe), "unsafe": math.log(p_unsafe), "Safe": -9.0}
    if fault == "missing_tokens":
        top = {"The": -0.5, "I": -1.2}
    elif fault == "nan":
        top = {"safe": float("nan"), "unsafe": -0.1}
    first = text.split("\n")[0]
    tokens = ["\n\n", first, *(["\n", "S", "10"] if "\n" in text else [])]
    top_logprobs = [{"\n\n": -0.001}, top] + [{t: -0.01} for t in tokens[2:]]
    return {"text": "\n\n" + text, "logprobs": {"tokens": tokens, "top_logprobs": top_logprobs}}


class VllmWireServer:
    """The server; `url` is its `/v1` base URL once started."""

    def __init__(self) -> None:
        self.behaviour = VllmBehaviour()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.url = ""

    async def _fault(self) -> str | None:
        if self.behaviour.latency_s:
            await asyncio.sleep(self.behaviour.latency_s)
        fault = self.behaviour.script.pop(0) if self.behaviour.script else self.behaviour.always
        if fault == "hang":
            await asyncio.sleep(3600)
        return fault

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("completions", body))
        fault = await self._fault()
        if fault == "500":
            return web.json_response({"error": "engine dead"}, status=500)
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        choices = [
            {"index": i, "finish_reason": "stop", **_generation(p, fault)}
            for i, p in enumerate(prompts)
        ]
        if fault == "short":
            choices = choices[:-1]
        prompt_tokens = sum(len(p) // 4 for p in prompts)
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": "text_completion",
                "model": body["model"],
                "choices": list(reversed(choices)),  # order by index, not position
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 4 * len(prompts),
                    "total_tokens": prompt_tokens + 4 * len(prompts),
                },
            },
            dumps=json_with_nan,
        )

    async def classify(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("classify", body))
        fault = await self._fault()
        if fault == "500":
            return web.json_response({"error": "engine dead"}, status=500)
        data = []
        for i, text in enumerate(body["input"]):
            if "BLOCK" in text:
                probs = [0.05, 0.9, 0.05]
            elif "MAYBE" in text:
                probs = [0.5, 0.3, 0.2]
            else:
                probs = [0.96, 0.02, 0.02]
            if fault == "nan":
                probs = [float("nan"), 0.5, 0.5]
            data.append({"index": i, "label": "x", "probs": probs, "num_classes": 3})
        if fault == "short":
            data = data[:-1]
        return web.json_response(
            {
                "id": "classify-1",
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {
                    "prompt_tokens": 7 * len(body["input"]),
                    "total_tokens": 7 * len(body["input"]),
                },
            },
            dumps=json_with_nan,
        )


@asynccontextmanager
async def vllm_wire_server() -> AsyncIterator[VllmWireServer]:
    """Serve on 127.0.0.1 on a free port for the length of the block."""
    server = VllmWireServer()
    async with serve({"/v1/completions": server.completions, "/classify": server.classify}) as url:
        server.url = url
        yield server
