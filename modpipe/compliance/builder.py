"""The statement builder: reads `moderation.verdicts`, writes `moderation.statements`.

Why a worker of its own rather than a step in triage or the escalator: every final
decision, whichever tier or person made it (triage, the escalator, the console, an
appeal), arrives on the verdicts topic, so one reader there sees them all and the
deciders stay untouched; a slow or failing compliance step never holds up moderation.

Each batch is one Kafka transaction: the statements (keyed by puid) and the dead letters
go out together with the consumed offsets, so a crash at any point publishes a batch's
statements exactly once for read_committed readers (the submitter, the report). A
verdict read twice upstream (before the pipeline's own transactions) is caught by the
`built` ledger. Every verdict also joins its post's history in Redis, which the appeal
intake reads. Input is read read_committed.
"""

from __future__ import annotations

import json
import logging

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from modpipe.compliance.consuming import (
    Batches,
    BatchWorker,
    consumer,
    next_offsets,
    producer,
    sleep_or_stop,
    stop_if_fenced,
)
from modpipe.compliance.ledger import Ledger, LedgerUnavailable
from modpipe.compliance.statements import Context, Source, build_statement, verdict_key
from modpipe.core.dead_letters import dead_letter
from modpipe.core.decoding import load_object
from modpipe.core.errors import ConfigError, InvalidRecord
from modpipe.core.metrics import Metrics
from modpipe.core.records import Incoming, Outgoing, Verdict
from modpipe.core.settings import Settings

log = logging.getLogger(__name__)


def parse_verdict(raw: bytes | None, max_bytes: int) -> Verdict:
    """Decode a verdict strictly; raises InvalidRecord."""
    obj = load_object(raw, max_bytes, 4)
    try:
        return Verdict.model_validate(obj)
    except ValidationError as exc:
        raise InvalidRecord(f"not a valid verdict: {exc.errors()[0]['msg']}", "schema") from exc


def source_of(notice: dict[str, object] | None) -> Source:
    """The statement's source: own initiative, a notice, or a trusted flagger's notice."""
    if notice is None:
        return "voluntary"
    return "trusted_flagger" if notice.get("trusted_flagger") else "notice"


class StatementBuilder(BatchWorker):
    """Verdicts in, statements of reasons out; `run(idle_exit=...)` for bounded runs."""

    def __init__(self, settings: Settings, ledger: Ledger, metrics: Metrics) -> None:
        if settings.policy.dsa is None:
            raise ConfigError("the policy file has no `dsa` mapping: statements need one")
        super().__init__(settings, settings.topics.verdicts)
        self.ledger = ledger
        self.metrics = metrics
        # One transaction per fetch: larger fetches, fewer commits (2.4k -> 4.8k verdicts/s).
        self._consumer = consumer(settings, settings.statements.group_id, max_records=2000)
        self._producer = producer(settings, f"{settings.statements.group_id}-builder")

    async def _handle(self, batches: Batches) -> None:
        while True:
            try:
                await self._once(batches)
                return
            except (LedgerUnavailable, KafkaError) as exc:
                stop_if_fenced(exc)
                # Nothing of this batch was committed: rewind and try the same records.
                log.warning("statement batch failed, retrying: %s", exc)
                for tp, records in batches.items():
                    self._consumer.seek(tp, records[0].offset)
                await sleep_or_stop(self._stopping, 1.0)
                if self._stopping.is_set():
                    return
                batches = await self._consumer.getmany(timeout_ms=1000)
                if not batches:
                    return

    async def _once(self, batches: Batches) -> None:
        s = self.settings
        out: list[Outgoing] = []
        verdicts: list[tuple[Verdict, str]] = []
        for records in batches.values():
            for record in records:
                try:
                    verdict = parse_verdict(record.value, s.kafka.max_message_bytes)
                except InvalidRecord as exc:
                    self.metrics.dlq.labels(exc.reason).inc()
                    out.append(dead_letter(Incoming.of(record), exc, s.topics.dlq))
                    continue
                assert record.value is not None
                verdicts.append((verdict, record.value.decode()))
        # Two Redis round trips per batch, not per verdict: the histories, the notices.
        await self.ledger.record_verdicts([(v.post_id, verdict_key(v), raw) for v, raw in verdicts])
        blocks = [v for v, _ in verdicts if v.action == "block"]
        notices = await self.ledger.notices(list({v.post_id: None for v in blocks}))
        statements: dict[str, Outgoing] = {}  # by puid: a repeated verdict counts once
        for v in blocks:
            statement = build_statement(v, s.policy, Context(source_of(notices.get(v.post_id))))
            assert statement is not None
            value = json.dumps(statement, ensure_ascii=False, separators=(",", ":")).encode()
            puid = statement["puid"]
            statements.setdefault(puid, Outgoing(s.topics.statements, puid.encode(), value))
        already = await self.ledger.built(statements)
        fresh = {p: o for p, o in statements.items() if p not in already}
        out.extend(fresh.values())
        # One transaction: these statements and dead letters, and the offsets they answer for.
        async with self._producer.transaction():
            for o in out:
                await self._producer.send(o.topic, o.value, key=o.key)
            offsets = next_offsets(batches)
            await self._producer.send_offsets_to_transaction(offsets, s.statements.group_id)
        await self.ledger.mark_built(fresh)
        for o in fresh.values():
            self.metrics.statements_built.labels(json.loads(o.value)["automated_decision"]).inc()
