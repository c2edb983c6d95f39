"""One console process: its Redis store, accounts, Kafka producer, feeder and loops.

`start()` creates missing topics, then runs three background tasks until `stop()`: the
feeder (review records into Redis, offsets committed past published decisions only),
the outbox (republishes decisions a crashed or cut-off process recorded but did not
finish publishing), and the gauges (queue depth and age, tier 1's error estimate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from modpipe.compliance.consuming import ensure_compliance_topics
from modpipe.compliance.ledger import Ledger
from modpipe.core.errors import ReviewStoreUnavailable
from modpipe.core.kafka import build_producer, ensure_pipeline_topics
from modpipe.core.metrics import Metrics
from modpipe.core.records import wire_limits
from modpipe.core.redis_client import connect_redis
from modpipe.core.settings import Settings
from modpipe.core.transactions import TransactionalPublisher
from modpipe.review.accounts import Accounts
from modpipe.review.appeals import AppealIntake
from modpipe.review.desk import Desk
from modpipe.review.feeder import Feeder
from modpipe.review.store import ReviewStore, connect

log = logging.getLogger(__name__)

OUTBOX_INTERVAL_S = 1.0
RESTART_BACKOFF_S = (0.5, 30.0)  # first and longest wait before a crashed task restarts
UNREADY_AFTER_CRASH_S = 30.0  # /readyz fails this long after any background task crashed


class Console:
    """Everything one console process runs besides its HTTP server."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = ReviewStore(
            connect(settings.redis, settings.review.redis_url), settings.redis.key_prefix
        )
        self.accounts = Accounts(self.store, settings.review)
        request_bytes = wire_limits(settings.kafka.max_message_bytes).request_bytes
        self._producer = build_producer(settings.kafka, max_request_size=request_bytes, linger_ms=2)
        # Each process its own transactional id: decisions are made once (the store's
        # scripts), so there is no zombie to fence, only a verdict and label to keep
        # together; the feeder's dead letters go out through it too.
        self._decisions = (
            TransactionalPublisher(
                settings.kafka,
                f"{settings.review.group_id}.decisions.{uuid.uuid4().hex[:12]}",
                max_request_size=request_bytes,
            )
            if settings.delivery.guarantee == "exactly_once"
            else None
        )
        self.desk = Desk(settings, self.store, self._producer, metrics, self._decisions)
        self.feeder = Feeder(settings, self.store, self.desk.send, metrics, self._decisions)
        self.ledger = Ledger(  # appeals: the posts' verdict histories (docs/compliance.md)
            connect_redis(settings.redis, timeout_s=max(settings.redis.timeout_s, 2.0)),
            settings.redis.key_prefix,
            settings.appeals.window_days,
        )
        self.appeals = AppealIntake(settings, self.store, self.ledger, self.desk.send, metrics)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._crashed_at: dict[str, float] = {}  # task name -> monotonic time of its last crash

    async def start(self) -> None:
        """Create missing topics, start the producer and the background tasks."""
        await ensure_pipeline_topics(self.settings)  # sized like the workers create them
        await ensure_compliance_topics(self.settings)  # the appeals topic
        await self._producer.start()
        work: dict[str, Callable[[], Awaitable[object]]] = {
            "review-feeder": lambda: self.feeder.run(self._stopping),
            "review-appeals": lambda: self.appeals.run(self._stopping),
            "review-outbox": lambda: self._every(OUTBOX_INTERVAL_S, self.desk.republish_overdue),
            "review-gauges": lambda: self._every(
                self.settings.review.stats_interval_s, self.desk.refresh_gauges
            ),
        }
        self._tasks = [
            asyncio.create_task(self._supervised(name, run), name=name)
            for name, run in work.items()
        ]
        log.info(
            "review console started group=%s topic=%s",
            self.settings.review.group_id,
            self.settings.topics.review,
        )

    async def _supervised(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        """Run `run` until stopping; a crash is logged, marks the console unready, and
        restarts it after a backoff that doubles with each crash in a row."""
        backoff_s = RESTART_BACKOFF_S[0]
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await run()
                return  # it returns only when stopping
            except Exception:
                self._crashed_at[name] = time.monotonic()
                log.exception("background task %s crashed; restarting in %.1fs", name, backoff_s)
            if time.monotonic() - started > RESTART_BACKOFF_S[1]:
                backoff_s = RESTART_BACKOFF_S[0]  # it had been running fine: start over
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff_s)
            backoff_s = min(backoff_s * 2, RESTART_BACKOFF_S[1])

    async def check_tasks(self) -> None:
        """A readiness check: raises while a background task crashed recently."""
        now = time.monotonic()
        recent = sorted(n for n, t in self._crashed_at.items() if now - t < UNREADY_AFTER_CRASH_S)
        if recent:
            raise RuntimeError(f"background task crashed recently: {', '.join(recent)}")

    async def _every(self, interval_s: float, work: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await work()
            except (ReviewStoreUnavailable, KafkaError) as exc:
                log.warning("%s failed: %s", getattr(work, "__name__", "work"), exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)

    async def stop(self, budget_s: float = 15.0) -> None:
        """Stop the loops (the feeder commits what it may), then the producer and Redis."""
        self._stopping.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=budget_s)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s failed", task.get_name(), exc_info=task.exception())
        await self._producer.stop()
        if self._decisions is not None:
            await self._decisions.stop()
        await self.store.aclose()
        await self.ledger.aclose()
