"""The code point classes and tables behind `modpipe.core.text`, built once on first use.

Each normalisation step costs one regex scan or one `str.translate` over the text, so
the classes here are what makes it cheap: which characters NFKC may change, which ones
we keep as themselves (their NFKC is long, grows many-fold or recomposes slowly), which
ones reorder, compose, or can never take part in a composition.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
# The compatibility characters of ordinary typography, with their NFKC: the spaces (the
# no-break space of French punctuation, the ideographic space of CJK text) and the ellipsis.
ORDINARY_COMPAT = [
    (chr(cp), unicodedata.normalize("NFKC", chr(cp)))
    for cp in (0x00A0, *range(0x2000, 0x200B), 0x202F, 0x205F, 0x3000, 0x2026)
]
MAX_NONSTARTERS = 8  # UAX #15 says 30; no real text stacks 8 marks on a letter
_MAX_EXPANSION = 4  # characters of compatibility form
_MAX_GROWTH = 3  # times a character's own UTF-8 size: NFKC's cost follows what it makes
# CPython recomposes each character from here up after a linear search of its composition
# table (~0.2 µs): legacy squared words (U+3310, ギガ) make four of them from 3 bytes.
_COMPOSES_SLOWLY = "\u3000"
_EMOJI_START = 0x1F300  # Miscellaneous Symbols and Pictographs, then the other emoji blocks
_PASSIVE_RUN = 8  # characters: shorter runs cost more to split out than to compose

# Letters of other scripts drawn like Latin ones (Cyrillic, Greek, IPA), lower case: after
# `normalize` has case-folded. Accents are stripped separately (NFKD, combining marks).
HOMOGLYPHS = str.maketrans(
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


class Classes(NamedTuple):
    """Code points by what normalisation does with them."""

    marks: list[int]  # reorder (combining, or decompose to a combining mark first), not kept
    combining: list[int]  # canonical combining class above 0
    composes: set[int]  # NFKC may join them to the character before (NFKC_QC Maybe)
    firsts: set[int]  # NFKC may join the character after to them
    decomposes: set[int]  # have a decomposition (then marks after them may reorder into it)
    keep: dict[int, int]  # kept as private-use code points of their own
    compat: dict[int, str]  # every other character NFKC changes: to its NFKC


class Tables(NamedTuple):
    """Patterns and translate tables. A regex class is a bitmap for its BMP characters (one
    lookup each) but tries its astral ranges one after another at every position: so each
    class has a BMP form, and an astral one of a few wide ranges for texts that have them."""

    unstable: re.Pattern[str]  # BMP: a character NFKC may change, or we do
    unstable_astral: re.Pattern[str]  # the same above U+FFFF (wide ranges, no emoji)
    changes: re.Pattern[str]  # BMP: a character `to_nfkc` changes
    changes_astral: re.Pattern[str]  # the same, and above U+FFFF
    to_nfkc: list[int | str | None]  # by code point: its NFKC, our private use one, or none
    composing: re.Pattern[str]  # a mark or a composing character: NFKC's slow path
    maybe_run: re.Pattern[str]  # a superset of long runs of marks (BMP marks)
    maybe_run_astral: re.Pattern[str]  # the same with astral characters up to the last mark
    cut_after: re.Pattern[str]  # BMP: MAX_NONSTARTERS marks followed by another
    mark_shadow: list[int]  # by code point: astral marks to U+0300, the rest themselves
    passive_run: re.Pattern[str]  # a long run that no composition can touch
    foldable: re.Pattern[str]  # a character `fold` changes (astral: up to the last mark)
    fold: list[int | str | None]  # by code point: its NFKD, marks dropped, look-alikes mapped


@functools.cache
def classes() -> Classes:
    """One pass over the code points (~0.15 s of CPU on the 2-core dev machine)."""
    marks: list[int] = []
    combining: list[int] = []
    composes: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V, T
    firsts: set[int] = set(range(0x1100, 0x1113)) | set(range(0xAC00, 0xD7A4))  # Hangul L, LV
    decomposes: set[int] = set()
    kept: list[list[int]] = [[], [], []]  # by rule, see _keep_rule
    compat: dict[int, str] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        if unicodedata.combining(char):
            marks.append(cp)
            combining.append(cp)
        elif decomposition := unicodedata.decomposition(char):
            decomposes.add(cp)
            if _is_primary_composite(char, decomposition):
                first, second = decomposition.split()
                firsts.add(int(first, 16))
                composes.add(int(second, 16))
            nfkd = unicodedata.normalize("NFKD", char)
            if unicodedata.combining(nfkd[0]):
                marks.append(cp)
            nfkc = unicodedata.normalize("NFKC", char)
            rule = _keep_rule(char, nfkc, nfkd)
            if rule is not None:
                kept[rule].append(cp)
            elif nfkc != char:
                compat[cp] = nfkc
    # Private-use code points by rule, so that a new rule never renumbers an older one's
    # (their numbers are in cached verdicts' keys).
    keep = {
        cp: 0xF0000 + 0x1000 * rule + i for rule, cps in enumerate(kept) for i, cp in enumerate(cps)
    }
    marks = [cp for cp in marks if cp not in keep]  # kept, they are starters
    return Classes(marks, combining, composes, firsts, decomposes, keep, compat)


def _is_primary_composite(char: str, decomposition: str) -> bool:
    """Canonically two characters, and NFC makes it from them (no composition exclusion)."""
    return (
        "<" not in decomposition
        and len(decomposition.split()) == 2
        and unicodedata.normalize("NFC", char) == char
    )


def _keep_rule(char: str, nfkc: str, nfkd: str) -> int | None:
    """Which rule keeps a character as itself, if one does: 0, its NFKC is long; 1, it
    grows 3-fold, recomposes slowly or is marks only; 2, it is a spacing accent (a space
    then marks, which would also split its word in two)."""
    if len(nfkc) > _MAX_EXPANSION:
        return 0
    if (
        len(nfkc.encode()) >= _MAX_GROWTH * len(char.encode())
        or (nfkc != char and sum(c >= _COMPOSES_SLOWLY for c in nfkd) > 1)
        or (len(nfkd) > 1 and all(unicodedata.combining(c) for c in nfkd))
    ):
        return 1
    if len(nfkc) > 1 and nfkc[0] == " " and all(unicodedata.combining(c) for c in nfkc[1:]):
        return 2
    return None


@functools.cache
def tables() -> Tables:
    """~13 MB, most of it the translate tables (lists: `str.translate` indexes a list
    without hashing, where a character missing from a dict costs a raised LookupError)."""
    c = classes()
    last_mark = max(*c.marks, *c.combining)  # U+1E94A in Unicode 14, below the emoji
    identity = list(range(max(*c.compat, *c.keep) + 1))  # characters above: themselves
    zero_width = [ord(z) for z in ZERO_WIDTH]
    changes = sorted([*c.compat, *c.keep, *zero_width])
    unstable = sorted({*c.marks, *c.combining, *c.composes, *changes})
    surrogates = set(range(0xD800, 0xE000))
    passive = set(range(0x10000)) - set(unstable) - c.firsts - c.decomposes - surrogates
    fold = _fold_table(c.combining, identity[: last_mark + 1])
    marks = char_class(c.marks, 0, 0xFFFF)[1:-1]
    mark_shadow = identity[: last_mark + 1]
    for cp in c.marks:
        if cp > 0xFFFF:
            mark_shadow[cp] = 0x0300
    up_to_last_mark = f"\U00010000-{re.escape(chr(last_mark))}"
    return Tables(
        unstable=re.compile(char_class(unstable, 0, 0xFFFF)),
        unstable_astral=re.compile(f"[{_cover(unstable)}]"),
        changes=re.compile(char_class(changes, 0, 0xFFFF)),
        changes_astral=re.compile(f"{char_class(changes, 0, 0xFFFF)[:-1]}{_cover(changes)}]"),
        to_nfkc=_nfkc_table(c.compat, c.keep, zero_width, identity),
        composing=re.compile(
            char_class(sorted({*c.marks, *c.combining, *c.composes}), 0, 0xFFFF)[:-1]
            + up_to_last_mark
            + "]"
        ),
        maybe_run=re.compile(f"[{marks}]{{{MAX_NONSTARTERS + 1},}}"),
        maybe_run_astral=re.compile(f"[{marks}{up_to_last_mark}]{{{MAX_NONSTARTERS + 1},}}"),
        cut_after=re.compile(f"[{marks}]{{{MAX_NONSTARTERS}}}(?=[{marks}])"),
        mark_shadow=mark_shadow,
        passive_run=re.compile(f"({char_class(sorted(passive))}{{{_PASSIVE_RUN},}})"),
        foldable=re.compile(
            char_class([cp for cp, to in enumerate(fold) if to != cp], 0, 0xFFFF)[:-1]
            + up_to_last_mark
            + "]"
        ),
        fold=fold,
    )


def _cover(cps: list[int]) -> str:
    """A few ranges that hold every astral character of `cps` (and some others), for a
    regex class: gaps under 4096 code points are bridged, the emoji's blocks never are."""
    astral = [cp for cp in cps if cp > 0xFFFF]
    ranges = [[astral[0], astral[0]]]
    for cp in astral[1:]:
        if cp - ranges[-1][1] < 0x1000 and not ranges[-1][1] < _EMOJI_START <= cp:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges)


