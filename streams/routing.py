"""Routing bands: calibrated scores -> allow, block or escalate, per category."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from modpipe.core.records import Scores
from modpipe.core.settings import RoutingSettings

Route = Literal["allow", "block", "escalate"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a post goes and which categories put it there."""

    route: Route
    categories: list[str]


def route(scores: Scores, bands: RoutingSettings) -> Decision:
    """Block if any category is at or above its block line; escalate if any is in its band;
    else allow. `categories` names the blocked ones, or the borderline ones.

    A score that is not a finite number in [0, 1] escalates its post whatever the others
    say: NaN fails every comparison, so unchecked it would fall through to allow. (The
    classifier seam, classifiers/base.py, turns such a result into an item error first;
    this is the last line.)"""
    blocked: list[str] = []
    borderline: list[str] = []
    unusable = sorted(c for c, p in scores.items() if not (math.isfinite(p) and 0.0 <= p <= 1.0))
    if unusable:
        return Decision("escalate", unusable)
    for category, p in scores.items():
        band = bands.band(category)
        if p >= band.block_above:
            blocked.append(category)
        elif p >= band.allow_below:
            borderline.append(category)
    if blocked:
        return Decision("block", sorted(blocked))
    if borderline:
        return Decision("escalate", sorted(borderline))
    return Decision("allow", [])
