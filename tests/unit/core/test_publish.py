"""publish(): every record acknowledged, failures retried until a deadline, in one place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError

from modpipe.core.kafka import publish
from modpipe.core.records import Outgoing

RECORDS = [Outgoing("t", f"k{i}".encode(), b"v") for i in range(3)]


class FlakyProducer:
    """Refuses the first `refuse` sends outright and fails the next `nack` acks."""

    def __init__(self, refuse: int = 0, nack: int = 0) -> None:
        self.refuse, self.nack = refuse, nack
        self.acked: list[bytes] = []

    async def send(self, r: Outgoing) -> asyncio.Future[Any]:
        if self.refuse:
            self.refuse -= 1
            raise KafkaTimeoutError("no metadata")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.nack:
            self.nack -= 1
            future.set_exception(KafkaError("not leader"))
        else:
            self.acked.append(r.key)
            future.set_result(None)
        return future


async def test_refused_sends_and_failed_acks_are_retried_until_all_are_acked() -> None:
    producer = FlakyProducer(refuse=2, nack=2)
    await publish(producer.send, RECORDS, deadline_s=30)
    assert sorted(producer.acked) == [r.key for r in RECORDS]


async def test_past_the_deadline_it_raises_so_nothing_is_committed() -> None:
    producer = FlakyProducer(refuse=10**6)
    with pytest.raises(KafkaError, match="could not publish 3 records"):
        await publish(producer.send, RECORDS, deadline_s=0.1)
    assert producer.acked == []
