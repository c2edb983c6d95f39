"""A rule file, validated and compiled for matching a batch of posts.

The file (YAML, versioned, reviewed like code: see docs/rules.md) is validated whole
before anything is compiled; a file that fails either step raises RulesInvalid, and the
caller keeps the rules it had. Compiled matchers are built once per file version:

- terms and phrases: one Aho-Corasick automaton (pyahocorasick) over the folded text
  (`modpipe.core.text.fold_for_rules`), with word boundaries checked at each hit, so
  10,000 terms cost one pass;
- regular expressions: one RE2 set (google-re2), linear in the text whatever the
  pattern, with a memory cap per program; backreferences and lookarounds are refused at
  load, which is what keeps a hostile pattern from stalling a worker;
- URL domains: every host in the post, and each parent domain up to its registered
  domain (the public suffix list shipped inside `publicsuffixlist`, no download);
- authors, known-content hashes: dictionary look-ups;
- near-duplicates: MinHash LSH (datasketch) over character 5-grams of the folded text.

Rate rules only carry their parameters here; the stage counts them on Redis. The file's
schema is `streams.rules_file`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ahocorasick
import re2
import yaml
from datasketch import MinHash, MinHashLSH
from publicsuffixlist import PublicSuffixList
from pydantic import ValidationError

from modpipe.core.errors import ModpipeError
from modpipe.core.text import fold_for_rules, fold_homoglyphs, fold_leetspeak, normalize
from streams.rules_file import NearDuplicates, Rule, RuleFile

# Which rule decides when several match a post: the most severe. `score` never decides.
PRECEDENCE: dict[str, int] = {"block": 4, "review": 3, "escalate": 2, "allow": 1}
SHINGLE = 5
NUM_PERM = 64
REGEX_MAX_MEM = 8 << 20  # bytes of RE2 program per regex set (RE2's default is 8 MiB)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PSL = PublicSuffixList()  # the snapshot the package ships; parsed once per process
_URL_HOSTS = re2.compile(
    r"(?:[a-z][a-z0-9+.-]*://)?((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62})"
)


class RulesInvalid(ModpipeError):
    """A rule file that cannot be read, validated or compiled; the old rules stay."""


@dataclass(slots=True)
class NearIndex:
    """One near-duplicate rule's LSH index, and the sizes of shingle set it can match:
    Jaccard >= t needs t * |known| <= |post| <= |known| / t, so other posts skip MinHash."""

    lsh: MinHashLSH
    known: dict[str, MinHash]
    threshold: float
    smallest: float
    largest: float


@dataclass(slots=True)
class RuleBook:
    """A compiled rule file. `match` gives, per post, the indices of the rules it hits
    (rate rules apart: see `rate_rules`)."""

    version: str
    rules: list[Rule]
    digest: str
    terms: Any = None  # ahocorasick.Automaton: folded term -> rule indices
    regexes: Any = None  # re2.Set
    regex_rules: list[int] = field(default_factory=list)
    domains: dict[str, list[int]] = field(default_factory=dict)
    authors: dict[str, list[int]] = field(default_factory=dict)
    hashes: dict[str, list[int]] = field(default_factory=dict)
    near: list[NearIndex] = field(default_factory=list)
    near_rules: dict[str, int] = field(default_factory=dict)
    rate_rules: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # list files read: watched for changes
    _permutations: Any = None

    def match(self, text: str, author: str | None) -> list[int]:
        """The rules one post hits (possibly several; expiry not yet applied)."""
        norm = normalize(text)
        hits: list[int] = []
        if self.hashes:
            hits += self.hashes.get(hashlib.sha256(norm.encode()).hexdigest(), ())
        if self.authors and author is not None:
            hits += self.authors.get(author, ())
        folded = (
            fold_leetspeak(fold_homoglyphs(norm)) if self.terms is not None or self.near else norm
        )
        if self.terms is not None:
            hits += self._terms(folded)
        if self.regexes is not None:
            # The binding returns None for no match (and for a DFA out of memory: RE2 never
            # falls back to backtracking, so a hostile pattern costs a miss, never a stall).
            hits += [self.regex_rules[i] for i in self.regexes.Match(norm) or ()]
        if self.domains and "." in norm:
            hits += self._domains(norm)
        if self.near and len(norm) >= SHINGLE:
            hits += self._near(folded)
        return hits

    def _terms(self, folded: str) -> list[int]:
        hits: list[int] = []
        for end, (length, rules) in self.terms.iter(folded):
            start = end - length + 1
            # Word boundaries: a term inside a longer word is no hit ("class" is not "ass").
            if (start == 0 or not folded[start - 1].isalnum()) and (
                end + 1 == len(folded) or not folded[end + 1].isalnum()
            ):
                hits += rules
        return hits

    def _domains(self, norm: str) -> list[int]:
        hits: list[int] = []
        for host in {m.group(1) for m in _URL_HOSTS.finditer(norm)}:
            registered = _PSL.privatesuffix(host) or host
            name = host
            while True:
                hits += self.domains.get(name, ())
                if name == registered or "." not in name:
                    break
                name = name.split(".", 1)[1]
        return hits

    def _near(self, folded: str) -> list[int]:
        # Bounds first: the text's length bounds its shingle count from above, and the
        # count itself is cheap beside a MinHash (most posts are far off a wave's size).
        most = len(folded.encode()) - SHINGLE + 1
        if all(most < index.smallest for index in self.near):
            return []
        grams = shingles(folded)
        fits = [ix for ix in self.near if ix.smallest <= len(grams) <= ix.largest]
        if not fits:
            return []
        m = MinHash(num_perm=NUM_PERM, permutations=self._permutations, scheme="affine32")
        m.update_batch(grams)
        hits: list[int] = []
        for index in fits:
            for key in index.lsh.query(m):
                if m.jaccard(index.known[key]) >= index.threshold:
                    hits.append(self.near_rules[key])
                    break
        return hits


def shingles(folded: str) -> list[bytes]:
    """Character 5-grams: a one-letter edit changes at most five of them."""
    data = folded.encode()
    if len(data) <= SHINGLE:
        return [data]
    return list({data[i : i + SHINGLE] for i in range(len(data) - SHINGLE + 1)})


def load_rules(path: Path, categories: set[str] | None = None) -> RuleBook:
    """Read, validate and compile `path`; raises RulesInvalid saying what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RulesInvalid(f"cannot read rules {path}: {exc.strerror}") from None
    return compile_rules(raw, path.parent, categories, where=str(path))


