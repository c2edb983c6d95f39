"""The submitter: statements from `moderation.statements` into the Transparency Database.

Batches of at most `statements.batch_max` (the API's 100). Progress is kept so that a
crash resends nothing the database holds and loses nothing:

1. a puid marked `stored` in the ledger is never sent again;
2. a puid marked `sent` (an earlier attempt whose answer never came: a timeout, a 5xx,
   a kill -9) is first looked up with existing-puid; found means stored;
3. the rest is marked `sent`, then POSTed. Only 201 stores; a 422 whose only complaint is
   a duplicate puid means stored already; a 422 on content sends that statement to the
   DLQ (the rest is sent again, the batch being all or nothing); 429 waits Retry-After;
   5xx, timeouts and lost connections retry with backoff, through step 2;
4. the Kafka offsets are committed only after every statement of the batch is stored or
   dead-lettered, so a crash re-reads them and step 1 skips what was done.

Our own rate limit (`statements.requests_per_s`) stays under the API's 200/s and
12,000/min per token.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from modpipe.compliance.consuming import (
    Batches,
    BatchWorker,
    consumer,
    next_offsets,
    producer,
    sleep_or_stop,
)
from modpipe.compliance.database import (
    DUPLICATE,
    Reply,
    TransparencyDatabase,
    batch_duplicate,
    only_duplicate,
    refused_puids,
)
from modpipe.compliance.ledger import Ledger, LedgerUnavailable
from modpipe.compliance.rules import problems
from modpipe.core.dead_letters import dead_letter
from modpipe.core.decoding import load_object
from modpipe.core.errors import AccessError, InvalidRecord
from modpipe.core.kafka import publish
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Outgoing
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0


class Submitter(BatchWorker):
    """Statements in, the database's 201s out; `run(idle_exit=...)` for a bounded run."""

    def __init__(
        self, settings: Settings, database: TransparencyDatabase, ledger: Ledger, metrics: Metrics
    ) -> None:
        batch_max = settings.statements.batch_max
        super().__init__(settings, settings.topics.statements, max_records=batch_max)
        self.db = database
        self.ledger = ledger
        self.metrics = metrics
        self._consumer = consumer(settings, settings.statements.submit_group_id, batch_max)
        self._producer = producer(settings)  # dead letters only
        self._gauged = 0.0

    async def _after(self, batches: Batches) -> None:
        await self._gauges(batches)

    async def _handle(self, batches: Batches) -> None:
        oldest = min(r.timestamp for rs in batches.values() for r in rs) / 1000
        self.metrics.statements_oldest_pending.set(max(0.0, time.time() - oldest))
        while not self._stopping.is_set():
            try:
                letters, todo = self._read(batches)
                await self._deliver(todo, letters)
                if letters:
                    await publish(self._send, letters, self.settings.statements.publish_deadline_s)
                # Every statement of these offsets is stored or dead-lettered: commit.
                await self._consumer.commit(next_offsets(batches))
                return
            except (LedgerUnavailable, KafkaError) as exc:
                log.warning("statement batch paused: %s", exc)
                await sleep_or_stop(self._stopping, 1.0)

    def _read(
        self, batches: Batches
    ) -> tuple[list[Outgoing], dict[str, tuple[dict[str, Any], ConsumerRecord[bytes, bytes]]]]:
        letters: list[Outgoing] = []
        todo: dict[str, tuple[dict[str, Any], ConsumerRecord[bytes, bytes]]] = {}
        limit = self.settings.kafka.max_message_bytes
        for records in batches.values():
            for record in records:
                try:
                    statement = load_object(record.value, limit, 8)
                    wrong = problems(statement)
                    if wrong:
                        raise InvalidRecord(f"refused by the database's rules: {wrong}", "dsa")
                except InvalidRecord as exc:
                    letters.append(self._refused(record, exc))
                    continue
                todo.setdefault(statement["puid"], (statement, record))
        return letters, todo

    def _refused(self, record: ConsumerRecord[bytes, bytes], exc: InvalidRecord) -> Outgoing:
        self.metrics.statements_failed.inc()
        self.metrics.dlq.labels(exc.reason).inc()
        return dead_letter(Incoming.of(record), exc, self.settings.topics.dlq)

    async def _deliver(
        self,
        todo: dict[str, tuple[dict[str, Any], ConsumerRecord[bytes, bytes]]],
        letters: list[Outgoing],
    ) -> None:
        known_absent: set[str] = set()  # answered 422/429: all or nothing, so not stored
        backoff = 0.5
        while todo and not self._stopping.is_set():
            for puid in await self.ledger.stored(todo):
                del todo[puid]
            for puid in (await self.ledger.sent(todo)) - known_absent:
                if await self._found(puid):
                    del todo[puid]
            if not todo:
                return
            await self.ledger.mark_sent(todo)
            reply = await self.db.store([s for s, _ in todo.values()])
            self.metrics.statements_requests.labels(_status(reply)).inc()
            if reply.status == 201:
                await self.ledger.mark_stored(todo)
                self.metrics.statements_submitted.labels("created").inc(len(todo))
                return
            if reply.status in (401, 403):
                raise AccessError(f"the Transparency Database refused the token: {reply.status}")
            if reply.status == 422 and batch_duplicate(reply.body, len(todo)):
                # The database names no statement (its bulk insert hit the unique puid):
                # some are stored already; step 2 asks which, and the rest go again.
                known_absent -= set(todo)
                continue
            if reply.status == 422:
                known_absent |= set(todo)
                await self._refusals(reply, todo, letters)
                continue
            if reply.status == 429:
                known_absent |= set(todo)
                wait = reply.retry_after_s if reply.retry_after_s is not None else 1.0
                log.info("database rate limit: waiting %.1fs", wait)
                await sleep_or_stop(self._stopping, wait)
                continue
            # 5xx, timeout, connection: the batch may or may not be stored; step 2 asks.
            known_absent -= set(todo)
            log.warning("database answered %s; retrying in %.1fs", reply.status, backoff)
            await sleep_or_stop(self._stopping, backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _found(self, puid: str) -> bool:
        while not self._stopping.is_set():
            reply = await self.db.exists(puid)
            self.metrics.statements_requests.labels(_status(reply)).inc()
            if reply.status == 302:
                await self.ledger.mark_stored([puid])
                self.metrics.statements_submitted.labels("found").inc()
                return True
            if reply.status == 404:
                return False
            wait = reply.retry_after_s if reply.status == 429 and reply.retry_after_s else 1.0
            await sleep_or_stop(self._stopping, wait)
        return False

    async def _refusals(
        self,
        reply: Reply,
        todo: dict[str, tuple[dict[str, Any], ConsumerRecord[bytes, bytes]]],
        letters: list[Outgoing],
    ) -> None:
        order = list(todo)
        by_index = refused_puids(reply.body, len(order))
        if not by_index:  # a refusal we cannot attribute: none of them can go
            by_index = {i: {"batch": [json.dumps(reply.body)[:500]]} for i in range(len(order))}
        duplicates = []
        for i, errors in by_index.items():
            if i >= len(order):
                continue
            puid = order[i]
            if only_duplicate(errors):
                duplicates.append(puid)
            else:
                _, record = todo[puid]
                exc = InvalidRecord(f"the database refused the statement: {errors}", "dsa")
                letters.append(self._refused(record, exc))
            del todo[puid]
        if duplicates:
            await self.ledger.mark_stored(duplicates)
            self.metrics.statements_submitted.labels("duplicate").inc(len(duplicates))
            log.info("%d statements already stored (%s)", len(duplicates), DUPLICATE)

    async def _send(self, r: Outgoing) -> Any:
        return await self._producer.send(r.topic, r.value, key=r.key)

    async def _gauges(self, batches: Batches) -> None:
        now = time.monotonic()
        if now - self._gauged < 5.0 and not batches:
            return
        self._gauged = now
        assigned = list(self._consumer.assignment())
        if not assigned:
            return
        try:
            ends = await self._consumer.end_offsets(assigned)
            pending = 0
            for tp in assigned:
                committed = await self._consumer.committed(tp)
                pending += max(0, ends[tp] - (committed or 0))
        except KafkaError as exc:
            log.warning("pending statements unknown: %s", exc)
            return
        self.metrics.statements_pending.set(pending)
        if pending == 0:
            self.metrics.statements_oldest_pending.set(0)


def _status(reply: Reply) -> str:
    if isinstance(reply.status, str):
        return reply.status
    if reply.status >= 500:
        return "5xx"
    return str(reply.status) if reply.status in (201, 302, 404, 422, 429) else "other"
