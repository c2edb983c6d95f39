"""Text normalisation shared by the verdict cache key, the rules stage and the datasets.

`normalize` is the cache key's normalisation, linear in the text whatever its characters:
a change to its output orphans every cached verdict (tests/unit/core/test_text.py pins
examples; the cache key's fingerprint names the version that made a verdict). The folds below
are for rules only: they map look-alike spellings onto one form so a term list written
in plain letters also matches `f@ck`, `idiot` spelt with Cyrillic i or `idiöt`. They are lossy on
purpose and never reach the cache key.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import NamedTuple

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"))
_MAX_NONSTARTERS = 8  # UAX #15 says 30; no real text stacks 8 marks on a letter
_MAX_EXPANSION = 4
_CUT_RUN = "\\1\u034f"  # the combining grapheme joiner, a starter: UAX #15's cut

# Digits and symbols that stand in for letters. Applied after `normalize`, on lower case.
# Punctuation that ends words (!, |, +) is left alone: folding it would break word boundaries.
_LEET = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
    }
)

_LEET_BYTES = bytes(ord(str(_LEET[b])) if b in _LEET else b for b in range(256))
# Letters of other scripts drawn like Latin ones (Cyrillic, Greek, IPA), lower case: after
# `normalize` has case-folded. Accents are stripped separately (NFKD, combining marks).
_HOMOGLYPHS = str.maketrans(
    # Cyrillic a b c d e e h i i j k l m h o p q r s t y v w x, Greek a b c e n i k v o p t
    # u x w, IPA a g i r n y: written as escapes so no look-alike hides in this source.
    "\u0430\u0432\u0441\u0501\u0435\u0451\u04bb\u0456"
    "\u0457\u0458\u043a\u04cf\u043c\u043d\u043e\u0440"
    "\u051b\u0433\u0455\u0442\u0443\u0475\u051d\u0445"
    "\u03b1\u03b2\u03f2\u03b5\u03b7\u03b9\u03ba\u03bd"
    "\u03bf\u03c1\u03c4\u03c5\u03c7\u03c9\u0251\u0261"
    "\u0269\u0280\u0274\u028f",
    "abcdeehiijklmhopqrstyvwxabcenikvoptuxwagirny",
)


class _Tables(NamedTuple):
    long_run: re.Pattern[str]  # more than _MAX_NONSTARTERS characters that reorder
    expanding: re.Pattern[str]  # characters whose NFKC is over _MAX_EXPANSION long
    keep: dict[int, int]  # each of those to a private-use code point of its own


@functools.cache
def _tables() -> _Tables:
    """Built on first use (one pass over the code points, ~0.1 s), never at import."""
    marks: list[int] = []
    expanding: list[int] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        if unicodedata.combining(char):
            marks.append(cp)
        elif unicodedata.decomposition(char):
            nfkd = unicodedata.normalize("NFKD", char)
            if unicodedata.combining(nfkd[0]):
                marks.append(cp)
            if len(unicodedata.normalize("NFKC", char)) > _MAX_EXPANSION:
                expanding.append(cp)
    # Two classes, below and above U+FFFF: the regex engine makes a bitmap of the first
    # (one lookup per character) where one class of both would be a list of ranges.
    run = "(?:" + _char_class(marks, 0, 0xFFFF) + "|" + _char_class(marks, 0x10000) + ")"
    return _Tables(
        long_run=re.compile(f"({run}{{{_MAX_NONSTARTERS}}})(?={run})"),
        expanding=re.compile(_char_class(expanding)),
        keep={cp: 0xF0000 + i for i, cp in enumerate(expanding)},
    )


def _char_class(cps: list[int], low: int = 0, high: int = 0x10FFFF) -> str:
    parts: list[str] = []
    chosen = [cp for cp in cps if low <= cp <= high]
    start = prev = chosen[0]
    for cp in [*chosen[1:], -1]:
        if cp == prev + 1:
            prev = cp
            continue
        parts.append(re.escape(chr(start)) + (f"-{re.escape(chr(prev))}" if prev > start else ""))
        start = prev = cp
    return "[" + "".join(parts) + "]"


def normalize(text: str) -> str:
    """Fold Unicode compatibility forms, case, zero-width characters and whitespace.

    Linear in the text, with a small constant whatever its characters:
    - Unicode's canonical reordering sorts each run of combining marks, quadratic in the
      run's length, so runs are first cut every 8 marks by U+034F (the Stream-Safe Text
      Format of UAX #15);
    - the few characters whose compatibility form is long (U+FDFA is 18 characters) stay
      themselves, as private-use characters of their own, so no text grows many-fold.
    """
    if text.isascii():  # NFKC leaves ASCII alone, and it has no zero-width characters
        return " ".join(text.lower().split())  # str.split splits on exactly what `\s` matches
    tables = _tables()
    text = tables.long_run.sub(_CUT_RUN, text)
    if tables.expanding.search(text):
        text = text.translate(tables.keep)
    folded = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold()
    return " ".join(folded.split())


def fold_leetspeak(text: str) -> str:
    """`normalize`d text with the digits and symbols that stand in for letters replaced."""
    if text.isascii():
        return text.encode().translate(_LEET_BYTES).decode()
    return text.translate(_LEET)


def fold_homoglyphs(text: str) -> str:
    """`normalize`d text with accents stripped and look-alike letters of other scripts
    mapped onto Latin ones."""
    if text.isascii():
        return text
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    )
    return stripped.translate(_HOMOGLYPHS)


def fold_for_rules(text: str) -> str:
    """What term rules match on: normalised, homoglyphs and leetspeak folded."""
    return fold_leetspeak(fold_homoglyphs(normalize(text)))


def content_hash(text: str) -> str:
    """The known-content hash of a text: SHA-256 hex of its normalised form."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()
