"""The shared normalisation: the cache key's output pinned, the rules' folds apart."""

from __future__ import annotations

import hashlib

from escalation.cache import cache_key
from modpipe.core.text import (
    content_hash,
    fold_for_rules,
    fold_homoglyphs,
    fold_leetspeak,
    normalize,
)


def test_normalize_output_is_pinned() -> None:
    # The cache key's normalisation: changing its output orphans every cached verdict.
    assert normalize("  Hello\u200b  WORLD\t\n") == "hello world"
    assert normalize("ｆｕｌｌ ｗｉｄｔｈ") == "full width"
    assert normalize("Stra\u00dfe") == "strasse"
    assert normalize("1d10t \u0456diot") == "1d10t \u0456diot"  # no folds here
    # Fields: policy version, provider, model, the provider's fingerprint, the text.
    material = "\x1f".join(("v1", "p", "m", "", "hello world"))
    assert (
        cache_key("v1", "p", "m", " Hello  World ") == hashlib.sha256(material.encode()).hexdigest()
    )


def test_leetspeak_folds_digits_and_symbols() -> None:
    assert fold_leetspeak("1d10t") == "idiot"
    assert fold_leetspeak("$c@m") == "scam"


def test_homoglyphs_fold_other_scripts_and_accents() -> None:
    assert fold_homoglyphs("\u0456d\u0456\u043et") == "idiot"  # Cyrillic i, i, o
    assert fold_homoglyphs("idi\u00f6t") == "idiot"
    assert fold_homoglyphs("plain") == "plain"


def test_fold_for_rules_combines_everything() -> None:
    assert fold_for_rules("  \u0406D1\u041eT\u200b ") == "idiot"  # Cyrillic capitals, leet
    assert content_hash(" Buy  NOW ") == hashlib.sha256(b"buy now").hexdigest()


def test_the_ascii_fast_path_gives_the_general_output() -> None:
    import random
    import re
    import unicodedata

    def general(text: str) -> str:  # the cache key's normalisation as it was written
        folded = unicodedata.normalize("NFKC", text).casefold()
        return re.sub(r"\s+", " ", folded).strip()

    rng = random.Random(23)
    alphabet = [chr(c) for c in range(128)]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert normalize(text) == general(text), repr(text)


def _reference(text: str) -> str:
    """`normalize` as the rules say, one obvious step after another (slow on hostile text)."""
    import unicodedata

    from modpipe.core.text import _CUT_RUN, _ZERO_WIDTH, _tables

    tables = _tables()
    text = tables.long_run.sub(_CUT_RUN, text)
    text = unicodedata.normalize("NFKC", text.translate(tables.keep))
    return " ".join(_ZERO_WIDTH.sub("", text).casefold().split())


_HOSTILE = (
    "\u0301\u0316\u0f73\u0344\u00b4\u00bc\u00bd\ufe77\ufef9\ufa54\u3300\u3310\u3131\u314f"
    "\ufdfa\u2167\u200b\u200d\ufeff\u00ad\u1100\u1161\u11a8\u4e00\u65e5 \t\n"
    "\U0001e8d1\U0001d165\U0001d16e\U0001f600\U0001f3fb\U0001f200\U0001d400"
)


def test_the_fast_passes_give_the_reference_output() -> None:
    # Runs cut in spans, compatibility characters translated before NFKC, marks and
    # look-alikes folded by one table: each the same as the plain steps.
    import random
    import unicodedata

    rng = random.Random(20)
    alphabet = [chr(c) for c in range(0x20, 0x800)] + list(_HOSTILE) * 20
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert normalize(text) == _reference(text), repr(text)
        norm = normalize(text)
        plain = "".join(
            c for c in unicodedata.normalize("NFKD", norm) if not unicodedata.combining(c)
        )
        assert fold_homoglyphs(norm) == fold_homoglyphs(plain), repr(norm)


def test_no_character_grows_many_fold_or_recomposes_slowly() -> None:
    # Cost bombs of one character repeated (bench/adversarial.py has the timings): what
    # reaches NFKC stays within a small multiple of the input.
    for char in "\u3300\u3310\ufdfa\u0f73\u00bc\u00b4\ufe77\U0001f200":
        text = char * 1000
        assert len(normalize(text).encode()) <= 3 * len(text.encode()), f"U+{ord(char):04X}"
    assert normalize("\u3310") != unicodedata_nfkc("\u3310")  # kept: its own private use
    assert normalize("\u00bd price") == "1\u20442 price"  # ordinary fractions still fold


def unicodedata_nfkc(text: str) -> str:
    import unicodedata

    return unicodedata.normalize("NFKC", text)
