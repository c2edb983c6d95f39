"""Faust's producer errors reach the one retry path as the aiokafka errors it retries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError
from faust.exceptions import ProducerSendError

from modpipe.core.kafka import publish
from modpipe.core.records import Outgoing
from streams.connection import translated


class FaustLikeProducer:
    """Raises what faust's aiokafka Producer.send raises when aiokafka refuses a record:
    ProducerSendError, chained from the KafkaError (faust/transport/drivers/aiokafka.py)."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.sent = 0

    async def send(self, r: Outgoing) -> asyncio.Future[Any]:
        with translated():
            if self.refuse:
                self.refuse -= 1
                try:
                    raise KafkaTimeoutError("no metadata")
                except KafkaError as exc:
                    raise ProducerSendError(f"Error while sending: {exc!r}") from exc
            self.sent += 1
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future


async def test_a_faust_send_error_is_retried_like_aiokafkas() -> None:
    producer = FaustLikeProducer(refuse=2)
    await publish(producer.send, [Outgoing("t", b"k", b"v")], deadline_s=30)
    assert producer.sent == 1


def test_a_faust_send_error_without_a_kafka_cause_is_still_a_kafka_error() -> None:
    with pytest.raises(KafkaError), translated():
        raise ProducerSendError("No transaction producer found")
