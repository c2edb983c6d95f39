"""The pre-parse depth scan: right on every shape, and linear on hostile ones."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest

from modpipe.core.decoding import load_object, nests_deeper_than
from modpipe.core.errors import InvalidRecord


def reference_depth(raw: bytes) -> int:
    """The deepest nesting, by a plain JSON-aware scan (the specification, not fast)."""
    depth = deepest = 0
    inside = escaped = False
    for byte in raw:
        if inside:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                inside = False
        elif byte == 0x22:
            inside = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def random_value(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(['a\\"[{', "x", 1, "\\", "]]", '"', "[[[", "\\\\", '\\"]'])
    if rng.random() < 0.5:
        return [random_value(rng, depth - 1) for _ in range(rng.randint(0, 2))]
    return {
        rng.choice(["k", "[", '{"}']): random_value(rng, depth - 1)
        for _ in range(rng.randint(0, 2))
    }


def test_depth_agrees_with_a_plain_scan_on_random_documents_small_and_large() -> None:
    rng = random.Random(20)
    for _ in range(1500):
        raw = json.dumps(random_value(rng, rng.randint(1, 45))).encode()
        if rng.random() < 0.4:  # past the vectorized path's threshold too
            raw = b"[" + b",".join([raw] * rng.randint(2, 300)) + b"]"
        depth = reference_depth(raw)
        for limit in (depth - 1, depth, depth + 1):
            if limit >= 0:
                assert nests_deeper_than(raw, limit) == (depth > limit), (limit, raw[:80])


# Each of these cost the old scan time quadratic in its length (an unterminated string
# was rescanned from every quote): at these sizes, hours. Linear, they take milliseconds.
HOSTILE = {
    "unterminated escaped quotes": b"[" * 40 + b'"' + b'\\"' * 2_000_000,
    "unterminated string, trailing backslash": b"[" * 40 + b'"\\"' * 1_000_000 + b"\\",
    "quotes and brackets": b"[" * 40 + b'"\\"[' * 1_000_000,
    "open brackets": b"[" * 4_000_000,
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_values_do_not_hang_the_decoder(raw: bytes) -> None:
    # A hang guard with a thousandfold margin, not a speed test (bench/adversarial.py is).
    outcome: list[BaseException | None] = []

    def decode() -> None:
        try:
            load_object(raw, len(raw), 32)
        except InvalidRecord as exc:
            outcome.append(exc if exc.reason not in ("depth", "json") else None)

    worker = threading.Thread(target=decode, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the decoder did not finish a 4 MB value in 2 minutes"
    assert outcome == [None]
