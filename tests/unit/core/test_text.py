"""The shared normalisation: the cache key's output pinned, the rules' folds apart."""

from __future__ import annotations

import functools
import hashlib
import re

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
    import re
    import unicodedata

    from modpipe.core.unicode_tables import ZERO_WIDTH, classes

    c = classes()
    text = re.sub(f"[{ZERO_WIDTH}]", "", text)
    text = "".join(
        chr(c.keep[ord(x)]) if ord(x) in c.keep else c.compat.get(ord(x), x) for x in text
    )
    text = _long_run().sub("\\1\u034f", text)  # U+034F after every 8 marks: UAX #15's cut
    text = unicodedata.normalize("NFKC", text)
    # Each character's full case folding, composed where it is not (U+0390: 3 characters).
    folded = "".join(unicodedata.normalize("NFC", x.casefold()) for x in text)
    return " ".join(folded.split())


@functools.cache
def _long_run() -> re.Pattern[str]:
    from modpipe.core.unicode_tables import char_class, classes

    marks = classes().marks
    mark = f"(?:{char_class(marks, 0, 0xFFFF)}|{char_class(marks, 0x10000)})"
    return re.compile(f"({mark}{{8}})(?={mark})")


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


def test_every_character_in_every_context_gives_the_reference_output() -> None:
    # The fast paths decide by character class (nothing to do, a character of ours to
    # translate, a mark, a composing character) and ICU does NFKC: each BMP character, and
    # every astral one the classes name, after a letter that composes, before marks, and
    # inside a CJK text; and those newer than CPython's Unicode, which ICU knows.
    import unicodedata

    import icu

    from modpipe.core.unicode_tables import classes

    c = classes()
    astral = {cp for cp in [*c.marks, *c.composes, *c.keep, *c.compat] if cp > 0xFFFF}
    newer = icu.UnicodeSet(f"[[:^age={unicodedata.unidata_version}:]&[:^gc=Cn:]]")
    astral |= {ord(char) for char in newer}
    ideographs = "\u65e5\u672c\u8a9e" * 4
    for cp in [*range(0xD800), *range(0xE000, 0x10000), *sorted(astral), 0x1F600, 0xF0000]:
        char = chr(cp)
        for text in (
            f"e{char}\u0301",
            f"{char}\u0316\u0301",
            f"{ideographs}{char}{ideographs}\u0301",
            f"{ideographs}{char}\u0323\u0308",
        ):
            assert normalize(text) == _reference(text), f"U+{cp:04X}"


def test_long_runs_of_marks_are_cut_as_the_reference_cuts_them() -> None:
    # Runs of marks from every source: marks, letters that decompose to a letter and
    # marks, compatibility characters that become marks, zero-width characters between.
    import random

    rng = random.Random(22)
    marks = "\u0301\u0316\u0308\u0323\u05b0\u0e48\U0001d165\U0001e8d1\u0344\u0f73"
    others = "\u01d8\u1e69\u00e9ae\u200b\u200d\u00a0\u00b4\u1fed\u0390\u65e5 "
    alphabet = list(marks) * 6 + list(others)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
        assert normalize(text) == _reference(text), ascii(text)


def test_a_long_text_with_few_changes_gives_the_reference_output() -> None:
    # Runs of changes translated one by one, and the whole text when they are many.
    import random

    rng = random.Random(21)
    plain = [chr(c) for c in range(0x20, 0x800)] + ["\u65e5", "\u672c", "\u3042", " "] * 50
    for _ in range(300):
        text = [rng.choice(plain) for _ in range(rng.randint(100, 600))]
        for _ in range(rng.randint(1, 40)):
            text.insert(rng.randrange(len(text)), rng.choice(_HOSTILE))
        assert normalize("".join(text)) == _reference("".join(text))


def test_fold_is_nfkd_with_marks_dropped_and_look_alikes_mapped() -> None:
    # One table lookup per character is the two passes it replaces, for every character.
    import unicodedata

    from modpipe.core.unicode_tables import HOMOGLYPHS, classes

    drop = {cp: None for cp in classes().combining} | HOMOGLYPHS
    for cp in [*range(0x80, 0xD800), *range(0xE000, 0x30000)]:
        text = normalize(f"a{chr(cp)}\u0301b")  # what the folds are given
        assert fold_homoglyphs(text) == unicodedata.normalize("NFKD", text).translate(drop), (
            f"U+{cp:04X}"
        )


def test_a_lone_surrogate_is_normalised_too() -> None:
    # Posts cannot hold one (the decoder refuses them), but ICU cannot take one at all.
    for text in ("\ud800e\u0301", "a\udc00\u0316\u0301", "\U0001f600\ud83d\u00e9"):
        assert normalize(text) == _reference(text)
        assert fold_for_rules(text) is not None


def test_zero_width_characters_and_spacing_accents() -> None:
    # Zero-width characters go before NFKC: one between a letter and its mark hides nothing.
    assert normalize("caf\u00e9") == normalize("cafe\u200b\u0301") == "caf\u00e9"
    # A spacing accent stays one character (its NFKC, a space then a mark, splits words).
    assert len(normalize("don\u00b4t")) == 5 and " " not in normalize("don\u00b4t")


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
