"""kafka_compat: records with header names that are not UTF-8 unpack; normal batches don't change.

Batches are built with aiokafka's own builder and unpacked by aiokafka's own fetcher
classes (no broker here; tests/integration/test_header_names.py runs the workers).
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from typing import Any

import aiokafka
import pytest
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record import default_records
from aiokafka.record.memory_records import _MemoryRecordsPy
from aiokafka.structs import TopicPartition

from modpipe.core import kafka_compat
from modpipe.core.kafka import client_options
from modpipe.core.settings import KafkaSettings

client_options(KafkaSettings())  # opening any client installs the patch, as in the workers

BAD_NAME = b"\xff\xfe-bad"
TP = TopicPartition("posts", 0)


class RawName(str):
    """A header name that aiokafka's Python builder writes as BAD_NAME."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:  # type: ignore[override]
        return BAD_NAME


def batch(base: int, records: list[tuple[bytes, list[tuple[str, bytes]]]], codec: int = 0) -> bytes:
    """One v2 batch at offset `base`, built by aiokafka's pure-Python builder."""
    builder = default_records._DefaultRecordBatchBuilderPy(
        2, codec, 0, producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20
    )
    for delta, (value, headers) in enumerate(records):
        builder.append(delta, 1_700_000_000_000, None, value, headers)
    data = builder.build()
    struct.pack_into(">q", data, 0, base)  # BaseOffset is outside the CRC
    return bytes(data)


def unpack(data: bytes, records: Any = None) -> tuple[list[Any], int]:
    """Every record aiokafka's fetcher yields for `data`, and where it would fetch next."""
    if records is None:
        records = fetcher.MemoryRecords(data)
    partition = fetcher.PartitionRecords(
        TP, records, None, 0, None, None, True, fetcher.READ_UNCOMMITTED
    )
    return list(partition), partition.next_fetch_offset


def unpatched_unpack(data: bytes) -> list[Any]:
    partition = fetcher.PartitionRecords(
        TP,
        fetcher.MemoryRecords.__wrapped__(data),  # type: ignore[attr-defined]
        None,
        0,
        None,
        None,
        True,
        fetcher.READ_UNCOMMITTED,
    )
    return list(fetcher.PartitionRecords._unpack_records.__wrapped__(partition))  # type: ignore[attr-defined]


MIXED = (
    batch(0, [(b"a", [])])
    + batch(1, [(b"b", []), (b"bad", [(RawName("x"), b"v"), ("ok", b"1")]), (b"c", [])])
    + batch(4, [(b"d", [("trace", b"t")])])
)


def test_opening_a_client_installs_the_patch_once() -> None:
    assert kafka_compat.installed()
    kafka_compat.install()  # idempotent
    assert not hasattr(fetcher.MemoryRecords.__wrapped__, "__wrapped__")  # type: ignore[attr-defined]


def test_unpatched_aiokafka_still_stalls_on_the_record() -> None:
    # If this stops failing, aiokafka decodes leniently itself and the patch can go.
    with pytest.raises((UnicodeDecodeError, CorruptRecordException)):
        unpatched_unpack(MIXED)


def test_every_record_is_delivered_in_order_and_the_fetch_moves_on() -> None:
    records, next_offset = unpack(MIXED)
    assert [(r.offset, r.value) for r in records] == [
        (0, b"a"),
        (1, b"b"),
        (2, b"bad"),
        (3, b"c"),
        (4, b"d"),
    ]
    assert next_offset == 5
    assert records[2].headers == (("ÿþ-bad", b"v"), ("ok", b"1"))
    assert records[2].headers[0][0].encode(kafka_compat.HEADER_NAME_FALLBACK) == BAD_NAME
    assert records[4].headers == (("trace", b"t"),)


