"""Strict decoding of a Kafka value into a JSON object, before any schema is applied.

The rules (README, "Topics and records"), checked in this order, each with its `reason`:

- `empty`: the value is null (a tombstone) or zero bytes.
- `size`: more than the caller's byte limit.
- `depth`: arrays and objects nested deeper than the caller's limit. Checked before the
  parser runs, without recursion, so no input can exhaust the stack.
- `encoding`: not UTF-8: a byte order mark, invalid bytes, surrogate code points (raw or
  as a lone `\\uD800`-style escape; escaped pairs are fine), UTF-16/32.
- `json`: not one standard JSON document (RFC 8259): no NaN/Infinity, no numbers
  outside a double's range, no trailing data, no integers over 4300 digits; or a
  document that is not an object.

Duplicate keys are accepted and the last one wins, as in every mainstream parser.

msgspec parses: on realistic posts it is 2-3x faster than the standard library, and it
already refuses a BOM, invalid or surrogate UTF-8 and NaN/Infinity. Its messages are
short, so a refused value is diagnosed again here (bad input only, off the fast path) to
say which rule it broke.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import msgspec

from modpipe.core.errors import InvalidRecord

_DECODER = msgspec.json.Decoder()
# A JSON string once its escapes are gone: to its closing quote, or to the end of the
# value when it never closes (so no quote is ever scanned twice: linear time).
_STRING = re.compile(rb'"[^"]*+(?:"|\Z)')
_TO_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Above this many bytes, the depth is one vectorized prefix sum instead of repeated passes.
_VECTOR_FROM_BYTES = 512
_LONE_SURROGATE = re.compile(
    r"[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]"
)


def _without_escapes(raw: bytes) -> bytes:
    # An escape is a backslash and the byte after it, read left to right; removing the
    # escaped backslashes first leaves every remaining `\"` an escaped quote. Two C passes.
    return raw.replace(b"\\\\", b"").replace(b'\\"', b"")


def nests_deeper_than(raw: bytes, max_depth: int) -> bool:
    """Whether arrays and objects nest more than `max_depth` levels in `raw`; no recursion.

    Linear in `len(raw)` whatever the input (unterminated strings, runs of quotes,
    backslashes or brackets): escapes go first, then strings, each scanned once; brackets
    inside strings do not count. Malformed JSON may be called too deep; the parser would
    refuse it anyway.
    """
    text = _without_escapes(raw)
    if len(text) > _VECTOR_FROM_BYTES:
        return _max_depth_vectorized(text) > max_depth
    brackets = _STRING.sub(b"", text).translate(_TO_SQUARE, _NOT_BRACKETS)
    # At most max_depth passes over at most 4 KiB: each deletes every innermost pair.
    for _ in range(max_depth):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _max_depth_vectorized(text: bytes) -> int:
    """The deepest nesting in `text` (escapes removed): one prefix sum over the bytes."""
    import numpy as np  # a dependency of scikit-learn; imported only for large values

    data = np.frombuffer(text, dtype=np.uint8)
    # A byte is inside a string when an odd number of quotes precede it (its own included
    # for the opening quote, which is not a bracket anyway).
    inside = (np.cumsum(data == ord('"'), dtype=np.int64) & 1).astype(bool)
    step = _step_table()[data]
    step[inside] = 0
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


@functools.cache
def _step_table() -> Any:
    import numpy as np

    table = np.zeros(256, dtype=np.int64)
    table[[ord("["), ord("{")]] = 1
    table[[ord("]"), ord("}")]] = -1
    return table


def load_object(raw: bytes | None, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Decode `raw` as one UTF-8 JSON object under the rules above; raises InvalidRecord."""
    if raw is None:
        raise InvalidRecord("value is empty (null)", "empty")
    if not raw:
        raise InvalidRecord("value is empty (0 bytes)", "empty")
    if len(raw) > max_bytes:
        raise InvalidRecord(f"value is {len(raw)} bytes, over the maximum of {max_bytes}", "size")
    # Counting brackets is a few hundred ns; only a value with many of them is scanned.
    if raw.count(b"{") + raw.count(b"[") > max_depth and nests_deeper_than(raw, max_depth):
        raise InvalidRecord(
            f"value nests arrays and objects more than {max_depth} levels deep", "depth"
        )
    try:
        value = _DECODER.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise _diagnose(raw, exc) from None
    if not isinstance(value, dict):
        raise InvalidRecord(f"value is a JSON {_json_type(value)}, not an object", "json")
    return value


def _diagnose(raw: bytes, exc: Exception) -> InvalidRecord:
    # Off the fast path: say which rule the value broke, in the parser-neutral words of
    # the README. The standard library is lenient where msgspec is strict, so it can
    # point at the offending part.
    if raw.startswith((b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")):
        return InvalidRecord(
            "value starts with a byte order mark; values are UTF-8 without one", "encoding"
        )
    if b"\x00" in raw:  # never in JSON text, always in UTF-16/32 of ASCII
        return InvalidRecord("value has NUL bytes: UTF-16 or UTF-32, not UTF-8", "encoding")
    try:
        text = raw.decode("utf-8")  # strict: refuses invalid bytes and encoded surrogates
    except UnicodeDecodeError as err:
        return InvalidRecord(f"value is not UTF-8: {err}", "encoding")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        return InvalidRecord(f"value is not standard JSON: {exc}", "json")
    except ValueError as err:  # JSONDecodeError, non-standard constants, huge integers
        return InvalidRecord(f"value is not standard JSON: {err}", "json")
    if _has_lone_surrogate(value):
        return InvalidRecord(
            "value has a lone surrogate escape (\\uD800-\\uDFFF without its pair); "
            "text must be valid Unicode",
            "encoding",
        )
    return InvalidRecord(f"value is not standard JSON: {exc}", "json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number"
