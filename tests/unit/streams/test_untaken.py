"""Exactly once: a message is handed to triage at most once per assignment."""

from __future__ import annotations

from aiokafka import TopicPartition
from faust.types import TP

from modpipe.core.records import Incoming
from streams.delivery import Fetched, untaken


def fetch(partition: int, offsets: range) -> Fetched:
    return Fetched(
        [Incoming(None, b"{}", "posts", partition, o, 0.0) for o in offsets],
        {TP("posts", partition): list(offsets)},
    )


def test_a_fetch_from_before_the_take_over_and_a_seek_hand_each_offset_once() -> None:
    # The soak's duplicate: a fetch made before the take-over (from an older committed
    # offset) and the one after the take-over's seek overlap; a post in both was
    # committed twice in one transaction.
    next_offset = {TopicPartition("posts", 0): 100}  # committed, read after fencing
    before = untaken(fetch(0, range(95, 140)), next_offset)
    assert [m.offset for m in before.posts] == list(range(100, 140))
    after_seek = untaken(fetch(0, range(100, 180)), next_offset)
    assert [m.offset for m in after_seek.posts] == list(range(140, 180))
    assert after_seek.offsets[TP("posts", 0)] == list(range(140, 180))


def test_gaps_in_offsets_are_taken_as_they_come() -> None:
    # A transactional producer upstream leaves a commit marker's offset between batches.
    next_offset = {TopicPartition("posts", 1): 10}
    untaken(fetch(1, range(10, 20)), next_offset)
    later = untaken(fetch(1, range(21, 30)), next_offset)
    assert [m.offset for m in later.posts] == list(range(21, 30))


def test_partitions_are_apart() -> None:
    next_offset = {TopicPartition("posts", 0): 5}
    both = Fetched(
        fetch(0, range(0, 10)).posts + fetch(1, range(0, 3)).posts,
        {TP("posts", 0): list(range(0, 10)), TP("posts", 1): [0, 1, 2]},
    )
    kept = untaken(both, next_offset)
    assert [(m.partition, m.offset) for m in kept.posts] == [(0, o) for o in range(5, 10)] + [
        (1, 0),
        (1, 1),
        (1, 2),
    ]
