"""Bulk delivery from Faust's consumer: each fetch handed as one list to one handler.

faust-streaming delivers one message at a time (a few tasks, a queue hop and an awaited
ack per message), which holds the triage worker to a fifth of a plain aiokafka loop.
This module replaces only the consumer's drain loop (`Consumer._drain_messages`, run by
Faust's Fetcher service): each `getmany` result becomes one `Fetched` (the posts, and the
offsets to ack) for one handler, and the next fetch starts as soon as the handler
returns. Faust keeps owning the consumer group, assignment, rebalances, seeks and
commits. Acks are Faust's own bookkeeping, `Consumer.ack` done once per partition per
fetch rather than once per message, and Faust's commit timer commits the first unbroken
run of acked offsets per partition, so the handler's owner must ack in offset order,
without holes.

It also makes the consumer read at read_committed: Faust does only under its own
exactly-once mode, which modpipe does not use (it owns its transactions), and a post that
a platform published in a transaction it then aborted must never be triaged.

Every Faust internal modpipe touches is named in this module and nowhere else (the
consumer members in INTERNALS and ATTRIBUTES, the consumer thread's in THREAD_INTERNALS,
and Faust's `ack_lock`); `check_internals` refuses any other faust-streaming version or a
changed internal at start, and tests/unit/streams/test_delivery.py fails when one of them
changes.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from modpipe.core.errors import ConfigError
from modpipe.core.records import Incoming

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"  # the version these internals were read from; pyproject pins it

# What the drain loop below relies on or replaces, by a digest of its source: a change in
# any of them means this module must be re-read against the new Faust.
INTERNALS: dict[str, str] = {
    "_drain_messages": "44a2500309e83c63",  # replaced; `_drain` follows it
    "getmany": "4b168d84882a70d6",  # followed by `_drain` (filtering, generation check)
    "_wait_next_records": "6218e1969a636b3f",
    "_add_gap": "4df2573ded7c1c2c",
    "ack": "5fcf41cf45153475",  # `ack` below does the same, for many offsets at once
    "_new_offset": "1d2c7ea89a7ad4f1",  # commits from what `ack` records
}
# The consumer thread's: it builds the aiokafka consumer, whose isolation level is set
# before it starts (aiokafka's `_isolation_level`, read by `start`).
THREAD_INTERNALS: dict[str, str] = {
    "_create_worker_consumer": "c2701bfc3e6f6cad",
}
ATTRIBUTES = (
    "_thread",
    "_read_offset",
    "_buffered_partitions",
    "_n_acked",
    "_commit_every",
    "_stopped",
    "_acked",
    "_acked_index",
    "_committed_offset",
    "_waiting_for_ack",
)


@dataclass(slots=True)
class Fetched:
    """One fetch: its posts in offset order per partition, and the offsets to ack for it."""

    posts: list[Incoming]
    offsets: dict[TP, list[int]]


Handler = Callable[[Fetched], Awaitable[None]]


class FaustInternalsChanged(ConfigError):
    """The installed faust-streaming is not the one streams/delivery.py was written for."""


def check_internals(consumer: Any) -> None:
    """Raise FaustInternalsChanged unless the consumer has every internal used here."""
    installed = version("faust-streaming")
    if installed != FAUST_VERSION:
        raise FaustInternalsChanged(
            f"faust-streaming {installed} is installed; streams/delivery.py relies on "
            f"internals of {FAUST_VERSION}: re-read them and update the pin"
        )
    _check_digests(type(consumer), INTERNALS, "Consumer")
    missing = [a for a in ATTRIBUTES if not hasattr(consumer, a)]
    if missing:
        raise FaustInternalsChanged(f"faust Consumer lacks {missing}: re-read streams/delivery.py")
    _check_digests(type(consumer._thread), THREAD_INTERNALS, "ConsumerThread")


def _check_digests(owner: type, internals: dict[str, str], name: str) -> None:
    for member, digest in internals.items():
        found = source_digest(getattr(owner, member, None))
        if found != digest:
            raise FaustInternalsChanged(
                f"faust {name}.{member} changed (source digest {found}, expected {digest}): "
                "streams/delivery.py must be re-read against the installed Faust"
            )


def source_digest(member: object) -> str:
    """A short digest of a function's source, or "missing"."""
    if member is None:
        return "missing"
    return hashlib.sha256(inspect.getsource(member).encode()).hexdigest()[:16]  # type: ignore[arg-type]


