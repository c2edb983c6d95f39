"""The code point classes and tables behind `modpipe.core.text`, built once on first use.

Each normalisation step costs one regex scan or one `str.translate` over the text, so
the classes here are what makes it cheap: which characters NFKC may change, which ones
we keep as themselves (their NFKC is long or grows many-fold), which ones reorder.

NFKC itself is ICU's (PyICU): CPython's composes each character after a linear search of
its table (~0.15 µs a character from U+3000 up, ~0.06 for Cyrillic), ICU's costs 1-10 µs
per KB on any text. Where a text holds a character newer than CPython's Unicode version
(the one every other step here reads) that ICU's NFKC would change or reorder, it is
restricted to CPython's characters: the output is CPython's NFKC to the character
(tests/unit/core/test_text.py checks every code point).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, NamedTuple

import icu

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"
MAX_NONSTARTERS = 8  # UAX #15 says 30; no real text stacks 8 marks on a letter
_MAX_EXPANSION = 4  # characters of compatibility form
_MAX_GROWTH = 3  # times a character's own UTF-8 size: NFKC's cost follows what it makes
# CPython recomposes each character from here up after a linear search of its composition
# table (~0.2 µs): legacy squared words (U+3310, ギガ) make four of them from 3 bytes.
_COMPOSES_SLOWLY = "\u3000"
_EMOJI_START = 0x1F300  # Miscellaneous Symbols and Pictographs, then the other emoji blocks

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
    keep: dict[int, int]  # kept as private-use code points of their own
    compat: dict[int, str]  # every other character NFKC changes: to its NFKC


class Tables(NamedTuple):
    """Patterns and translate tables. A regex class is a bitmap for its BMP characters (one
    lookup each) but tries its astral ranges one after another at every position: so each
    class has a BMP form, and an astral one of a few wide ranges for texts that have them."""

    unstable: re.Pattern[str]  # BMP: a character NFKC may change, or we do
    unstable_astral: re.Pattern[str]  # the same above U+FFFF (wide ranges, no emoji)
    ours: re.Pattern[str]  # BMP: zero-width, kept, or newer than CPython's Unicode
    ours_astral: re.Pattern[str]  # the same, and above U+FFFF
    before_nfkc: list[int | None]  # by code point: zero-width ones none, kept ones private use
    nfkc: Any  # ICU's NFKC
    nfkc_known: Any  # ICU's NFKC of the characters CPython knows only: the others as they are
    case_decomposes: re.Pattern[str]  # a character whose full case folding is decomposed
    case_compositions: list[tuple[str, str, str]]  # each, its folding, its folding composed
    maybe_run: re.Pattern[str]  # a superset of long runs of marks (BMP marks)
    maybe_run_astral: re.Pattern[str]  # the same with astral characters up to the last mark
    cut_after: re.Pattern[str]  # BMP: MAX_NONSTARTERS marks followed by another
    not_a_mark: re.Pattern[str]  # BMP: any other character
    mark_shadow: list[int]  # by code point: astral marks to U+0300, the rest themselves
    fold_sequences: list[tuple[str, str]]  # case foldings that keep a mark, folded (U+0130)
    foldable: re.Pattern[str]  # a character `fold` changes (astral: up to the last mark)
    fold: list[int | str | None]  # by code point: its NFKD, marks dropped, look-alikes mapped


@functools.cache
def classes() -> Classes:
    """One pass over the code points (~0.15 s of CPU on the 2-core dev machine)."""
    marks: list[int] = []
    combining: list[int] = []
    composes: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V, T
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
            if _is_primary_composite(char, decomposition):
                composes.add(int(decomposition.split()[1], 16))
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
    return Classes(marks, combining, composes, keep, compat)


def _is_primary_composite(char: str, decomposition: str) -> bool:
    """Canonically two characters, and NFC makes it from them (no composition exclusion)."""
    return (
        "<" not in decomposition
        and len(decomposition.split()) == 2
        and unicodedata.normalize("NFC", char) == char
    )


def _keep_rule(char: str, nfkc: str, nfkd: str) -> int | None:
    """Which rule keeps a character as itself, if one does: 0, its NFKC is long; 1, it
    grows 3-fold, recomposes slowly or is marks only; 2, it is a spacing clone of a mark
    (a space or an Arabic tatweel, then marks: U+00B4, U+FE77), whose NFKC would split
    its word or fill it with marks the rules drop. Kept, a post of them costs what
    any other does in every step after NFKC; rule 1's slow recomposition was CPython's."""
    if len(nfkc) > _MAX_EXPANSION:
        return 0
    if (
        len(nfkc.encode()) >= _MAX_GROWTH * len(char.encode())
        or (nfkc != char and sum(c >= _COMPOSES_SLOWLY for c in nfkd) > 1)
        or (len(nfkd) > 1 and all(unicodedata.combining(c) for c in nfkd))
    ):
        return 1
    if len(nfkc) > 1 and nfkc[0] in " \u0640" and all(unicodedata.combining(c) for c in nfkc[1:]):
        return 2
    return None


@functools.cache
def tables() -> Tables:
    """~13 MB, most of it the translate tables (lists: `str.translate` indexes a list
    without hashing, where a character missing from a dict costs a raised LookupError).
    ~0.4 s of CPU to build on the 2-core dev machine."""
    c = classes()
    last_mark = max(*c.marks, *c.combining)  # U+1E94A in Unicode 14, below the emoji
    identity = list(range(max(last_mark, *c.keep) + 1))  # characters above: themselves
    zero_width = [ord(z) for z in ZERO_WIDTH]
    known, newer = _icu_sets()
    ours = sorted({*c.keep, *zero_width, *newer})
    unstable = sorted({*c.marks, *c.combining, *c.composes, *c.compat, *ours})
    foldings = _full_case_foldings()
    case = [(char, folded, composed) for char, folded, composed in foldings if composed != folded]
    # The foldings that keep a mark, composed or not (in Unicode 14 only U+0130's, `i` and
    # U+0307), with their fold: one `str.replace` spares a text of them a translate.
    with_marks = sorted({composed for _, _, composed in foldings if _has_mark(composed)})
    fold = _fold_table(c.combining, identity[: last_mark + 1])
    marks = char_class(c.marks, 0, 0xFFFF)[1:-1]
    up_to_last_mark = f"\U00010000-{re.escape(chr(last_mark))}"
    return Tables(
        unstable=re.compile(char_class(unstable, 0, 0xFFFF)),
        unstable_astral=re.compile(f"[{_cover(unstable)}]"),
        ours=re.compile(char_class(ours, 0, 0xFFFF)),
        # Narrower: a character of ours sends the text to the slower NFKC.
        ours_astral=re.compile(f"{char_class(ours, 0, 0xFFFF)[:-1]}{_cover(ours, 0x100)}]"),
        before_nfkc=_before_nfkc(c.keep, zero_width, identity),
        nfkc=icu.Normalizer2.getNFKCInstance(),
        nfkc_known=icu.FilteredNormalizer2(icu.Normalizer2.getNFKCInstance(), known),
        case_decomposes=re.compile(char_class([ord(char) for char, _, _ in case])),
        case_compositions=case,
        # A class first, then the repeat: the engine skips to the class's characters
        # (a class repeated from the start is tried at every position, twice the cost).
        maybe_run=re.compile(f"[{marks}][{marks}]{{{MAX_NONSTARTERS},}}"),
        maybe_run_astral=re.compile(
            f"[{marks}{up_to_last_mark}][{marks}{up_to_last_mark}]{{{MAX_NONSTARTERS},}}"
        ),
        cut_after=re.compile(f"[{marks}]{{{MAX_NONSTARTERS}}}(?=[{marks}])"),
        not_a_mark=re.compile(f"[^{marks}]"),
        mark_shadow=_mark_shadow(c.marks, identity[: last_mark + 1]),
        fold_sequences=[(sequence, sequence.translate(fold)) for sequence in with_marks],
        foldable=re.compile(
            char_class([cp for cp, to in enumerate(fold) if to != cp], 0, 0xFFFF)[:-1]
            + up_to_last_mark
            + "]"
        ),
        fold=fold,
    )


def _icu_sets() -> tuple[Any, list[int]]:
    """The characters of CPython's Unicode version, as an ICU set; and the characters it
    does not have that ICU's NFKC would change or reorder (141 from Unicode 14 to 16):
    where one is, NFKC leaves out what CPython's would."""
    version = unicodedata.unidata_version
    newer = icu.UnicodeSet(
        f"[[:^age={version}:]&[:^gc=Cn:]&[[:NFKC_QC=N:][:NFKC_QC=M:][:^ccc=0:]]]"
    )
    return icu.UnicodeSet(f"[:age={version}:]"), [ord(char) for char in newer]


