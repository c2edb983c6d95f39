"""Integration fixtures: the real local Kafka broker and Redis (started if not running)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from modpipe.cli.demo import Collector
from modpipe.core.kafka import ensure_pipeline_topics
from modpipe.core.settings import Settings, load_settings
from tests.conftest import CONFIG


@pytest.fixture(scope="session", autouse=True)
def local_stack() -> None:
    """Kafka and Redis on 127.0.0.1, as `make test` starts them (idempotent)."""
    from modpipe.stack import stack_up

    stack_up(load_settings(CONFIG))


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def collector(settings: Settings) -> AsyncIterator[Collector]:
    """Everything published on the test's output topics from now on."""
    await ensure_pipeline_topics(settings)
    c = Collector(settings, marker="")
    await c.start()
    yield c
    await c.stop()
