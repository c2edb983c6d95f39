"""The triage worker on the real broker: nothing lost, bad input to the DLQ, restarts resume."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from classifiers import Classification, Classifier, build_classifier
from modpipe.cli.produce import publish
from modpipe.core.errors import ClassifierError
from modpipe.core.kafka import client_options, consumer_options
from modpipe.core.metrics import Metrics
from modpipe.core.probes import LagProbe, consumer_lag
from modpipe.core.settings import Settings
from streams.app import TriageWorker
from tests.integration.conftest import Outputs, run_until, wait_until

TEXTS = ["have a nice day", "you are a fucking idiot", "your opinion is garbage"]


def post(i: int) -> dict[str, object]:
    return {"post_id": f"p{i}", "text": f"{TEXTS[i % 3]} {i}", "x_extra": i}


def posts(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps(post(i)).encode() for i in range(start, start + n)]


def ids(n: int) -> set[str]:
    return {f"p{i}" for i in range(n)}


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MODPIPE_APP_ID": settings.app_id,
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_TRIAGE__STATE_DIR": str(settings.triage.state_dir),
        **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
        **extra,
    }


WORKER = [sys.executable, "-m", "modpipe", "worker"]


async def run_worker_until(
    settings: Settings, outputs: Outputs, n: int, classifier: Classifier | None = None
) -> int:
    """Run a triage worker until every one of the first `n` posts is decided, then stop it."""
    worker = TriageWorker(settings, classifier or build_classifier(settings), Metrics())
    return await run_until(worker, lambda: outputs.decided() >= ids(n), f"{n} posts decided")


async def read_back(settings: Settings, where: list[tuple[int, int]]) -> list[bytes | None]:
    """The values on the posts topic at each (partition, offset)."""
    consumer = AIOKafkaConsumer(**consumer_options(settings.kafka, None))
    await consumer.start()
    try:
        parts = {p: TopicPartition(settings.topics.posts, p) for p, _ in where}
        consumer.assign(list(parts.values()))
        values = []
        for partition, offset in where:
            consumer.seek(parts[partition], offset)
            msg = await asyncio.wait_for(consumer.getone(parts[partition]), 10)
            assert msg.offset == offset
            values.append(msg.value)
        return values
    finally:
        await consumer.stop()


async def test_every_post_is_decided_or_escalated_and_bad_input_goes_to_dlq(
    settings: Settings, outputs: Outputs
) -> None:
    bad = [
        b"not json",
        b"[1]",
        b'{"post_id": 7, "text": "x"}',
        b'{"post_id": "no-text"}',
        json.dumps({"post_id": "big", "text": "x" * 70_000}).encode(),
    ]
    await publish(settings.kafka, settings.topics.posts, posts(300) + bad)
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    code = await run_until(
        worker,
        lambda: outputs.decided() >= ids(300) and len(outputs.dead_letters) >= len(bad),
        "300 posts decided and 5 dead letters",
    )
    assert code == 0
    await outputs.settle()
    assert outputs.decided() == ids(300)
    assert outputs.duplicates() == 0
    verdict = next(v[0] for v in outputs.verdicts.values())
    assert verdict["tier"] == "small" and verdict["policy_version"]
    assert outputs.escalations, "the test texts must escalate some posts"
    for pid, (escalation,) in outputs.escalations.items():
        assert escalation["post"] == post(int(pid[1:])), "the post travels as received"
    letters = outputs.dead_letters
    assert sorted(base64.b64decode(d["value_b64"]) for d in letters) == sorted(bad)
    assert {d["topic"] for d in letters} == {settings.topics.posts}
    assert all(d["error"] for d in letters)
    # Each dead letter points at the very message it holds.
    found = await read_back(settings, [(d["partition"], d["offset"]) for d in letters])
    assert found == [base64.b64decode(d["value_b64"]) for d in letters]


async def test_restart_resumes_from_committed_offsets(
    make_settings, outputs: Outputs, settings: Settings
) -> None:
    small_batches = make_settings(
        app_id=settings.app_id,
        topics=settings.topics.model_dump(),
        triage={"batch_max": 50, "audit_rate": 0.0},
    )
    await publish(settings.kafka, settings.topics.posts, posts(1000))
    worker = TriageWorker(small_batches, build_classifier(small_batches), Metrics())
    assert await asyncio.wait_for(worker.run(max_posts=300), 60) == 0
    await outputs.settle()
    first = len(outputs.decided())
    assert 300 <= first < 1000

    assert await run_worker_until(small_batches, outputs, 1000) == 0
    await outputs.settle()
    assert outputs.decided() == ids(1000)
    # A bounded stop commits everything it published: the restart re-reads nothing.
    assert outputs.duplicates() == 0, f"{outputs.duplicates()} duplicates ({first} done first)"


class ExplodingClassifier:
    """Raises an unexpected error on its third batch, like a bug would."""

    model = "exploding"
    kind: Literal["cpu", "gpu"] = "cpu"

    def __init__(self) -> None:
        self.calls = 0

    async def classify(self, texts: Sequence[str]) -> list[Classification | ClassifierError]:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("bug in the classifier")
        return [Classification({"harassment": 0.0}, 1) for _ in texts]

    async def aclose(self) -> None:
        pass


async def test_a_failed_batch_is_not_committed(
    make_settings, settings: Settings, outputs: Outputs
) -> None:
    cfg = make_settings(
        app_id=settings.app_id,
        topics=settings.topics.model_dump(),
        triage={"batch_max": 20, "audit_rate": 0.0},
    )
    await publish(settings.kafka, settings.topics.posts, posts(200))
    worker = TriageWorker(cfg, ExplodingClassifier(), Metrics())
    assert await asyncio.wait_for(worker.run(), 60) == 1  # the failure stops it
    await outputs.settle()
    assert len(outputs.decided()) < 200

    assert await run_worker_until(cfg, outputs, 200) == 0
    assert outputs.decided() == ids(200)


async def committed_at_least(settings: Settings, total: int, n: int, timeout_s: float) -> int:
    """Wait until the worker's group has committed offsets covering `n` posts; how many."""
    deadline = time.monotonic() + timeout_s
    async with LagProbe(settings.kafka) as probe:
        while True:
            lag = await probe.lag(settings.app_id, settings.topics.posts)
            if (done := total - sum(lag.values())) >= n:
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s: only {done} committed")
            await asyncio.sleep(0.05)


