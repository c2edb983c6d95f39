"""A local HTTP server that speaks the OpenAI wire format, for tests only.

It serves `/v1/chat/completions` (structured outputs) and `/v1/moderations` with a
deterministic judge (a post containing "BLOCK" violates `harassment`) and injectable
faults: fixed latency, 429 with Retry-After, 500, hanging requests, malformed JSON,
schema-violating content, unknown categories and refusals. It counts calls per distinct
post text and keeps every request body for inspection.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.loopback import serve

FAULTS = ("429", "500", "hang", "malformed", "schema", "unknown_category", "refusal")
_POST = re.compile(r"<post_json>\n(.*)\n</post_json>", re.S)
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


@dataclass
class Behaviour:
    """What the server does: `script` faults are used up one per request, then `always`."""

    latency_s: float = 0.0
    script: list[str] = field(default_factory=list)
    always: str | None = None
    retry_after_s: float = 0.1


class OpenAIWireServer:
    """The server; `url` is its base URL once started."""

    def __init__(self) -> None:
        self.behaviour = Behaviour()
        self.calls: Counter[str] = Counter()
        # Known answers by post text (categories; empty = allow), e.g. a data set's labels;
        # other texts follow the "BLOCK" rule.
        self.answers: dict[str, list[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.statuses: Counter[int] = Counter()
        # (model, prompt tokens, completion tokens) of every chat answer sent: the bill.
        self.billed: list[tuple[str, int, int]] = []
        self.url = ""
        self.in_flight = 0
        self.max_in_flight = 0
        # GET /v1/models: the models offered, and the key it requires (None: any).
        self.models = ["gpt-4.1-mini", "gpt-4.1", "omni-moderation-latest"]
        self.key: str | None = None

    def _fault(self) -> str | None:
        if self.behaviour.script:
            return self.behaviour.script.pop(0)
        return self.behaviour.always

    async def _common(self, request: web.Request) -> tuple[dict[str, Any], str | None]:
        body = await request.json()
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.behaviour.latency_s:
                await asyncio.sleep(self.behaviour.latency_s)
            fault = self._fault()
            if fault == "hang":
                await asyncio.sleep(3600)
        finally:
            self.in_flight -= 1
        return body, fault

    def _error(self, fault: str) -> web.Response | None:
        if fault == "429":
            self.statuses[429] += 1
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit"}},
                status=429,
                headers={"retry-after": str(self.behaviour.retry_after_s)},
            )
        if fault == "500":
            self.statuses[500] += 1
            return web.json_response({"error": {"message": "boom", "type": "server"}}, status=500)
        if fault == "malformed":
            self.statuses[200] += 1
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        return None

    async def chat(self, request: web.Request) -> web.Response:
        body, fault = await self._common(request)
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        match = _POST.search(user)
        text = json.loads(match.group(1))["text"] if match else user
        self.calls[text] += 1
        error = self._error(fault) if fault else None
        if error is not None:
            return error
        known = self.answers.get(text)
        violates = bool(known) if known is not None else "BLOCK" in text
        answer: dict[str, Any] = {
            "action": "block" if violates else "allow",
            "categories": (known or ["harassment"]) if violates else [],
            "confidence": 0.93,
            "rationale": "test judge",
        }
        refusal = None
        if fault == "schema":
            answer = {"verdict": "maybe"}
        elif fault == "unknown_category":
            answer = {**answer, "action": "block", "categories": ["spam"]}
        elif fault == "refusal":
            refusal = "I can't help with that."
        self.statuses[200] += 1
        prompt_chars = sum(len(m["content"]) for m in body["messages"])
        self.billed.append((body["model"], prompt_chars // 4, 30))
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": None if refusal else json.dumps(answer),
                            "refusal": refusal,
                        },
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_chars // 4,
                    "completion_tokens": 30,
                    "total_tokens": prompt_chars // 4 + 30,
                },
            }
        )

    async def moderations(self, request: web.Request) -> web.Response:
        body, fault = await self._common(request)
        text = body["input"] if isinstance(body["input"], str) else body["input"][0]
        self.calls[text] += 1
        error = self._error(fault) if fault else None
        if error is not None:
            return error
        scores = {c: 0.01 for c in MODERATION_CATEGORIES}
        if "BLOCK" in text:
            scores["harassment"] = 0.97
            scores["harassment/threatening"] = 0.6
        self.statuses[200] += 1
        return web.json_response(
            {
                "id": f"modr-{len(self.requests)}",
                "model": body.get("model", "omni-moderation-latest"),
                "results": [
                    {
                        "flagged": "BLOCK" in text,
                        "categories": {c: s >= 0.5 for c, s in scores.items()},
                        "category_scores": scores,
                        "category_applied_input_types": {c: ["text"] for c in scores},
                    }
                ],
            }
        )

    async def list_models(self, request: web.Request) -> web.Response:
        """GET /v1/models: 401 without the key when one is set, else the model list."""
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                    }
                },
                status=401,
            )
        data = [{"id": m, "object": "model", "owned_by": "test"} for m in self.models]
        return web.json_response({"object": "list", "data": data})


@asynccontextmanager
async def openai_wire_server() -> AsyncIterator[OpenAIWireServer]:
    """Serve on 127.0.0.1 on a free port for the length of the block."""
    server = OpenAIWireServer()
    async with serve(
        {"/v1/chat/completions": server.chat, "/v1/moderations": server.moderations},
        {"/v1/models": server.list_models},
    ) as url:
        server.url = url
        yield server
