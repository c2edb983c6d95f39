"""Text normalisation shared by the verdict cache key, the rules stage and the datasets.

`normalize` is the cache key's normalisation: its output must never change, or every
cached verdict is orphaned (tests/unit/core/test_text.py pins examples). The folds below
are for rules only: they map look-alike spellings onto one form so a term list written
in plain letters also matches `f@ck`, `idiot` spelt with Cyrillic i or `idiöt`. They are lossy on
purpose and never reach the cache key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"))
_SPACES = re.compile(r"\s+")

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


def normalize(text: str) -> str:
    """Fold Unicode compatibility forms, case, zero-width characters and whitespace."""
    if text.isascii():
        # Same output, a quarter of the time (the rules stage runs this on every post):
        # NFKC and the zero-width set leave ASCII alone, casefold is lower, and str.split
        # splits on exactly what `\s` matches (str.isspace).
        return " ".join(text.lower().split())
    folded = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH).casefold()
    return _SPACES.sub(" ", folded).strip()


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
