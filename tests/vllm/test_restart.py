"""vLLM restarted under a running triage worker: nothing is lost. Posts that arrive while the
server is down go on to the next tier (`classifier_failed`), never dropped or allowed, and
the posts after the restart are decided by the restarted server on the same connection
pool. Runs last in this folder: it restarts the session's guard server."""

from __future__ import annotations

import asyncio

from classifiers import build_classifier
from modpipe.cli.produce import publish
from modpipe.core.metrics import Metrics
from modpipe.core.outcomes import Collector
from streams.app import TriageWorker
from tests.integration.conftest import wait_until
from tests.vllm.conftest import GUARD_NAME
from tests.vllm.server import VllmServer
from tests.vllm.test_pipeline import encoded, posts


async def test_a_server_restart_mid_run_loses_nothing(
    make_settings, guard_server: VllmServer
) -> None:
    settings = make_settings(
        classifier={
            "backend": "vllm-guard",
            "base_url": guard_server.url,
            "model": GUARD_NAME,
            "max_attempts": 2,
        },
        triage={"batch_max": 8, "audit_rate": 0.0, "on_classifier_failure": "escalate"},
    )
    before, during, after = posts(8, "b"), posts(8, "d"), posts(8, "a")
    classifier = build_classifier(settings)
    worker = TriageWorker(settings, classifier, Metrics())
    try:
        async with Collector(settings, marker="") as c:

            def outputs() -> int:
                return len(c.outcomes.verdicts) + len(c.outcomes.escalations)

            task = asyncio.ensure_future(worker.run())
            await publish(settings.kafka, settings.topics.posts, encoded(before))
            await wait_until(lambda: outputs() >= 8, 120, "the posts before the restart")
            await asyncio.to_thread(guard_server.stop)
            await publish(settings.kafka, settings.topics.posts, encoded(during))
            await wait_until(lambda: outputs() >= 16, 120, "the posts while vLLM is down")
            await asyncio.to_thread(guard_server.start)
            await publish(settings.kafka, settings.topics.posts, encoded(after))
            await wait_until(lambda: outputs() >= 24, 120, "the posts after the restart")
            worker.stop()
            assert await asyncio.wait_for(task, 60) == 0
    finally:
        await classifier.aclose()

    out = {pid: v[0] for pid, v in c.outcomes.verdicts.items()} | c.outcomes.escalations
    assert set(out) == {pid for pid, _ in before + during + after}
    assert all(len(v) == 1 for v in c.outcomes.verdicts.values())
    for pid, _ in during:
        assert out[pid]["reason"] == "classifier_failed", out[pid]
    for pid, _ in before + after:
        assert isinstance(out[pid]["p_violation"], float), out[pid]
        assert out[pid].get("reason", "borderline") == "borderline"
