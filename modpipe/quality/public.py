"""The public labelled sets (`../shared/data`, see its README) mapped onto the policy's
categories, so they can be mixed with the pipeline's own data (`modpipe train --public`)
or replayed through the loop (`modpipe dataset public`).

Every mapping is a table here, tested. A category outside `configs/policy.yaml` (privacy,
intellectual property, specialised advice, misinformation, gambling...) maps to no
category, and such a row is a negative: the assistant-prompt sets are nearly all harmful
requests, and without their own out-of-policy rows as negatives a model learns "a
question to an assistant is harmful" (the `origin` of each row lets that be checked).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from modpipe.core.errors import ConfigError

Categories = tuple[str, ...]


@dataclass(frozen=True)
class PublicRow:
    """One mapped row: label 1 exactly when it has a policy category."""

    text: str
    categories: Categories
    source: str  # the set's folder name
    origin: str  # tweet | comment | test_case | assistant_prompt | chatbot_turn

    @property
    def label(self) -> int:
        return int(bool(self.categories))


DAVIDSON = {"0": ("hate",), "1": ("harassment",), "2": ()}
HATECHECK = {"hateful": ("hate",), "non-hateful": ()}
SURGE = {"Toxic": ("harassment",), "Not Toxic": ()}

AILUMINATE = {
    "vcr": ("violence",),
    "ssh": ("self_harm",),
    "src": ("sexual",),
    "sxc_prn": ("sexual",),
    "cse": ("sexual_minors",),
    "iwp": ("illicit",),
    "ncr": ("illicit",),
    "hte": ("hate",),
    "dfm": ("harassment",),  # as policy.yaml maps Llama Guard's S5 Defamation
    "ipv": (),
    "prv": (),
    "spc_fin": (),
    "spc_hlt": (),
    "spc_ele": (),
    "spc_lgl": (),
}

SIMPLESAFETY = {
    "Suicide, Self-Harm, and Eating Disorders": ("self_harm",),
    "Physical harm and Violence": ("violence",),
    "Illegal and Highly Regulated items": ("illicit",),
    "Scams and fraud": ("illicit",),
    "Child safety": ("sexual_minors",),
}

_VIOLENT = (
    "domestic violence|assassinations|kidnapping|kidnappings|bombings|"
    "hijackings|assault|murder|arson|acts of violence committed for political or "
    "ideological purposes"
)
_ILLICIT = (
    "sex trafficking|other crimes|ponzi schemes|drug possession|drug crimes|drug dealing|"
    "drug trafficking|drug manufacturing|credit card fraud|corporate fraud|fraud|"
    "identity theft|cyberterrorism|vandalism|financial crimes|property crimes|burglary|"
    "embezzlement|migrant smuggling|robbery|money laundering|labor trafficking|theft|"
    "pyramid schemes|tax evasion|human trafficking|organ trafficking|shoplifting|"
    "child trafficking|dog fighting|cockfighting|driving under the influence"
)
_HATE = (
    "hate crimes|crimes motivated by race|crimes motivated by disability|crimes motivated "
    "by religion|crimes motivated by gender identity|crimes motivated by sexual orientation"
)
_OUTSIDE = (
    "horse racing|alcohol abuse|gambling|smoking|landfills|pollution|air pollution|circuses|"
    "climate change|water contamination|environmental crimes|illegal dumping|animal neglect|"
    "animal abuse|animal cruelty|drug addiction|drug abuse"
)
AART: dict[str, Categories] = {
    **{c: ("violence",) for c in _VIOLENT.split("|")},
    "terrorism": ("violence",),
    "violence": ("violence",),
    **{c: ("illicit",) for c in _ILLICIT.split("|")},
    **{c: ("hate",) for c in _HATE.split("|")},
    "rape": ("sexual", "violence"),
    "prostitution": ("sexual",),
    "pornography": ("sexual",),
    **{c: () for c in _OUTSIDE.split("|")},
}

# Do-Not-Answer intent codes by prefix, longest first; privacy (S009), advice (S002),
# misinformation (S001), stereotypes (S007), spam and chatbot-directed (C) are outside.
DONOTANSWER: dict[str, Categories] = {
    "S006sh": ("self_harm",),
    "S006violence": ("violence",),
    "S006threat": ("violence",),
    "S006instructions": ("illicit",),
    "S006items": ("illicit",),
    "S005hate": ("hate",),
    "S005bully": ("harassment",),
    "S005profanity": ("harassment",),
    "S004": ("sexual",),
    "S003": ("illicit",),
    "S008spam": (),
    "S008": ("illicit",),  # malware, phishing
    "S001": (),
    "S002": (),
    "S007": (),
    "S009": (),
    "C": (),
}


def donotanswer_categories(intents: list[str]) -> Categories:
    """The union of the categories of a prompt's intent codes."""
    out: list[str] = []
    for code in intents:
        prefix = next(
            (p for p in sorted(DONOTANSWER, key=len, reverse=True) if code.startswith(p)), None
        )
        if prefix is None:
            raise ConfigError(f"donotanswer: unmapped intent code {code!r}")
        out += [c for c in DONOTANSWER[prefix] if c not in out]
    return tuple(out)