def compile_rules(
    raw: bytes, base: Path, categories: set[str] | None = None, where: str = "rules"
) -> RuleBook:
    """Validate and compile a rule file's bytes (list files resolve against `base`)."""
    try:
        data = yaml.safe_load(raw)
        spec = RuleFile.model_validate(data)
    except yaml.YAMLError as exc:
        raise RulesInvalid(f"{where}: not YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise RulesInvalid(f"{where}: {problems}") from None
    if categories is not None:
        unknown = {r.category for r in spec.rules if r.category} - categories
        if unknown:
            raise RulesInvalid(f"{where}: unknown categories {sorted(unknown)}")
    book = RuleBook(spec.version, list(spec.rules), "")
    for i, rule in enumerate(spec.rules):
        try:
            _compile_one(book, i, rule, base)
        except (OSError, ValueError, re2.error) as exc:
            raise RulesInvalid(f"{where}: rule {rule.id}: {exc}") from None
    _finish(book)
    book.digest = rules_digest(raw, book.files)
    return book


def rules_digest(raw: bytes, files: Sequence[Path]) -> str:
    """What a rule set is: the file's bytes and those of the list files it names."""
    digest = hashlib.sha256(raw)
    for path in files:
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()


def _compile_one(book: RuleBook, i: int, rule: Rule, base: Path) -> None:
    m = rule.match
    kind = m.kind
    if kind == "terms":
        terms = list(m.terms or []) + _lines(book, base, m.terms_file)
        for term in terms:
            folded = fold_for_rules(term)
            if not folded:
                raise ValueError(f"term {term!r} is empty once normalised")
            if book.terms is None:
                book.terms = ahocorasick.Automaton()
            present = book.terms.get(folded, None)
            rules = present[1] if present else []
            book.terms.add_word(folded, (len(folded), [*rules, i]))
    elif kind == "regex":
        _add_regexes(book, i, m.regex or [])
    elif kind == "domains":
        for domain in m.domains or []:
            name = normalize(domain).strip(".")
            if "." not in name or "/" in name:
                raise ValueError(f"{domain!r} is not a domain name")
            book.domains.setdefault(name, []).append(i)
    elif kind == "authors":
        for author in m.authors or []:
            book.authors.setdefault(author, []).append(i)
    elif kind == "known":
        digests = [h.lower() for h in (m.hashes or [])] + _lines(book, base, m.hashes_file)
        for digest in digests:
            if not _HEX64.match(digest):
                raise ValueError(f"{digest!r} is not a SHA-256 hex digest")
        digests += [hashlib.sha256(normalize(t).encode()).hexdigest() for t in m.texts or []]
        for digest in digests:
            book.hashes.setdefault(digest, []).append(i)
    elif kind == "near_duplicates":
        assert m.near_duplicates is not None
        _add_near(book, i, m.near_duplicates)
    else:
        book.rate_rules.append(i)


def _add_regexes(book: RuleBook, i: int, patterns: list[str]) -> None:
    """Rule `i`'s patterns into the book's one RE2 set."""
    if book.regexes is None:
        options = re2.Options()
        options.max_mem = REGEX_MAX_MEM
        options.log_errors = False
        book.regexes = re2.Set.SearchSet(options)
    for pattern in patterns:
        options = re2.Options()
        options.log_errors = False
        re2.compile(pattern, options)  # a readable error for this one pattern
        if book.regexes.Add(pattern) < 0:
            raise ValueError(f"regex {pattern!r} refused by RE2")
        book.regex_rules.append(i)


def _add_near(book: RuleBook, i: int, near: NearDuplicates) -> None:
    """Rule `i`'s known texts as one LSH index of MinHash signatures."""
    if book._permutations is None:
        book._permutations = MinHash(num_perm=NUM_PERM).permutations
    # The index is built looser than the rule so LSH's banding misses few true
    # near-duplicates; each candidate is then held to the rule's own threshold.
    lsh = MinHashLSH(threshold=max(0.05, near.threshold - 0.2), num_perm=NUM_PERM)
    known: dict[str, MinHash] = {}
    sizes: list[int] = []
    for n, text in enumerate(near.texts):
        key = f"{i}:{n}"
        grams = shingles(fold_for_rules(text))
        sizes.append(len(grams))
        sig = MinHash(num_perm=NUM_PERM, permutations=book._permutations, scheme="affine32")
        sig.update_batch(grams)
        lsh.insert(key, sig)
        known[key] = sig
        book.near_rules[key] = i
    t = near.threshold
    book.near.append(NearIndex(lsh, known, t, t * min(sizes), max(sizes) / t))


def _finish(book: RuleBook) -> None:
    if book.terms is not None:
        book.terms.make_automaton()
    if book.regexes is not None:
        book.regexes.Compile()


def _lines(book: RuleBook, base: Path, name: Path | None) -> list[str]:
    """Non-empty, non-comment lines of a list file next to the rule file."""
    if name is None:
        return []
    path = name if name.is_absolute() else base / name
    book.files.append(path)
    text = path.read_text(encoding="utf-8")
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def now_utc() -> datetime:
    """The time rule expiry is judged by."""
    return datetime.now(UTC)
