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
