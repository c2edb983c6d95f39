from aiokafka import TopicPartition

from escalation.offsets import OffsetTracker

TP = TopicPartition("t", 0)


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


def test_forget_drops_revoked_partitions() -> None:
    t = OffsetTracker()
    t.started(TP, 0)
    t.forget({TP})
    assert t.committable() == {} and t.in_flight() == 0
