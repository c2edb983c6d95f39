"""A frontier that answers from known labels: what `modpipe flywheel` escalates to.

Replaying the learning loop on a labelled data set needs a frontier whose verdicts are
the data set's labels, so a round measures the loop and not a model's mistakes. This is
an OpenAI-compatible chat endpoint on 127.0.0.1 (the escalator's `chat` provider talks
to it as to any other): each post, read back from the prompt's `<post_json>` block,
gets `block` with its known categories, or `allow`; a post it was not told about is
allowed. Token counts follow the request's size (4 characters a token, 30 for the
answer), so the verdicts' `cost_usd` prices the replay like a real provider's would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from escalation.prompt import POST_CLOSE, POST_OPEN


class LabelOracle:
    """Known categories by post text (empty: allow); `url` is its `/v1` base once served."""

    def __init__(self, answers: Mapping[str, Sequence[str]], latency_s: float = 0.0) -> None:
        self.answers = {text: list(categories) for text, categories in answers.items()}
        self.latency_s = latency_s  # per call, like a remote model's (the escalator bench)
        self.calls: Counter[str] = Counter()
        self.url = ""

    def answer(self, text: str) -> dict[str, Any]:
        """The verdict this oracle gives `text`."""
        categories = self.answers.get(text, [])
        return {
            "action": "block" if categories else "allow",
            "categories": categories,
            "confidence": 1.0,
            "rationale": "the data set's label",
        }

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        start, end = user.find(POST_OPEN), user.rfind(POST_CLOSE)
        text = json.loads(user[start + len(POST_OPEN) : end])["text"] if start >= 0 else user
        self.calls[text] += 1
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
        message = {"role": "assistant", "content": json.dumps(self.answer(text)), "refusal": None}
        return web.json_response(
            {
                "id": f"chatcmpl-oracle-{sum(self.calls.values())}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": 30,
                    "total_tokens": prompt_tokens + 30,
                },
            }
        )


@asynccontextmanager
async def label_oracle(
    answers: Mapping[str, Sequence[str]], latency_s: float = 0.0
) -> AsyncIterator[LabelOracle]:
    """Serve a `LabelOracle` on 127.0.0.1, on a free port, for the length of the block."""
    oracle = LabelOracle(answers, latency_s)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", oracle.chat)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    oracle.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield oracle
    finally:
        await runner.cleanup()