async def test_sigkill_mid_run_loses_nothing(settings: Settings, outputs: Outputs) -> None:
    total, batch_max = 10_000, 100
    env = worker_env(settings, MODPIPE_TRIAGE__BATCH_MAX=str(batch_max))
    await publish(settings.kafka, settings.topics.posts, posts(total))
    proc = await asyncio.create_subprocess_exec(*WORKER, env=env)
    try:
        await wait_until(lambda: len(outputs.decided()) >= 1, 60, "the first verdicts")
        started, done_then = time.monotonic(), len(outputs.decided())
        # Kill once commits are under way, so the restart has a commit to resume from.
        committed = await committed_at_least(settings, total, 1000, 60)
    finally:
        proc.kill()
        await asyncio.wait_for(proc.wait(), 30)
    # The rate the worker ran at before the kill, measured in this run.
    rate = (len(outputs.decided()) - done_then) / (time.monotonic() - started)
    await outputs.settle()
    done_at_kill = len(outputs.decided())
    assert done_at_kill < total, "killed too late to prove anything"

    rerun = await asyncio.create_subprocess_exec(*WORKER, env=env)
    try:
        await wait_until(lambda: outputs.decided() >= ids(total), 120, "every post")
    finally:
        rerun.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(rerun.wait(), 60) == 0
    await outputs.settle()
    assert outputs.decided() == ids(total)
    duplicates = outputs.duplicates()
    # The restart resumes from the last commit: nothing committed is decided twice.
    assert duplicates <= done_at_kill - committed
    # What a SIGKILL re-processes is what was published but not yet committed:
    # - the batches in flight (up to max_batches_in_flight of batch_max posts), whose
    #   records may be on the broker before their acks;
    # - the posts acked since the last commit: Faust commits every commit_interval_s but
    #   skips a tick while the previous commit is still in flight, so up to two intervals
    #   of posts at the rate measured above.
    triage = settings.triage
    in_flight = triage.max_batches_in_flight * batch_max
    bound = in_flight + math.ceil(2 * triage.commit_interval_s * rate)
    print(
        f"duplicate outputs after SIGKILL: {duplicates} of {total} (bound {bound} = "
        f"{in_flight} in flight + 2 x {triage.commit_interval_s}s x {rate:.0f} posts/s; "
        f"{done_at_kill} done and {committed} committed at the kill)"
    )
    assert duplicates <= bound


