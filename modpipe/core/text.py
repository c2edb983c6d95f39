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

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]+")
_MAX_NONSTARTERS = 8  # UAX #15 says 30; no real text stacks 8 marks on a letter
_MAX_EXPANSION = 4  # characters of compatibility form
_MAX_GROWTH = 3  # times a character's own UTF-8 size: NFKC's cost follows what it makes
_CUT_RUN = "\\1\u034f"  # the combining grapheme joiner, a starter: UAX #15's cut
# CPython recomposes each character from here up after a linear search of its composition
# table (~0.2 µs): legacy squared words (U+3310, ギガ) make four of them from 3 bytes.
_COMPOSES_SLOWLY = "\u3000"
_ASTRAL = "\U00010000-\U0010ffff"
_ASTRAL_RUN = re.compile(f"[{_ASTRAL}]+")

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
    maybe_run: re.Pattern[str]  # cheap superset of long runs: BMP marks, astral up to the last mark
    astral_marks_span: re.Pattern[str]  # a character from U+10000 to the last astral mark
    long_run: re.Pattern[str]  # more than _MAX_NONSTARTERS characters that reorder
    changes: re.Pattern[str]  # BMP characters NFKC changes or we keep; any astral one
    to_nfkc: list[int | str]  # by BMP code point: its NFKC, or the private-use one we keep
    expanding: re.Pattern[str]  # astral characters we keep (long or slow NFKC)
    keep: dict[int, int]  # each kept character to a private-use code point of its own
    fold_bmp: list[int | None]  # by BMP code point: marks dropped, look-alikes mapped
    astral_marks: dict[int, None]  # the few combining marks above U+FFFF, dropped


@functools.cache
def _tables() -> _Tables:
    """Built on first use, never at import: one pass over the code points (~1.3 s of CPU
    on the 2-core dev machine), ~6 MB, most of it the two BMP translate tables."""
    marks: list[int] = []
    combining: list[int] = []
    expanding: list[int] = []
    slow: list[int] = []
    compat: dict[int, str] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        if unicodedata.combining(char):
            marks.append(cp)
            combining.append(cp)
        elif unicodedata.decomposition(char):
            nfkd = unicodedata.normalize("NFKD", char)
            if unicodedata.combining(nfkd[0]):
                marks.append(cp)
            nfkc = unicodedata.normalize("NFKC", char)
            if len(nfkc) > _MAX_EXPANSION:
                expanding.append(cp)
            elif (
                len(nfkc.encode()) >= _MAX_GROWTH * len(char.encode())
                or (nfkc != char and sum(c >= _COMPOSES_SLOWLY for c in nfkd) > 1)
                or (len(nfkd) > 1 and all(unicodedata.combining(c) for c in nfkd))
            ):
                slow.append(cp)
            elif nfkc != char and cp < 0x10000:
                compat[cp] = nfkc
    # Two classes, below and above U+FFFF: the regex engine makes a bitmap of the first
    # (one lookup per character) where one class of both would be a list of ranges,
    # tried at every position (about 50 µs per KB of any non-ASCII text). So the exact
    # patterns run only inside spans that the cheap superset (BMP marks, any astral
    # character: a bitmap and one range) finds long enough.
    # Private-use code points by rule, so that a new rule never renumbers an older one's
    # (their numbers are in cached verdicts' keys).
    keep = {cp: 0xF0000 + i for i, cp in enumerate(expanding)}
    keep |= {cp: 0xF1000 + i for i, cp in enumerate(slow)}
    marks = [cp for cp in marks if cp not in keep]  # kept, they are starters
    bmp = _char_class(marks, 0, 0xFFFF)
    run = "(?:" + bmp + "|" + _char_class(marks, 0x10000) + ")"
    identity = list(range(0x10000))
    # Astral marks end before the emoji (U+1E94A in Unicode 14): emoji, flags and the
    # planes above never enter the slow exact pattern.
    astral = f"\U00010000-{re.escape(chr(max(*marks, *combining)))}"
    return _Tables(
        maybe_run=re.compile(f"[{bmp[1:-1]}{astral}]{{{_MAX_NONSTARTERS + 1},}}"),
        astral_marks_span=re.compile(f"[{astral}]"),
        long_run=re.compile(f"({run}{{{_MAX_NONSTARTERS}}})(?={run})"),
        changes=re.compile(f"[{_char_class(sorted([*compat, *keep]), 0, 0xFFFF)[1:-1]}{_ASTRAL}]"),
        to_nfkc=_nfkc_table(compat, keep, identity),
        expanding=re.compile(_char_class([*expanding, *slow], 0x10000)),
        keep=keep,
        fold_bmp=_fold_table(combining, identity),
        astral_marks=dict.fromkeys(cp for cp in combining if cp > 0xFFFF),
    )


