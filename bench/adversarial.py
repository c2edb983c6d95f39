"""Cost per KB of hostile records against an ordinary post, on every per-record step.

    flock /tmp/modpipe-bench.lock .venv/bin/python bench/adversarial.py [--rounds 15] [--verbose]

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
work hardest), and the costly corners of ordinary text in several scripts. Each kind is
timed at each size, in rounds that time every record once, keeping each record's least
CPU time (the work is single-threaded): a busy, shared machine then inflates no kind
alone. The lines report the median and the worst µs per KB over the corpus, against an
ordinary post's.
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


# Texts of one unit repeated (after a head), by kind: each name says what it attacks.
_TEXT_KINDS: list[tuple[str, str, str]] = [
    ("zero-width", "\u200b", ""),
    ("zero-width-mixed", "a\u200d\u2060\ufeff", ""),
    ("combining-alternating", "\u0301\u0316", "a"),  # every pair out of order
    ("combining-decomposing", "\u0f73", "a"),
    ("compat-expanding", "\ufdfa", ""),  # one character, 18 after NFKC
    ("compat-growing", "\u3300", ""),  # 3 bytes, 12 after NFKC
    ("compat-recomposing", "\u3310", ""),  # 4 katakana recomposed to 2
    ("compat-fraction", "\u00bc", ""),  # 2 bytes, 3 characters
    ("compat-ideographs", "\ufa54", ""),  # each recomposed from U+3000 up
    ("cjk-one-compat", "\u65e5\u672c\u8a9e", "\ufa54"),  # once, NFKC's slow path for all
    ("cjk-one-mark", "\u65e5\u672c\u8a9e", "e\u0301"),  # a mark that composes, once
    ("regional-indicators", "\U0001f1fa\U0001f1f8", ""),
    ("math-alphanumerics", "\U0001d400\U0001d41a", ""),
    ("spacing-accents", "\u00b4", ""),  # a space and a mark each
    ("arabic-presentation", "\ufe77", ""),
    ("astral-marks", "\U0001e8d1", "a"),
    ("astral-marks-alternating", "\U0001d165\U0001d16e", "a"),
    ("emoji-run", "\U0001f600", ""),
    ("marks-on-letters", "a\u0301", ""),  # one mark per letter: many matches
    ("accented-cyrillic", "\u04ee", ""),  # decomposes for the rules' folds
    ("homoglyph-mixed", "\u0456d\u0456\u043et ", ""),
    ("html-specials", "<&>", ""),
    ("one-long-word", "abcdefghij", ""),
    ("marks-sorted-run", "\u0316", "a"),  # in order: nothing to sort
    ("cjk-marks-dense", "\u6f22\u0301", ""),  # a mark on every ideograph
    ("cyrillic-stress-marks", "\u043c\u043e\u043b\u043e\u043a\u043e\u0301 ", ""),
    ("kana-decomposed", "\u304b\u3099\u3057\u309a", ""),  # voicing marks apart
    ("devanagari-nukta", "\u0915\u093c\u093e\u0928\u0942\u0928 ", ""),
    ("hangul-jamo", "\u1100\u1161\u11a8", ""),  # conjoining: composed by NFKC
    ("fullwidth-latin", "\uff46\uff55\uff4c\uff4c ", ""),
    ("nbsp-sparse", "le match\u00a0: serr\u00e9 mais juste ", ""),
    ("ellipsis-sparse", "well\u2026 that was close ", ""),
    ("emoji-zwj", "\U0001f468\u200d\U0001f469\u200d\U0001f467 ", ""),
    ("flags-in-text", "go \U0001f1eb\U0001f1f7 ", ""),
    ("variation-selectors", "\u2764\ufe0f", ""),
    ("bidi-controls", "\u202eabc\u202c", ""),
    ("tag-characters", "\U000e0067\U000e0062", ""),
    ("casefold-decomposing", "\u0390", ""),  # folds to 3 characters: iota and two marks
    ("casefold-dotted-i", "\u0130", ""),  # folds to i and a mark that nothing composes
    ("casefold-sharp-s", "Stra\u00dfe ", ""),
    ("casefold-mark-to-letter", "\u0345", "a"),  # a mark that folds to iota, a letter
    ("hebrew-points", "\u05e9\u05c1\u05bc", ""),  # two marks on a letter, out of order
    ("arabic-harakat", "\u0628\u064e\u0651", ""),
    ("scripts-mixed", "a\u0430\u03b1\u05d0\u0627\u0915\u0e01\u3042\u4e00\uac00", ""),
]


def corpus(size: int) -> Iterator[tuple[str, bytes]]:
    """Hostile records of about `size` bytes, by kind (each name says what it attacks)."""
    n = size - 40
    yield from _json_kinds(n)
    yield "combining-sorted-reverse", _post("a" + "\u0301" * (n // 4) + "\u0316" * (n // 4))
    yield "whitespace-run", _post(_fill(" \t\n", n) + "x")
    for name, unit, head in _TEXT_KINDS:
        yield name, _post(_fill(unit, n, head=head))


def _json_kinds(n: int) -> list[tuple[str, bytes]]:
    """The decoder's: escapes, strings, quotes and brackets, nesting."""
    head = b'{"post_id":"p1","text":"'
    return [
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
    ]


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


