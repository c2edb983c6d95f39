"""Lets aiokafka's consumer deliver records whose header names are not valid UTF-8.

aiokafka decodes every header name strictly while it unpacks a fetched record batch,
before any caller sees the records; one such name (kcat and other clients can send raw
bytes) makes every fetch of that partition raise, so the records behind it are never
delivered and the worker stalls on the same offset forever. `install` changes that for
every consumer in the process, the triage worker's Faust consumer included:

- A normal batch is unpacked exactly as before, by aiokafka's Cython code.
- Only a batch whose unpacking raised UnicodeDecodeError is parsed again in Python, by
  aiokafka's own record parser with one change: a header name that is not UTF-8 is
  decoded as latin-1. That is lossless (`name.encode("latin-1")` gives the sent bytes
  back) and, unlike surrogateescape, yields a str that any later UTF-8 encoding (a log
  handler, a forwarded record) accepts. Names that are valid UTF-8 decode as before.
- The record is then delivered like any other; modpipe ignores headers, so its post is
  decided normally, and the records after it in the batch and the partition flow on.

This relies on aiokafka internals (pinned in pyproject.toml); `install` raises if they
are missing and tests/unit/core/test_kafka_compat.py names the ones it needs.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record import default_records
from aiokafka.record.util import decode_varint

from modpipe.core.errors import ConfigError

log = logging.getLogger(__name__)

HEADER_NAME_FALLBACK = "latin-1"
"""The codec for a header name that is not valid UTF-8."""

# Every batch format starts Offset => Int64, Length => Int32; v2 goes on with
# PartitionLeaderEpoch => Int32, Magic => Int8, CRC => Uint32, Attributes => Int16,
# LastOffsetDelta => Int32.
_V2_HEADER = struct.Struct(">qiib")
_LAST_DELTA = struct.Struct(">i")
_LOG_OVERHEAD = 12

_PyBatch: Any = default_records._DefaultRecordBatchPy  # @final in typing only
_PyRecord: Any = default_records._DefaultRecordPy


class LenientRecordBatch(_PyBatch):  # type: ignore[misc]
    """aiokafka's pure-Python v2 batch, decoding non-UTF-8 header names as latin-1."""

    _buffer: bytearray
    _pos: int

    def _read_msg(
        self, decode_varint: Callable[[bytearray, int], tuple[int, int]] = decode_varint
    ) -> Any:
        # aiokafka 0.14's _DefaultRecordBatchPy._read_msg, but for the header-name decode.
        buffer = self._buffer
        pos = self._pos
        length, pos = decode_varint(buffer, pos)
        start_pos = pos
        _, pos = decode_varint(buffer, pos)  # attributes, unused
        ts_delta, pos = decode_varint(buffer, pos)
        if self.timestamp_type == self.LOG_APPEND_TIME:
            timestamp = self.max_timestamp
        else:
            timestamp = self.first_timestamp + ts_delta
        offset_delta, pos = decode_varint(buffer, pos)
        offset = self.base_offset + offset_delta

        key_len, pos = decode_varint(buffer, pos)
        key = None
        if key_len >= 0:
            key = bytes(buffer[pos : pos + key_len])
            pos += key_len
        value_len, pos = decode_varint(buffer, pos)
        value = None
        if value_len >= 0:
            value = bytes(buffer[pos : pos + value_len])
            pos += value_len

        header_count, pos = decode_varint(buffer, pos)
        if header_count < 0:
            raise CorruptRecordException(f"Found invalid number of record headers {header_count}")
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            h_key_len, pos = decode_varint(buffer, pos)
            if h_key_len < 0:
                raise CorruptRecordException(f"Invalid negative header key size {h_key_len}")
            h_key = header_name(bytes(buffer[pos : pos + h_key_len]))
            pos += h_key_len
            h_value_len, pos = decode_varint(buffer, pos)
            h_value = None
            if h_value_len >= 0:
                h_value = bytes(buffer[pos : pos + h_value_len])
                pos += h_value_len
            headers.append((h_key, h_value))

        if pos - start_pos != length:
            raise CorruptRecordException(
                f"Invalid record size: expected to read {length} bytes in record "
                f"payload, but instead read {pos - start_pos}"
            )
        self._pos = pos
        return _PyRecord(offset, timestamp, self.timestamp_type, key, value, headers)