def _nfkc_table(
    compat: dict[int, str], keep: dict[int, int], identity: list[int]
) -> list[int | str]:
    """Each BMP character's NFKC, done by one translate before NFKC itself: NFKC of the
    result is the same (every form is its own NFKD's), and mostly its fast path, where a
    single compatibility character would send the whole text down CPython's slow one
    (about 0.2 µs a character from U+3000 up). Kept characters go to their private use."""
    table: list[int | str] = list(identity)  # the same int objects: half the memory
    for cp, nfkc in compat.items():
        table[cp] = nfkc
    for cp, private in keep.items():
        if cp < 0x10000:
            table[cp] = private
    return table


def _fold_table(combining: list[int], identity: list[int]) -> list[int | None]:
    """A list, not a dict: str.translate indexes it (no hashing), and a character missing
    from a dict costs a raised and caught LookupError. ~2 MB, built once."""
    table: list[int | None] = list(identity)
    for cp in combining:
        if cp < 0x10000:
            table[cp] = None
    for cp, to in _HOMOGLYPHS.items():
        table[cp] = to
    return table


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
    - the few characters whose compatibility form is long (U+FDFA is 18 characters), at
      least 3 times their UTF-8 size (U+3300, a squared katakana word), or several
      characters from U+3000 up (U+3310), or marks only (U+0F73), stay themselves, as
      private-use characters of their own, so no text grows many-fold or recomposes slowly;
    - every other compatibility character is replaced by its NFKC first (one translate
      over a list), so that a single one does not send the whole text down CPython's slow
      NFKC path; the result is the same (tests/unit/core/test_text.py checks it).
    """
    if text.isascii():  # NFKC leaves ASCII alone, and it has no zero-width characters
        return " ".join(text.lower().split())  # str.split splits on exactly what `\s` matches
    tables = _tables()
    text = tables.maybe_run.sub(functools.partial(_cut_runs, tables), text)
    if tables.changes.search(text):
        text = text.translate(tables.to_nfkc)
        if _ASTRAL_RUN.search(text) and tables.expanding.search(text):
            text = text.translate(tables.keep)
    folded = _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text)).casefold()
    return " ".join(folded.split())


def _cut_runs(tables: _Tables, span: re.Match[str]) -> str:
    run = span[0]
    if _ASTRAL_RUN.search(run):  # astral characters, marks or not: the exact pattern
        return tables.long_run.sub(_CUT_RUN, run)
    # Only BMP marks: one run, cut every _MAX_NONSTARTERS (a regex match each would cost
    # ~1 µs, 50 µs per KB of marks).
    step = _MAX_NONSTARTERS
    return "\u034f".join([run[i : i + step] for i in range(0, len(run), step)])


def fold_leetspeak(text: str) -> str:
    """`normalize`d text with the digits and symbols that stand in for letters replaced."""
    # Every character it maps is ASCII, and UTF-8 never puts an ASCII byte inside a
    # longer character: one bytes.translate whatever the text.
    return text.encode().translate(_LEET_BYTES).decode()


def fold_homoglyphs(text: str) -> str:
    """`normalize`d text with accents stripped and look-alike letters of other scripts
    mapped onto Latin ones."""
    if text.isascii():
        return text
    tables = _tables()
    text = unicodedata.normalize("NFKD", text).translate(tables.fold_bmp)
    if tables.astral_marks_span.search(text):  # astral marks: rare, a dictionary is enough
        text = text.translate(tables.astral_marks)
    return text


def fold_for_rules(text: str) -> str:
    """What term rules match on: normalised, homoglyphs and leetspeak folded."""
    return fold_leetspeak(fold_homoglyphs(normalize(text)))


def content_hash(text: str) -> str:
    """The known-content hash of a text: SHA-256 hex of its normalised form."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()