def _nfkc_table(
    compat: dict[int, str], keep: dict[int, int], zero_width: list[int], identity: list[int]
) -> list[int | str | None]:
    """Each character's NFKC, done by one translate before NFKC itself: NFKC of the
    result is the same (every form is its own NFKD's), and mostly its fast path, where a
    single compatibility character would send the whole text down CPython's slow one
    (about 0.2 µs a character from U+3000 up). Kept characters go to their private use,
    zero-width ones go."""
    table: list[int | str | None] = list(identity)  # the same int objects: less memory
    for cp, nfkc in compat.items():
        table[cp] = nfkc
    for cp, private in keep.items():
        table[cp] = private
    for cp in zero_width:
        table[cp] = None
    return table


def _fold_table(combining: list[int], identity: list[int]) -> list[int | str | None]:
    """By character: its NFKD with combining marks dropped and look-alikes mapped. One
    translate where there would be two passes: NFKD only decomposes each character and
    reorders marks, which the fold drops."""
    marks: list[int | None] = list(identity)
    for cp in combining:
        if cp < len(marks):
            marks[cp] = None
    for cp, to in HOMOGLYPHS.items():
        marks[cp] = to
    table: list[int | str | None] = list(marks)
    for cp in range(len(table)):
        if not 0xD800 <= cp <= 0xDFFF:
            folded = unicodedata.normalize("NFKD", chr(cp)).translate(marks)
            if folded != chr(cp):
                table[cp] = ord(folded) if len(folded) == 1 else folded or None
    return table


def char_class(cps: list[int], low: int = 0, high: int = 0x10FFFF) -> str:
    """A regex class of the sorted code points `cps` from `low` to `high`, as ranges."""
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
