"""Recorded tier-1 outputs as the scores `modpipe eval` and `calibrate` work on.

The small tier's verdicts (`moderation.verdicts`, tier `small`) and escalations
(`moderation.escalations`) carry `p_violation`, the tier's own probability of a violation,
allows included (docs/gpu-tier.md). A JSONL of those records, joined with labelled data on
`post_id`, lets the GPU tier be evaluated and its bands chosen on what it actually said,
without calling the model again. Each post's score is its recorded `p_violation`, under
one key (`RECORDED`), so routing reads it with the default band.

Skipped, and counted: verdicts of other tiers (frontier, cache, fallback, human), and
records without a probability (an escalation whose classifier failed). A post recorded
twice (a redelivery) keeps its last record: the tier gives the same number again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modpipe.core.errors import ConfigError
from modpipe.quality.datasets import Labelled

RECORDED = "p_violation"  # the one score key of a recorded post


@dataclass(frozen=True)
class Recorded:
    """`p_violation` by post_id, and how many records were left out."""

    p: dict[str, float]
    skipped: int


def _post_id_and_p(obj: dict[str, Any]) -> tuple[str | None, Any]:
    if isinstance(obj.get("post"), dict):  # an escalation carries its post
        return obj["post"].get("post_id"), obj.get("p_violation")
    if obj.get("tier") != "small":
        return None, None
    return obj.get("post_id"), obj.get("p_violation")


def load_recorded(path: Path) -> Recorded:
    """The small tier's `p_violation` per post from a JSONL of verdict and escalation
    records (as read from the topics); ConfigError for a line that is not JSON or a
    probability outside [0, 1]."""
    if not path.exists():
        raise ConfigError(f"no such recorded outputs file: {path}")
    found: dict[str, float] = {}
    skipped = 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not JSON: {exc}") from exc
        pid, p = _post_id_and_p(obj if isinstance(obj, dict) else {})
        if pid is None or p is None:
            skipped += 1
            continue
        # NaN and infinities fail the range test too.
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"{path}:{n}: p_violation {p!r} is not a probability")
        found[str(pid)] = float(p)
    return Recorded(found, skipped)


def join(data: Labelled, recorded: Recorded) -> tuple[Labelled, list[dict[str, float]]]:
    """The labelled posts that have a recorded output, and their scores, in data order.
    ConfigError when none match (the labelled file needs a `post_id` column) or the
    matched posts are all one class."""
    index = [i for i, pid in enumerate(data.ids) if pid in recorded.p]
    if not index:
        raise ConfigError(
            "no labelled post has a recorded output: join is on post_id "
            "(the labelled file needs a post_id column)"
        )
    joined = data.subset(index)
    if len(set(joined.labels)) < 2:
        raise ConfigError("the labelled posts with recorded outputs are all one class")
    return joined, [{RECORDED: recorded.p[pid]} for pid in joined.ids]
