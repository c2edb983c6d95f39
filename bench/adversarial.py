"""Cost per KB of hostile records against an ordinary post, on every per-record step.

    flock /tmp/modpipe-bench.lock .venv/bin/python bench/adversarial.py [--sizes 2048,16384,60000]

Run as a script path (not `-m`), so that PYTHONPATH alone chooses the code measured: the
same file measures main's code with `PYTHONPATH=/work/main` for a before/after line.

Two paths, as two workers run them, each timed whole: triage (the strict decoder and schema,
`parse_post`, then the rules stage's folds, `fold_for_rules`: normalisation, homoglyphs,
leetspeak; its automaton, RE2 set and MinHash are C code over the folded text) and
escalation (`parse_post`, the cache key's normalisation, `cache_key`, and the frontier
prompt with its cost estimate, `prompt.messages`). A refused record stops
where the pipeline stops it (at the decoder); that is its cost.

The corpus (`corpus()`) is generated, by kind, at each size: unterminated strings, runs of
quotes, backslashes and brackets (inside and outside strings), nesting at the limit,
zero-width characters and combining marks (in the orders that make Unicode reordering
work hardest). Each kind is timed at each size; the line reports the median and the
worst µs per KB over the corpus, and the ordinary post's median µs per KB. Times are the
process's CPU time (the work is single-threaded), so a busy machine does not inflate them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

MAX_BYTES = 65536


def _post(text: str, **extra: Any) -> bytes:
    return json.dumps({"post_id": "p1", "text": text, **extra}, ensure_ascii=False).encode()


def _fill(unit: str, size: int, head: str = "") -> str:
    return head + unit * max(1, (size - len(head.encode())) // len(unit.encode()))


def ordinary(size: int) -> bytes:
    """A post of ordinary words, about `size` bytes."""
    words = "the match last night was close and the referee had a quiet game overall "
    return _post(_fill(words, size - 40))


def ordinary_non_ascii(size: int) -> bytes:
    """Ordinary words in French, Russian and Japanese, about `size` bytes: the non-ASCII
    path of the normalisation, for scale (the ratio is to the ASCII post)."""
    words = "le match d'hier soir était serré матч был равным 昨夜の試合は接戦だった "
    return _post(_fill(words, size - 40))


def corpus(size: int) -> Iterator[tuple[str, bytes]]:
    """Hostile records of about `size` bytes, by kind (each name says what it attacks)."""
    n = size - 40
    head = b'{"post_id":"p1","text":"'
    raw: list[tuple[str, bytes]] = [
        ("unterminated-escaped-quotes", head + b'\\"' * (n // 2)),
        ("unterminated-backslashes", head + b"\\" * n),
        ("unterminated-brackets", head + b"[" * n),
        ("quote-run-raw", b"[" * 40 + b'"' * n),
        ("escaped-quote-bracket-run", b"[" * 40 + b'"\\"[' * (n // 4)),
        ("open-brackets", b"[" * n),
        ("close-brackets", b"]" * n),
        ("alternating-brackets", b"[]" * (n // 2)),
        ("nested-at-limit-repeated", _post("x", extra=[_nest(30)] * (n // 64))),
        ("many-empty-strings", _post("x", extra=[""] * (n // 3))),
        ("brackets-in-text", _post("[" * n)),
        ("braces-and-quotes-in-text", _post('{"[' * (n // 3))),
        ("quotes-in-text", _post('"' * (n // 2))),
        ("backslashes-in-text", _post("\\" * (n // 2))),
        ("zero-width", _post(_fill("\u200b", n))),
        ("zero-width-mixed", _post(_fill("a\u200d\u2060\ufeff", n))),
        ("combining-alternating", _post(_fill("\u0301\u0316", n, head="a"))),
        ("combining-sorted-reverse", _post("a" + "\u0301" * (n // 4) + "\u0316" * (n // 4))),
        ("combining-decomposing", _post(_fill("\u0f73", n, head="a"))),
        ("compat-expanding", _post(_fill("\ufdfa", n))),  # one char, 18 after NFKC
        ("compat-growing", _post(_fill("\u3300", n))),  # 3 bytes, 12 after NFKC
        ("compat-recomposing", _post(_fill("\u3310", n))),  # 4 katakana recomposed to 2
        ("compat-fraction", _post(_fill("\u00bc", n))),  # 2 bytes, 3 characters
        ("compat-ideographs", _post(_fill("\ufa54", n))),  # each recomposed from U+3000 up
        (
            "cjk-one-compat",
            _post(_fill("\u65e5\u672c\u8a9e", n, head="\ufa54")),
        ),  # whole text slow path
        # one combining mark that may compose: NFKC's slow path for the whole text
        ("cjk-one-mark", _post(_fill("\u65e5\u672c\u8a9e", n, head="e\u0301"))),
        ("regional-indicators", _post(_fill("\U0001f1fa\U0001f1f8", n))),
        ("math-alphanumerics", _post(_fill("\U0001d400\U0001d41a", n))),
        ("spacing-accents", _post(_fill("\u00b4", n))),  # space + mark each
        ("arabic-presentation", _post(_fill("\ufe77", n))),
        ("astral-marks", _post(_fill("\U0001e8d1", n, head="a"))),
        ("astral-marks-alternating", _post(_fill("\U0001d165\U0001d16e", n, head="a"))),
        ("emoji-run", _post(_fill("\U0001f600", n))),
        ("marks-on-letters", _post(_fill("a\u0301", n))),  # one mark per letter: many matches
        ("accented-cyrillic", _post(_fill("\u04ee", n))),  # decomposes for the rules' folds
        ("homoglyph-mixed", _post(_fill("\u0456d\u0456\u043et ", n))),
        ("whitespace-run", _post(_fill(" \t\n", n) + "x")),
        ("html-specials", _post(_fill("<&>", n))),
    ]
    yield from raw


def _nest(depth: int) -> Any:
    out: Any = 1
    for i in range(depth):
        out = [out] if i % 2 else {"k": out}
    return out


def _paths() -> dict[str, Callable[[bytes], None]]:
    from escalation import prompt
    from escalation.cache import cache_key
    from modpipe.core.errors import InvalidRecord
    from modpipe.core.records import parse_post
    from modpipe.core.settings import load_settings
    from modpipe.core.text import fold_for_rules

    policy = load_settings().policy

    def triage(raw: bytes) -> None:
        try:
            post = parse_post(raw, MAX_BYTES)
        except InvalidRecord:
            return  # refused: a dead letter, nothing further
        fold_for_rules(post.text)

    def escalation(raw: bytes) -> None:
        try:
            post = parse_post(raw, MAX_BYTES)
        except InvalidRecord:
            return
        cache_key(policy.version, "chat", "model", post.text)
        prompt.messages(policy, post.text)

    return {"triage": triage, "escalation": escalation}


def _us_per_kb(step: Callable[[bytes], None], raw: bytes, budget_s: float) -> float:
    times: list[float] = []
    started = time.process_time()
    while len(times) < 25 and (len(times) < 3 or time.process_time() - started < budget_s):
        t = time.process_time()
        step(raw)
        times.append(time.process_time() - t)
    return statistics.median(times) * 1e6 / (len(raw) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,16384,60000")
    parser.add_argument("--budget-s", type=float, default=1.0, help="timing per record")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    for path, step in _paths().items():
        step(ordinary(512))  # warm: imports, lazy tables
        step(_post("a\u0301"))
        base = _us_per_kb(step, ordinary(512), args.budget_s)
        base_sized = {s: _us_per_kb(step, ordinary(s), args.budget_s) for s in sizes}
        other = _us_per_kb(step, ordinary_non_ascii(2048), args.budget_s)
        results: list[tuple[float, str, int]] = []
        for size in sizes:
            for name, raw in corpus(size):
                if len(raw) > MAX_BYTES:
                    continue  # refused by its size before anything reads it
                cost = _us_per_kb(step, raw, args.budget_s)
                results.append((cost, name, len(raw)))
                if args.verbose:
                    print(f"  {path} {name:30s} {len(raw):6d} B {cost:10.2f} µs/KB", flush=True)
        costs = [c for c, _, _ in results]
        worst, worst_name, worst_size = max(results)
        print(
            f"{path}: ordinary post (512 B): {base:.2f} µs/KB; ordinary at "
            + ", ".join(f"{s} B: {v:.2f}" for s, v in base_sized.items())
            + f" µs/KB; ordinary French/Russian/Japanese (2 KB): {other:.2f} µs/KB"
        )
        print(
            f"{path}: adversarial ({len(results)} records): median "
            f"{statistics.median(costs):.2f} µs/KB, worst {worst:.2f} µs/KB ({worst_name}, "
            f"{worst_size} B) = {worst / base:.2f}x ordinary",
            flush=True,
        )


if __name__ == "__main__":
    main()