async def test_sigterm_finishes_the_batch_and_commits(settings: Settings, outputs: Outputs) -> None:
    await publish(settings.kafka, settings.topics.posts, posts(2000))
    proc = await asyncio.create_subprocess_exec(*WORKER, env=worker_env(settings))
    try:
        await wait_until(lambda: len(outputs.decided()) >= 200, 60, "the first verdicts")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    await outputs.settle()
    done = len(outputs.decided())
    lag = await consumer_lag(settings.kafka, settings.app_id, settings.topics.posts)
    assert 2000 - sum(lag.values()) == done, "the committed offsets must cover every output"
    # A clean stop commits what it published: a restart re-reads nothing already done.
    assert await run_worker_until(settings, outputs, 2000) == 0
    await outputs.settle()
    assert outputs.decided() == ids(2000)
    duplicates = outputs.duplicates()
    assert duplicates == 0, f"{duplicates} duplicates after a graceful stop ({done} done before)"


async def test_produce_from_stdin_reaches_the_worker(settings: Settings, outputs: Outputs) -> None:
    env = {
        **os.environ,
        **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in settings.topics.model_dump().items()},
    }
    lines = b"\n".join(posts(20)) + b"\nnot json\n\n"
    out = subprocess.run(
        [sys.executable, "-m", "modpipe", "produce", "-"],
        input=lines,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert b"published 21 posts" in out.stdout  # the blank line is skipped, not sent
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    code = await run_until(
        worker,
        lambda: outputs.decided() >= ids(20) and len(outputs.dead_letters) >= 1,
        "20 outputs and a dead letter",
    )
    assert code == 0
    await outputs.settle()
    assert outputs.decided() == ids(20)
    assert [base64.b64decode(d["value_b64"]) for d in outputs.dead_letters] == [b"not json"]


async def test_posts_of_an_aborted_transaction_are_never_triaged(
    settings: Settings, outputs: Outputs
) -> None:
    # A platform that publishes its posts in transactions: what it aborted is not a post.
    platform = AIOKafkaProducer(
        **client_options(settings.kafka), transactional_id=f"{settings.app_id}-platform"
    )
    await platform.start()
    try:
        for values, commit in ((posts(10), False), (posts(10, start=10), True)):
            await platform.begin_transaction()
            for value in values:
                await platform.send_and_wait(settings.topics.posts, value, key=value[:16])
            await (platform.commit_transaction() if commit else platform.abort_transaction())
    finally:
        await platform.stop()
    worker = TriageWorker(settings, build_classifier(settings), Metrics())
    committed = ids(20) - ids(10)
    code = await run_until(worker, lambda: outputs.decided() >= committed, "10 posts decided")
    assert code == 0
    await outputs.settle()
    assert outputs.decided() == committed, "a post of the aborted transaction was triaged"
