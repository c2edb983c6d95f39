"""The triage worker on Kafka with vllm-guard on vLLM's own server: overload without a retry
storm, the tier's P(unsafe) on every verdict and escalation, and a server restart mid-run
with every post accounted for."""

from __future__ import annotations

import asyncio
import json
import re

import httpx

from classifiers import build_classifier
from classifiers.guard_prompt import GuardPrompt, load_tokenizer
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from streams.app import TriageWorker
from tests.integration.conftest import wait_until
from tests.vllm import reference
from tests.vllm.conftest import GUARD_NAME
from tests.vllm.server import VllmServer

PROMPT = GuardPrompt(load_tokenizer(None))
WORDS = ["lunch", "garden", "vermin", "game", "pills", "weather", "goal", "beach"]


def posts(n: int, tag: str) -> list[tuple[str, str]]:
    return [(f"{tag}{i}", f"{WORDS[i % len(WORDS)]} {i} {WORDS[(i * 3) % 8]}") for i in range(n)]


def encoded(items: list[tuple[str, str]]) -> list[bytes]:
    return [json.dumps({"post_id": pid, "text": text}).encode() for pid, text in items]


def engine_counts(server: VllmServer) -> dict[str, float]:
    """vLLM's own Prometheus counters: finished requests by reason, and the queue now."""
    text = httpx.get(f"{server.root}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(vllm:[a-z_]+)(?:\{([^}]*)\})? ([0-9.e+-]+)$", line)
        if not m:
            continue
        name, labels, value = m[1], m[2] or "", float(m[3])
        reason = re.search(r'finished_reason="(\w+)"', labels)
        key = f"{name}:{reason[1]}" if reason else name
        out[key] = out.get(key, 0.0) + value
    return out


async def test_overload_keeps_in_flight_bounded_and_sends_each_post_once(
    make_settings, guard_server: VllmServer, guard_dir
) -> None:
    # A 2-core vLLM does ~1K prompt tokens/s; batches of 8 guard prompts are ~1.7K tokens
    # and four batches are pipelined onto two request slots. A fixed 0.5 s timeout would
    # time every request out and send it again while the server still works on it.
    items = posts(32, "o")
    settings = make_settings(
        classifier={
            "backend": "vllm-guard",
            "base_url": guard_server.url,
            "model": GUARD_NAME,
            "timeout_s": 0.5,
            "max_attempts": 3,
            "max_in_flight": 2,
            "service_tokens_per_s": 1000.0,
        },
        triage={"batch_max": 8, "max_batches_in_flight": 4, "audit_rate": 0.0},
    )
    before = engine_counts(guard_server)
    most_queued = 0.0
    stop = asyncio.Event()

    async def watch_queue() -> None:
        nonlocal most_queued
        while not stop.is_set():
            c = await asyncio.to_thread(engine_counts, guard_server)
            most_queued = max(
                most_queued,
                c.get("vllm:num_requests_running", 0) + c.get("vllm:num_requests_waiting", 0),
            )
            await asyncio.sleep(0.2)

    classifier = build_classifier(settings)
    http = classifier.backend._http  # type: ignore[attr-defined]
    watcher = asyncio.create_task(watch_queue())
    try:
        async with Collector(settings, marker="") as c:
            await publish(settings.kafka, settings.topics.posts, encoded(items))
            worker = TriageWorker(settings, classifier, Metrics())
            assert await worker.run(idle_exit=3.0) == 0
            await wait_until(
                lambda: len(c.outcomes.verdicts) + len(c.outcomes.escalations) >= len(items),
                30,
                "every post",
            )
    finally:
        stop.set()
        await watcher
        await classifier.aclose()
    after = engine_counts(guard_server)

    # Every post accounted for exactly once, each by the guard itself (none failed over).
    decided = set(c.outcomes.verdicts) | set(c.outcomes.escalations)
    assert decided == {pid for pid, _ in items}
    assert all(len(v) == 1 for v in c.outcomes.verdicts.values())
    assert all(e["reason"] == "borderline" for e in c.outcomes.escalations.values())
    # Bounded: two requests on the wire at most, so at most 2 x 8 prompts in vLLM's queue.
    assert http.most_in_flight <= 2
    assert most_queued <= 2 * 8
    # No repeated work: no request was sent twice (none timed out and went again), and
    # vLLM finished exactly one generation per prompt: one per post, plus the forced
    # category pass for a post above the allow line that the model answered `safe`.
    assert http.retries == 0
    p_unsafe = [v[0]["p_violation"] for v in c.outcomes.verdicts.values()]
    p_unsafe += [e["p_violation"] for e in c.outcomes.escalations.values()]
    forced = sum(1 for p in p_unsafe if 0.35 <= p < 0.5)
    finished = {
        k.rsplit(":", 1)[1]: after[k] - before.get(k, 0.0)
        for k in after
        if k.startswith("vllm:request_success_total:")
    }
    assert finished.get("abort", 0) == 0, finished
    assert finished.get("stop", 0) + finished.get("length", 0) == len(items) + forced, finished

    # Every verdict and escalation carries the guard's P(unsafe), allows included; a few
    # are checked against the weights (test_guard_contract checks the rest of the path).
    texts = dict(items)
    outputs = [(p, v[0]) for p, v in c.outcomes.verdicts.items()]
    outputs += list(c.outcomes.escalations.items())
    assert all(isinstance(value["p_violation"], float) for _, value in outputs)
    for pid, value in outputs[:: max(1, len(outputs) // 6)]:
        want = reference.p_unsafe(
            guard_dir, PROMPT.ids(texts[pid]), PROMPT.safe_id, PROMPT.unsafe_id
        )
        assert abs(value["p_violation"] - want) < 1e-4, (pid, value)
    assert any(v[0]["action"] == "allow" for v in c.outcomes.verdicts.values())
