"""Text normalisation shared by the verdict cache key, the rules stage and the datasets.

`normalize` is the cache key's normalisation, linear in the text whatever its characters:
a change to its output orphans every cached verdict (tests/unit/core/test_text.py pins
examples). The folds below are for rules only: they map look-alike spellings onto one form
so a term list written in plain letters also matches `f@ck`, `idiot` spelt with Cyrillic i
or `idiöt`. They are lossy on purpose and never reach the cache key. The code point
classes and tables they use are in `modpipe.core.unicode_tables`.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

from modpipe.core.unicode_tables import MAX_NONSTARTERS, Tables, tables

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


def normalize(text: str) -> str:
    """Fold Unicode compatibility forms, case, zero-width characters and whitespace.

    Linear in the text, with a small constant whatever its characters:
    - a text with no character that NFKC may change (no mark, no compatibility or
      composing character) skips it, after one regex scan;
    - zero-width characters go first, so none can keep a mark from its letter;
    - the few characters whose compatibility form is long (U+FDFA is 18 characters), at
      least 3 times their UTF-8 size (U+3300, a squared katakana word), several
      characters from U+3000 up (U+3310), marks only (U+0F73) or a space or tatweel then
      marks (spacing clones of marks: U+00B4, U+FE77) stay themselves, as private-use
      characters of their own;
    - Unicode's canonical reordering sorts each run of combining marks, quadratic in the
      run's length (in ICU as in CPython), so runs are cut every 8 marks by U+034F (the
      Stream-Safe Text Format of UAX #15);
    - NFKC is ICU's, CPython's to the character (see `modpipe.core.unicode_tables`);
    - the 26 characters whose full case folding is decomposed (U+0390 folds to 3
      characters) fold to its composed form (NFC), so a text of them costs the folds
      after it no more than the characters did.
    """
    if text.isascii():  # NFKC leaves ASCII alone, and it has no zero-width characters
        return " ".join(text.lower().split())  # str.split splits on exactly what `\s` matches
    t = tables()
    astral = _has_astral(text)
    if t.unstable.search(text) or (astral and t.unstable_astral.search(text)):
        text = _nfkc(t, text, astral)
    folded = text.casefold()
    if len(folded) != len(text) and t.case_decomposes.search(text):
        for char, decomposed, composed in t.case_compositions:
            if char in text:
                folded = folded.replace(decomposed, composed)
    return _collapse_spaces(folded)


def _nfkc(t: Tables, text: str, astral: bool) -> str:
    nfkc = t.nfkc
    if (t.ours_astral if astral else t.ours).search(text):
        text = text.translate(t.before_nfkc)
        nfkc = t.nfkc_known  # ~8 µs per KB more: only where a character may need it
    runs = t.maybe_run_astral if astral else t.maybe_run
    text = runs.sub(functools.partial(_cut_runs, t), text)
    try:
        return str(nfkc.normalize(text))
    except UnicodeEncodeError:  # a lone surrogate, which ICU cannot take (posts cannot hold
        return unicodedata.normalize("NFKC", text)  # one: the decoder refuses them)


def _has_astral(text: str) -> bool:
    """Whether any character is above U+FFFF: those take two UTF-16 code units (a copy of
    the text, ~0.5 µs per KB, where a regex class of them costs ~3)."""
    return len(text.encode("utf-16-le", "surrogatepass")) > 2 * len(text)


def _collapse_spaces(text: str) -> str:
    """`" ".join(text.split())`, which costs a string per word: every whitespace character
    but the space is unprintable, so a printable text without two spaces in a row only
    needs its ends stripped (a text of one-letter words costs no more than any other)."""
    if text.isprintable() and "  " not in text:
        return text.strip()
    return " ".join(text.split())


def _cut_runs(t: Tables, span: re.Match[str]) -> str:
    """A run found by a superset pattern, cut every MAX_NONSTARTERS marks."""
    run = span[0]
    if _has_astral(run):
        # Astral characters, marks or not: on a copy where astral marks are one BMP mark
        # (character for character), bitmap classes tell the marks.
        shadow = run.translate(t.mark_shadow)
        if t.not_a_mark.search(shadow):
            cuts = [match.end() for match in t.cut_after.finditer(shadow)]
            return "\u034f".join(
                [run[i:j] for i, j in zip([0, *cuts], [*cuts, len(run)], strict=True)]
            )
    # Marks only: slices (a regex match a cut costs ~1 µs, 50 µs per KB of marks).
    step = MAX_NONSTARTERS
    return "\u034f".join([run[i : i + step] for i in range(0, len(run), step)])


def fold_leetspeak(text: str) -> str:
    """`normalize`d text with the digits and symbols that stand in for letters replaced."""
    # Every character it maps is ASCII, and UTF-8 never puts an ASCII byte inside a
    # longer character: one bytes.translate whatever the text.
    # (A lone surrogate passes as its three bytes: none of them is ASCII either.)
    return (
        text.encode("utf-8", "surrogatepass")
        .translate(_LEET_BYTES)
        .decode("utf-8", "surrogatepass")
    )


def fold_homoglyphs(text: str) -> str:
    """`normalize`d text with accents stripped and look-alike letters of other scripts
    mapped onto Latin ones."""
    if text.isascii():
        return text
    t = tables()
    for sequence, folded in t.fold_sequences:
        if sequence[-1] in text:
            text = text.replace(sequence, folded)
    if not t.foldable.search(text):
        return text
    return text.translate(t.fold)  # NFKD and the fold, character by character


def fold_for_rules(text: str) -> str:
    """What term rules match on: normalised, homoglyphs and leetspeak folded."""
    return fold_leetspeak(fold_homoglyphs(normalize(text)))


def content_hash(text: str) -> str:
    """The known-content hash of a text: SHA-256 hex of its normalised form."""
    return hashlib.sha256(normalize(text).encode()).hexdigest()
