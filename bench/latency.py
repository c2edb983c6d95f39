"""The latency figure: a `modpipe worker` process under a steady load (bench/load.py),
each verdict's Kafka timestamp less its post's, and the worker's peak RSS."""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.harness import PARTITIONS, ROOT, Bench, publish_all
from modpipe.core.kafka import ensure_topics

DROP_FIRST_S = 5.0  # the latency counts posts after the worker's first seconds


def percentiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


async def read_timestamps(bootstrap: str, topic: str, partitions: int) -> dict[bytes, int]:
    """Key -> Kafka timestamp (ms) of every record now in `topic` (the first per key)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: dict[bytes, int] = {}
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                for r in records:
                    if r.key is not None:
                        out.setdefault(r.key, r.timestamp)
        return out
    finally:
        await consumer.stop()


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def steady_latency(
    bench: Bench, rate: float, seconds: float
) -> tuple[dict[str, float], float]:
    """Latency percentiles (ms) at `rate` posts/s, and the worker's peak RSS (MB)."""
    settings = bench.variant("lat")
    t = settings.topics
    await ensure_topics(
        settings.kafka, [t.posts, t.verdicts, t.escalations, t.review, t.dlq], PARTITIONS
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MODPIPE_APP_ID": settings.app_id,
        "MODPIPE_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "MODPIPE_DELIVERY__FINAL_VERDICT_TTL_S": "600",
        "MODPIPE_METRICS__PORT": "0",
        "MODPIPE_TRIAGE__AUDIT_RATE": "0",
        **{f"MODPIPE_TOPICS__{k.upper()}": v for k, v in t.model_dump().items()},
    }
    if bench.config_path is not None:
        env["MODPIPE_CONFIG"] = str(bench.config_path)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modpipe", "--log-level", "WARNING", "worker", env=env
    )
    try:
        # Readiness: a warm-up post decided means partitions are assigned and the model loaded.
        await publish_all(
            bench.bootstrap, t.posts, [(b"warmup0", b'{"post_id": "warmup0", "text": "hi"}')]
        )
        await wait_for_keys(bench.bootstrap, [t.verdicts, t.escalations], 1, 90.0)
        load = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            bench.bootstrap,
            t.posts,
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await load.communicate()
        published = int(out.decode().strip() or 0)
        await wait_for_keys(bench.bootstrap, [t.verdicts, t.escalations], published + 1, 60.0)
        rss = peak_rss_mb(worker.pid)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
            await asyncio.wait_for(worker.wait(), 60)
    sent = await read_timestamps(bench.bootstrap, t.posts, PARTITIONS)
    decided = await read_timestamps(bench.bootstrap, t.verdicts, PARTITIONS)
    start = min(ts for key, ts in sent.items() if key.startswith(b"l")) + DROP_FIRST_S * 1000
    latencies = [
        float(decided[key] - ts)
        for key, ts in sent.items()
        if key.startswith(b"l") and ts >= start and key in decided
    ]
    return percentiles(latencies), rss


async def wait_for_keys(bootstrap: str, topics: list[str], n: int, timeout_s: float) -> None:
    """Wait until `topics` together hold `n` distinct keys; raise after `timeout_s`."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    keys: set[bytes] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(keys) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(keys)} of {n} posts decided in {timeout_s:.0f}s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                keys.update(r.key for r in records if r.key is not None)
    finally:
        await consumer.stop()