def header_name(raw: bytes) -> str:
    """A header name as aiokafka would decode it, or as latin-1 where it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode(HEADER_NAME_FALLBACK)


class FetchedRecords:
    """aiokafka's MemoryRecords for one fetched message set, keeping its bytes.

    Its methods are the wrapped object's own bound methods, so walking the batches costs
    what it did; the bytes are read only to find a batch that failed to unpack.
    """

    __slots__ = ("data", "has_next", "next_batch", "size_in_bytes")

    def __init__(self, data: bytes, records: Any) -> None:
        self.data = data
        self.has_next: Callable[[], bool] = records.has_next
        self.next_batch: Callable[[], Any] = records.next_batch
        self.size_in_bytes: Callable[[], int] = records.size_in_bytes

    def batch_at(self, offset: int) -> memoryview:
        """The bytes of the first v2 batch whose last offset is `offset` or later.

        When unpacking fails, every batch before the failed one has been consumed or
        skipped, which moved the fetch offset past its last offset; so, given the fetch
        offset, this is the failed one.
        """
        data = self.data
        pos = 0
        while pos + _V2_HEADER.size <= len(data):
            base, length, _, magic = _V2_HEADER.unpack_from(data, pos)
            end = pos + _LOG_OVERHEAD + length
            if magic >= 2 and base + _LAST_DELTA.unpack_from(data, pos + 23)[0] >= offset:
                return memoryview(data)[pos:end]
            pos = end
        raise CorruptRecordException(f"no record batch holds offset {offset}")


def _header_decode_failure(exc: BaseException) -> bool:
    # The Cython batch raises UnicodeDecodeError; the Python one wraps it.
    return isinstance(exc, UnicodeDecodeError) or (
        isinstance(exc, CorruptRecordException) and isinstance(exc.__cause__, UnicodeDecodeError)
    )


def _lenient_records(partition: Any, raw: memoryview) -> Iterator[Any]:
    # The failed batch already passed aiokafka's CRC, transaction and control checks.
    batch = LenientRecordBatch(raw)
    log.warning(
        "header name not UTF-8 in %s batch at offset %d; decoded as %s",
        partition._tp,
        batch.base_offset,
        HEADER_NAME_FALLBACK,
    )
    for record in batch:
        if record.offset < partition.next_fetch_offset:
            continue  # delivered before the batch failed
        consumer_record = partition._consumer_record(partition._tp, record)
        partition.next_fetch_offset = record.offset + 1
        yield consumer_record
    partition.next_fetch_offset = batch.next_offset


def _wrap_unpack(original: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Iterator[Any]]:
    def _unpack_records(self: Any) -> Iterator[Any]:
        while True:
            try:
                yield from original(self)
                return
            except (UnicodeDecodeError, CorruptRecordException) as exc:
                records = self._records
                if not _header_decode_failure(exc) or not isinstance(records, FetchedRecords):
                    raise
                # Then go on with the batches after it, as aiokafka's loop would.
                yield from _lenient_records(self, records.batch_at(self.next_fetch_offset))

    _unpack_records.__wrapped__ = original  # type: ignore[attr-defined]
    _unpack_records._modpipe_lenient = True  # type: ignore[attr-defined]
    return _unpack_records


def _wrap_memory_records(original: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def memory_records(data: bytes) -> FetchedRecords:
        return FetchedRecords(data, original(data))

    memory_records.__wrapped__ = original  # type: ignore[attr-defined]
    memory_records._modpipe_lenient = True  # type: ignore[attr-defined]
    return memory_records


REQUIRED = (
    (fetcher, "MemoryRecords"),
    (fetcher.PartitionRecords, "_unpack_records"),
    (fetcher.PartitionRecords, "_consumer_record"),
    (default_records._DefaultRecordBatchPy, "_read_msg"),
    (default_records._DefaultRecordBatchPy, "next_offset"),
)
"""The aiokafka internals `install` relies on."""


def installed() -> bool:
    """Whether `install` has patched aiokafka in this process."""
    return getattr(fetcher.PartitionRecords._unpack_records, "_modpipe_lenient", False)


def install() -> None:
    """Patch aiokafka's fetcher once per process; later calls do nothing."""
    missing = [f"{getattr(o, '__name__', o)}.{a}" for o, a in REQUIRED if not hasattr(o, a)]
    if missing:
        raise ConfigError(
            f"aiokafka {aiokafka.__version__} lacks {missing}: "
            "modpipe/core/kafka_compat.py needs updating for this version"
        )
    if installed():
        return
    fetcher.MemoryRecords = _wrap_memory_records(fetcher.MemoryRecords)  # type: ignore[misc]
    fetcher.PartitionRecords._unpack_records = _wrap_unpack(  # type: ignore[method-assign]
        fetcher.PartitionRecords._unpack_records
    )
