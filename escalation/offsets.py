"""Which offsets are safe to commit when messages finish out of order."""

from __future__ import annotations

from aiokafka import TopicPartition


class OffsetTracker:
    """Per partition: the committable position is the lowest offset still in flight, or one
    past the highest finished offset when nothing is in flight. A message that never
    finishes (a crash) holds its partition's position back, so it is read again."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self._pending[tp].discard(offset)

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

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        self._committed.update(positions)

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop revoked partitions (after their in-flight work was awaited and committed)."""
        for tp in partitions:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