def _mark_shadow(marks: list[int], identity: list[int]) -> list[int]:
    table = list(identity)
    for cp in marks:
        if cp > 0xFFFF:
            table[cp] = 0x0300
    return table


def _cover(cps: list[int], gap: int = 0x1000) -> str:
    """A few ranges that hold every astral character of `cps` (and some others), for a
    regex class: gaps under `gap` code points are bridged, the emoji's blocks never are."""
    astral = [cp for cp in cps if cp > 0xFFFF]
    ranges = [[astral[0], astral[0]]]
    for cp in astral[1:]:
        if cp - ranges[-1][1] < gap and not ranges[-1][1] < _EMOJI_START <= cp:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges)


def _before_nfkc(
    keep: dict[int, int], zero_width: list[int], identity: list[int]
) -> list[int | None]:
    """Zero-width characters removed, kept ones to their private use; the rest as is."""
    table: list[int | None] = list(identity)  # the same int objects: less memory
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


def _full_case_foldings() -> list[tuple[str, str, str]]:
    """Characters whose case folding is several characters (U+00DF to `ss`), with the
    folding and its NFC (U+0390 folds to iota and two marks, composed again)."""
    found = []
    for cp in range(0x110000):
        folded = chr(cp).casefold() if not 0xD800 <= cp <= 0xDFFF else ""
        if len(folded) > 1:
            found.append((chr(cp), folded, unicodedata.normalize("NFC", folded)))
    return found


def _has_mark(text: str) -> bool:
    return any(unicodedata.combining(char) for char in text)


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