def test_a_bad_name_first_in_its_batch_after_a_fully_read_batch() -> None:
    data = batch(0, [(b"a", []), (b"b", [])]) + batch(2, [(b"bad", [(RawName("x"), b"v")])])
    data += batch(3, [(b"c", [])])
    records, next_offset = unpack(data)
    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b"), (2, b"bad"), (3, b"c")]
    assert next_offset == 4


def test_pure_python_records_which_wrap_the_error_are_handled_too() -> None:
    records, next_offset = unpack(
        MIXED, kafka_compat.FetchedRecords(MIXED, _MemoryRecordsPy(MIXED))
    )
    assert [r.value for r in records] == [b"a", b"b", b"bad", b"c", b"d"]
    assert next_offset == 5


def test_a_compressed_batch_is_decompressed_by_the_fallback() -> None:
    gzip = default_records.DefaultRecordBase.CODEC_GZIP
    data = batch(0, [(b"p" * 200, [(RawName("x"), b"v")]), (b"q", [])], codec=gzip)
    records, next_offset = unpack(data)
    assert [(r.offset, r.value) for r in records] == [(0, b"p" * 200), (1, b"q")]
    assert next_offset == 2


def test_normal_batches_keep_aiokafkas_fast_batch_class() -> None:
    data = batch(0, [(b"a", [("name", b"v")])])
    records = fetcher.MemoryRecords(data)
    assert isinstance(records, kafka_compat.FetchedRecords)
    assert type(records.next_batch()) is default_records.DefaultRecordBatch
    assert bytes(records.batch_at(0)) == data


def test_other_corruption_still_raises() -> None:
    data = bytearray(batch(0, [(b"a", [])]))
    data[-1] ^= 0xFF  # breaks the CRC
    with pytest.raises(CorruptRecordException):
        unpack(bytes(data))


def test_valid_utf8_names_decode_as_before() -> None:
    assert kafka_compat.header_name("héader".encode()) == "héader"
    assert kafka_compat.header_name(BAD_NAME) == BAD_NAME.decode("latin-1")


# The patch copies aiokafka's record parser and relies on the fetcher's structure. When
# aiokafka changes any of these, re-read them, port kafka_compat, then update the digests.
INTERNALS = {
    "aiokafka.record.default_records._DefaultRecordBatchPy._read_msg": (
        default_records._DefaultRecordBatchPy._read_msg,
        "0997ab7a58505c93",
    ),
    "aiokafka.consumer.fetcher.PartitionRecords._unpack_records": (
        fetcher.PartitionRecords._unpack_records.__wrapped__,  # type: ignore[attr-defined]
        "b803e6d46480732c",
    ),
    "aiokafka.consumer.fetcher.PartitionRecords._consumer_record": (
        fetcher.PartitionRecords._consumer_record,
        "e668541600b047ab",
    ),
    "aiokafka.consumer.fetcher.Fetcher._proc_fetch_request": (
        fetcher.Fetcher._proc_fetch_request,
        "59bf948fff47eed5",
    ),
}


def test_aiokafka_is_the_version_the_patch_was_written_for() -> None:
    assert aiokafka.__version__.startswith("0.14."), aiokafka.__version__
    for owner, name in kafka_compat.REQUIRED:
        assert hasattr(owner, name), f"aiokafka lost {owner}.{name}"
    assert list(inspect.signature(fetcher.PartitionRecords).parameters) == [
        "tp",
        "records",
        "aborted_transactions",
        "fetch_offset",
        "key_deserializer",
        "value_deserializer",
        "check_crcs",
        "isolation_level",
    ]
    fetch_source = inspect.getsource(fetcher.Fetcher._proc_fetch_request)
    assert "records = MemoryRecords(part_data[-1])" in fetch_source
    assert 'decode("utf-8")' in inspect.getsource(default_records._DefaultRecordBatchPy._read_msg)


@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_aiokafka_internals_are_unchanged(name: str) -> None:
    function, digest = INTERNALS[name]
    source = inspect.getsource(function)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
        f"{name} changed in aiokafka {aiokafka.__version__}: port modpipe/core/kafka_compat.py"
    )
