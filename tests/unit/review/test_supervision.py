"""The console's background tasks are supervised: a crash is logged, the task restarts,
and readiness fails for a while."""

from __future__ import annotations

import asyncio
import logging

import pytest

from modpipe.core.metrics import Metrics
from modpipe.core.settings import Settings
from modpipe.review import console as console_module
from modpipe.review.console import Console


async def test_a_crashed_task_is_logged_restarted_and_unready(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(console_module, "RESTART_BACKOFF_S", (0.01, 0.05))
    console = Console(settings, Metrics())
    runs = 0
    running = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        running.set()
        await console._stopping.wait()

    await console.check_tasks()  # ready before anything crashed
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(console._supervised("review-test", flaky))
        await asyncio.wait_for(running.wait(), 5)
    assert runs == 3  # crashed twice, restarted each time
    assert sum("review-test crashed" in r.getMessage() for r in caplog.records) == 2
    with pytest.raises(RuntimeError, match="review-test"):
        await console.check_tasks()
    console._stopping.set()
    await asyncio.wait_for(task, 5)
    await console.store.aclose()
