"""Exact binomial confidence bounds (Clopper-Pearson), shared by calibration and the console.

`modpipe calibrate` bounds the error of auto-decided posts from labelled data; the review
console bounds tier 1's production error from audit decisions. scipy is imported when a
bound is asked for, so importing this module costs nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def clopper_pearson_upper(errors: Any, n: Any, confidence: float) -> Any:
    """One-sided upper bound on an error rate from `errors` in `n`, at `confidence`;
    element-wise for arrays, a float for scalars."""
    from scipy.stats import beta

    errors, n = np.asarray(errors), np.asarray(n)
    bounded = (n > 0) & (errors < n)
    upper = np.where(
        bounded, beta.ppf(confidence, errors + 1, np.where(bounded, n - errors, 1)), 1.0
    )
    return float(upper) if upper.ndim == 0 else upper


def clopper_pearson_interval(errors: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided interval on an error rate from `errors` in `n` (each tail (1-confidence)/2).

    The lower bound is one minus the upper bound on the complementary count; with no
    trials the interval is [0, 1].
    """
    tail = 1 - (1 - confidence) / 2
    upper = float(clopper_pearson_upper(errors, n, tail))
    lower = 1.0 - float(clopper_pearson_upper(n - errors, n, tail)) if n > 0 else 0.0
    return lower, upper