def _times(step: Callable[[bytes], None], records: list[bytes], rounds: int) -> list[float]:
    """CPU seconds per call of `step` on each record, warm: the least of `rounds` rounds.
    Each round times every record in turn (one call untimed, then enough calls to take
    ~0.2 ms), so that a burst of load on this shared machine cannot fall on one kind."""
    repeats = []
    for raw in records:
        started = time.process_time()
        step(raw)
        repeats.append(max(1, int(2e-4 / max(time.process_time() - started, 1e-7))))
    best = [float("inf")] * len(records)
    for _ in range(rounds):
        for i, raw in enumerate(records):
            step(raw)  # its code and data back in the caches: what a run of posts sees
            started = time.process_time()
            for _ in range(repeats[i]):
                step(raw)
            best[i] = min(best[i], (time.process_time() - started) / repeats[i])
    return best


def _us_per_kb(seconds: float, raw: bytes) -> float:
    return seconds * 1e6 / (len(raw) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,16384,60000")
    parser.add_argument("--rounds", type=int, default=15, help="timings of each record")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    baselines = {"ordinary post (512 B)": ordinary(512)}
    baselines |= {f"ordinary at {s} B": ordinary(s) for s in sizes}
    baselines["ordinary French/Russian/Japanese (2 KB)"] = ordinary_non_ascii(2048)
    hostile = [(name, raw) for size in sizes for name, raw in corpus(size) if len(raw) <= MAX_BYTES]
    records = [*baselines.values(), *(raw for _, raw in hostile)]
    for path, step in _paths().items():
        step(ordinary(512))  # warm: imports, lazy tables
        step(_post("a\u0301"))
        times = _times(step, records, args.rounds)
        costs = [_us_per_kb(t, raw) for t, raw in zip(times, records, strict=True)]
        base = dict(zip(baselines, costs, strict=False))
        results = sorted(zip(costs[len(baselines) :], hostile, strict=True), key=lambda r: r[0])
        if args.verbose:
            for cost, (name, raw) in results:
                print(f"  {path} {name:30s} {len(raw):6d} B {cost:10.2f} µs/KB", flush=True)
        ordinary_cost = base["ordinary post (512 B)"]
        worst, (worst_name, worst_raw) = results[-1]
        print(f"{path}: " + "; ".join(f"{k}: {v:.2f} µs/KB" for k, v in base.items()))
        print(
            f"{path}: adversarial ({len(results)} records): median "
            f"{statistics.median(c for c, _ in results):.2f} µs/KB, worst {worst:.2f} µs/KB "
            f"({worst_name}, {len(worst_raw)} B) = {worst / ordinary_cost:.2f}x ordinary",
            flush=True,
        )


if __name__ == "__main__":
    main()
