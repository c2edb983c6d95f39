from aiokafka import TopicPartition

from modpipe.core.offsets import OffsetTracker

TP = TopicPartition("t", 0)
OTHER = TopicPartition("t", 1)


def test_position_waits_for_the_oldest_unfinished_offset() -> None:
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.started(TP, offset)
    t.finished(TP, 11)
    t.finished(TP, 12)
    assert t.committable() == {TP: 10}
    t.mark_committed({TP: 10})
    assert t.committable() == {}
    t.finished(TP, 10)
    assert t.committable() == {TP: 13}


def test_partitions_are_tracked_apart() -> None:
    t = OffsetTracker()
    t.started(TP, 5)
    t.started(OTHER, 40)
    t.finished(OTHER, 40)
    assert t.committable() == {TP: 5, OTHER: 41}
    assert t.in_flight() == 1


def test_an_older_offset_seen_again_never_moves_the_position_back() -> None:
    # After a seek back (a retried fetch, a rebalance), offsets below the highest
    # already started come in again; the position must stay one past the highest.
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.started(TP, offset)
        t.finished(TP, offset)
    t.started(TP, 11)
    assert t.committable() == {TP: 11}
    t.finished(TP, 11)
    assert t.committable() == {TP: 13}


def test_forget_drops_revoked_partitions() -> None:
    t = OffsetTracker()
    t.started(TP, 0)
    t.forget({TP})
    assert t.committable() == {} and t.in_flight() == 0


def test_a_reassigned_partition_commits_again_after_forget() -> None:
    # The last commit before a revocation can fail (the group is rebalancing), so the
    # broker may hold an older offset than the one marked. After reassignment the same
    # position must be committed again, not skipped as "already committed".
    t = OffsetTracker()
    for offset in (10, 11, 12):
        t.started(TP, offset)
        t.finished(TP, offset)
    t.mark_committed(t.committable())
    t.forget({TP})
    for offset in (10, 11, 12):  # read again from the broker's older offset
        t.started(TP, offset)
        t.finished(TP, offset)
    assert t.committable() == {TP: 13}


def test_records_owed_wait_for_their_offset_to_be_committable() -> None:
    # Exactly once: a post finished out of order publishes only with the commit that
    # passes it, never in a transaction whose offset stays below it.
    from modpipe.core.records import Outgoing

    t = OffsetTracker()
    for offset in (0, 1, 2):
        t.started(TP, offset)
    t.finished(TP, 1, [Outgoing("v", b"k1", b"one")])
    t.finished(TP, 2, [Outgoing("v", b"k2", b"two")])
    assert t.committable() == {TP: 0}
    assert t.owed(TP, 0) == []
    t.finished(TP, 0, [Outgoing("v", b"k0", b"zero")])
    assert t.committable() == {TP: 3}
    assert [r.value for r in t.owed(TP, 3)] == [b"zero", b"one", b"two"]
    t.mark_committed({TP: 3})
    assert t.owed(TP, 10) == []


def test_a_revoked_partition_finishing_late_owes_nothing() -> None:
    t = OffsetTracker()
    t.started(TP, 0)
    t.forget({TP})
    from modpipe.core.records import Outgoing

    t.finished(TP, 0, [Outgoing("v", b"k", b"late")])
    assert t.committable() == {} and t.owed(TP, 1) == []
