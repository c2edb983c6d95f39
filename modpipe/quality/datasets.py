"""Labelled data for training, evaluation and calibration: JSONL or CSV.

JSONL rows are `{"text": str, "label": 0|1}` with optional `categories` and `post_id`;
CSV files name their columns (`text_col`, `label_col`) and which label values count as
violating (`positive`). Rows with an empty text are skipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from modpipe.core.errors import ConfigError


@dataclass
class Labelled:
    """Texts, binary labels (1 = violating) and optional per-row groups and ids."""

    texts: list[str]
    labels: list[int]
    groups: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> Labelled:
        """The rows at `index`, in that order."""
        pick = lambda xs: [xs[i] for i in index] if xs else []  # noqa: E731
        return Labelled(
            pick(self.texts), pick(self.labels), pick(self.groups), pick(self.ids), self.sha256
        )


def load_labelled(
    path: Path,
    text_col: str = "text",
    label_col: str = "label",
    positive: tuple[str, ...] = ("1", "true", "True"),
    group_col: str | None = None,
) -> Labelled:
    """Read a JSONL or CSV file of labelled posts."""
    if not path.exists():
        raise ConfigError(f"no such data file: {path}")
    data = Labelled([], [], sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    for n, row in enumerate(rows):
        if text_col not in row or label_col not in row:
            raise ConfigError(f"{path}: row {n} lacks column {text_col!r} or {label_col!r}")
        text = str(row[text_col] or "").strip()
        if not text:
            continue
        data.texts.append(text)
        data.labels.append(1 if str(row[label_col]) in positive else 0)
        if group_col:
            data.groups.append(str(row.get(group_col, "")))
        data.ids.append(str(row.get("post_id", n)))
    if len(set(data.labels)) < 2:
        raise ConfigError(f"{path}: labels are all one class; check --label-col/--positive")
    return data