def install_bulk_delivery(app: faust.App, handler: Handler) -> None:
    """Deliver every fetch from `app`'s subscribed topics to `handler`, as one list.

    The caller subscribes the topics (iterating a topic registers it with the conductor)
    and acks each message with `ack` once its results are published.
    """
    consumer = app.consumer
    check_internals(consumer)

    async def drain(fetcher: Any) -> None:
        await _drain(app, consumer, fetcher, handler)

    # An instance attribute shadows the method the Fetcher service calls.
    consumer._drain_messages = drain  # type: ignore[attr-defined]
    _read_committed(consumer._thread)  # type: ignore[attr-defined]


def _read_committed(thread: Any) -> None:
    create = thread._create_worker_consumer

    def create_read_committed(transport: Any) -> Any:
        kafka_consumer = create(transport)
        if not hasattr(kafka_consumer, "_isolation_level"):  # what `start` reads, in aiokafka
            raise FaustInternalsChanged("aiokafka's consumer has no _isolation_level")
        kafka_consumer._isolation_level = "read_committed"
        return kafka_consumer

    thread._create_worker_consumer = create_read_committed


def ack(app: faust.App, fetched: Fetched) -> None:
    """Mark `fetched` done; Faust commits it with its next commit (in offset order).

    `Consumer.ack` for each of its offsets, in bulk: the same checks and bookkeeping,
    under the same lock, without a message object per post.
    """
    consumer: Any = app.consumer
    acks_enabled_for = app.topics.acks_enabled_for
    with ack_lock:
        for tp, offsets in fetched.offsets.items():
            if not acks_enabled_for(tp.topic):
                continue
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            fresh = [o for o in offsets if (committed is None or o >= committed) and o not in index]
            index.update(fresh)
            consumer._acked[tp].extend(fresh)
            consumer._n_acked += len(fresh)
        notify(consumer._waiting_for_ack)


def committed_offsets(app: faust.App) -> dict[TP, int | None]:
    """Faust's record of each partition's committed offset, as its last seek read them."""
    return dict(app.consumer._committed_offset)  # type: ignore[attr-defined]


async def _drain(app: faust.App, consumer: Any, fetcher: Any, handler: Handler) -> None:
    # Faust's own loop (faust/transport/consumer.py, _drain_messages) less the per-message
    # callback: the same stop checks, read-offset filter, gap bookkeeping and
    # commit-every, then one handler call per fetch.
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    read_offset: dict[TP, int | None] = consumer._read_offset
    acks_enabled_for = app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            records, active = await consumer._wait_next_records(1.0)
            if not records or consumer.should_stop or not consumer.flow_active:
                continue
            generation = app.consumer_generation_id
            posts: list[Incoming] = []
            offsets: dict[TP, list[int]] = {}
            for tp, tp_records in records.items():
                if not (active is None or tp in active or tp in consumer._buffered_partitions):
                    continue
                r_offset = read_offset.get(tp)
                tp_offsets = offsets[tp] = []
                for record in tp_records:
                    offset = record.offset
                    if r_offset is not None and offset < r_offset:
                        continue  # already delivered (Faust drops these too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(record.topic):
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    # No Faust message and no `track_message`: Faust's set of unacked
                    # messages only serves `stream_wait_empty`, which the worker turns off.
                    posts.append(
                        Incoming(
                            record.key,
                            record.value,
                            record.topic,
                            record.partition,
                            offset,
                            record.timestamp / 1000.0,
                        )
                    )
                    tp_offsets.append(offset)
                    r_offset = offset
            if not posts or app.consumer_generation_id != generation:
                continue  # a rebalance began: Faust seeks back to the committed offsets
            if commit_every is not None and consumer._n_acked >= commit_every:
                consumer._n_acked = 0
                await consumer.commit()
            await handler(Fetched(posts, offsets))
            read_offset.update((tp, o[-1]) for tp, o in offsets.items() if o)
    except consumer.consumer_stopped_errors:
        if not app.should_stop:
            raise
        log.info("broker stopped the consumer while stopping")


def untaken(fetched: Fetched, next_offset: dict[TopicPartition, int]) -> Fetched:
    """`fetched` less the messages below each partition's next offset to take, which then
    moves past the rest (they are taken now)."""
    start: dict[tuple[str, int], int] = {}
    offsets: dict[TP, list[int]] = {}
    for ftp, tp_offsets in fetched.offsets.items():
        tp = TopicPartition(ftp.topic, ftp.partition)
        start[ftp.topic, ftp.partition] = first = next_offset.get(tp, 0)
        offsets[ftp] = kept = [o for o in tp_offsets if o >= first]
        if kept:
            next_offset[tp] = kept[-1] + 1
    posts = [m for m in fetched.posts if m.offset >= start.get((m.topic, m.partition), 0)]
    if len(posts) < len(fetched.posts):
        log.info("skipped %d posts taken or committed before", len(fetched.posts) - len(posts))
    return Fetched(posts, offsets)
