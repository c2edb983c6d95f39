"""Which offsets are safe to commit when messages finish out of order, and what they owe.

The escalator decides many posts at once and the console's feeder stores items as they
come; both commit a partition only up to its first message not yet finished. Under
exactly-once, what each finished message owes is held here until its offset is
committable, then goes into that commit's transaction with the offset.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import TopicPartition

from modpipe.core.records import Outgoing


class OffsetTracker:
    """Per partition: the committable position is the lowest offset still in flight, or one
    past the highest finished offset when nothing is in flight. A message that never
    finishes (a crash) holds its partition's position back, so it is read again."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._owed: dict[TopicPartition, dict[int, Sequence[Outgoing]]] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int, owed: Sequence[Outgoing] = ()) -> None:
        """`offset` is done; `owed` are the records to publish with its commit, if any."""
        pending = self._pending.get(tp)
        if pending is None or offset not in pending:
            return  # the partition was revoked meanwhile: its next owner decides it
        pending.discard(offset)
        if owed:
            self._owed.setdefault(tp, {})[offset] = owed

    def in_flight(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that moved since the last `mark_committed`."""
        out = {}
        for tp, nxt in self._next.items():
            pending = self._pending.get(tp)
            position = min(pending) if pending else nxt
            if position != self._committed.get(tp):
                out[tp] = position
        return out

    def last_committed(self, tp: TopicPartition) -> int | None:
        """The position last marked committed for `tp`, if any."""
        return self._committed.get(tp)

    def owed(self, tp: TopicPartition, position: int) -> list[Outgoing]:
        """The records owed by `tp`'s finished messages below `position`, in offset order."""
        held = self._owed.get(tp, {})
        return [r for offset in sorted(o for o in held if o < position) for r in held[offset]]

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        """These positions are committed, and the records owed below them published."""
        self._committed.update(positions)
        for tp, position in positions.items():
            held = self._owed.get(tp)
            if held:
                for offset in [o for o in held if o < position]:
                    del held[offset]

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop revoked partitions (after their in-flight work was awaited and committed)."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
            self._owed.pop(tp, None)
