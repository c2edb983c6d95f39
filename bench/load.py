"""Publishes posts at a steady rate, in its own process, for the latency benchmark.

    python -m bench.load BOOTSTRAP TOPIC --rate 1000 --seconds 35 [--prefix L]

Posts are keyed by post_id (`{prefix}{i}`) and carry the producer's CreateTime, the start
of the latency that bench/triage.py measures. Sends are paced in 10 ms steps from a fixed
schedule, so a slow step is caught up rather than lowering the rate. Prints how many
posts the broker acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiokafka import AIOKafkaProducer

from bench.harness import TEXTS

STEP_S = 0.01


async def publish_at(bootstrap: str, topic: str, rate: float, seconds: float, prefix: str) -> int:
    """Publish `rate` posts a second for `seconds`; returns how many were acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    await producer.start()
    futures = []
    try:
        started = time.monotonic()
        total = int(rate * seconds)
        sent = 0
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                value = json.dumps({"post_id": f"{prefix}{sent}", "text": f"{TEXTS[sent % 5]}"})
                futures.append(
                    await producer.send(topic, value.encode(), key=f"{prefix}{sent}".encode())
                )
                sent += 1
            await asyncio.sleep(STEP_S)
        results = await asyncio.gather(*futures, return_exceptions=True)
        return sum(not isinstance(r, BaseException) for r in results)
    finally:
        await producer.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=35.0)
    p.add_argument("--prefix", default="l")
    args = p.parse_args()
    print(asyncio.run(publish_at(args.bootstrap, args.topic, args.rate, args.seconds, args.prefix)))


if __name__ == "__main__":
    main()