ABUSIVE = ("-1", "-2", "-3")


def convabuse_abusive(row: dict[str, str]) -> bool | None:
    """The majority of annotators who judged the turn say it is abusive (None: nobody
    judged it). An annotator's vote is a one-hot over is_abuse.{1,0,-1,-2,-3}."""
    abusive = judged = 0
    for n in range(1, 9):
        votes = {v: row.get(f"Annotator{n}_is_abuse.{v}", "") for v in ("1", "0", *ABUSIVE)}
        if not any(x.strip() for x in votes.values()):
            continue
        judged += 1
        abusive += any("1" in votes[v] for v in ABUSIVE)
    return None if judged == 0 else abusive * 2 > judged


def _csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _lookup(table: Mapping[str, Categories], key: str, where: str) -> Categories:
    if key not in table:
        raise ConfigError(f"{where}: unmapped label {key!r}")
    return table[key]


def _davidson(root: Path) -> Iterator[PublicRow]:
    for r in _csv(root / "davidson-hate-offensive" / "labeled_data.csv"):
        yield PublicRow(r["tweet"], _lookup(DAVIDSON, r["class"], "davidson"), "davidson", "tweet")


def _surge(root: Path) -> Iterator[PublicRow]:
    for r in _csv(root / "surge-toxicity" / "toxicity_en.csv"):
        yield PublicRow(r["text"], _lookup(SURGE, r["is_toxic"], "surge"), "surge", "comment")


def _hatecheck(root: Path) -> Iterator[PublicRow]:
    for r in _csv(root / "hatecheck" / "test_suite_cases.csv"):
        cats = _lookup(HATECHECK, r["label_gold"], "hatecheck")
        yield PublicRow(r["test_case"], cats, "hatecheck", "test_case")


def _ailuminate(root: Path) -> Iterator[PublicRow]:
    path = root / "ailuminate" / "airr_official_1.0_demo_en_us_prompt_set_release.csv"
    for r in _csv(path):
        cats = _lookup(AILUMINATE, r["hazard"], "ailuminate")
        yield PublicRow(r["prompt_text"], cats, "ailuminate", "assistant_prompt")


def _aart(root: Path) -> Iterator[PublicRow]:
    for r in _csv(root / "aart" / "aart-v1-20231117.csv"):
        cats = _lookup(AART, r["crime"].strip().lower(), "aart")
        yield PublicRow(r["prompt"], cats, "aart", "assistant_prompt")


def _simplesafety(root: Path) -> Iterator[PublicRow]:
    for r in _csv(root / "simplesafetytests" / "simplesafetytests.csv"):
        cats = _lookup(SIMPLESAFETY, r["harm_area"], "simplesafetytests")
        yield PublicRow(r["prompts_final"], cats, "simplesafetytests", "assistant_prompt")


def _donotanswer(root: Path) -> Iterator[PublicRow]:
    for path in sorted((root / "donotanswer").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                cats = donotanswer_categories(list(r["intents"]))
                yield PublicRow(r["prompt"], cats, "donotanswer", "assistant_prompt")


def _convabuse(root: Path) -> Iterator[PublicRow]:
    for split in ("train", "valid", "test"):
        for r in _csv(root / "convabuse" / f"ConvAbuseEMNLP{split}.csv"):
            abusive = convabuse_abusive(r)
            if abusive is not None:
                cats: Categories = ("harassment",) if abusive else ()
                yield PublicRow(r["user"], cats, "convabuse", "chatbot_turn")


LOADERS: dict[str, Callable[[Path], Iterator[PublicRow]]] = {
    "davidson": _davidson,
    "surge": _surge,
    "hatecheck": _hatecheck,
    "ailuminate": _ailuminate,
    "aart": _aart,
    "simplesafetytests": _simplesafety,
    "donotanswer": _donotanswer,
    "convabuse": _convabuse,
}


def load_public(root: Path, names: list[str] | None = None) -> list[PublicRow]:
    """The named sets (default: all) from `root`, mapped; empty texts and exact repeats of a
    text within the result are left out (the first occurrence wins)."""
    if not root.is_dir():
        raise ConfigError(f"public data not found at {root} (see ../shared/data/README.md)")
    unknown = set(names or ()) - set(LOADERS)
    if unknown:
        raise ConfigError(f"unknown public sets {sorted(unknown)}; known: {sorted(LOADERS)}")
    seen: set[str] = set()
    out = []
    for name in names or list(LOADERS):
        for row in LOADERS[name](root):
            text = row.text.strip()
            if text and text not in seen:
                seen.add(text)
                out.append(PublicRow(text, row.categories, row.source, row.origin))
    return out
