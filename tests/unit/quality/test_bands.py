import numpy as np
import pytest
from scipy.stats import binom

from modpipe.quality.bands import (
    band_table,
    best_for_error,
    best_for_escalation,
    clopper_pearson_upper,
)


@pytest.mark.parametrize(
    ("k", "n", "c"), [(0, 50, 0.95), (3, 200, 0.95), (10, 1000, 0.99), (40, 120, 0.9)]
)
def test_clopper_pearson_upper_matches_the_binomial_tail(k: int, n: int, c: float) -> None:
    upper = clopper_pearson_upper(k, n, c)
    # The one-sided upper bound u solves P(X <= k | n, u) = 1 - c.
    assert binom.cdf(k, n, upper) == pytest.approx(1 - c, abs=1e-9)
    assert upper > k / n


def test_clopper_pearson_zero_errors_closed_form() -> None:
    assert clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (5, 5), (200, 200)])
def test_clopper_pearson_all_errors_is_a_bound_of_one(k: int, n: int) -> None:
    # Every auto-decided post wrong: the bound is 1, never NaN (beta(k + 1, 0) is undefined).
    assert clopper_pearson_upper(k, n, 0.95) == 1.0


def test_clopper_pearson_is_element_wise_and_total_over_the_band_grid() -> None:
    errors = np.array([0, 3, 5, 0])
    n = np.array([10, 5, 5, 0])
    upper = clopper_pearson_upper(errors, n, 0.9)
    assert not np.isnan(upper).any()
    assert upper[0] == pytest.approx(1 - 0.1 ** (1 / 10))
    assert upper[1] == pytest.approx(clopper_pearson_upper(3, 5, 0.9))
    assert list(upper[2:]) == [1.0, 1.0]  # k = n, and nothing auto-decided


def synthetic(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    return p, y


def test_band_table_counts_match_a_direct_count() -> None:
    p, y = synthetic(500)
    t = band_table(p, y)
    last = t.allow.shape[0] - 1
    for i, j in [(10, 200), (50, 60), (0, last), (120, 120)]:
        a, b = t.allow[i, j], t.block[i, j]
        esc = ((p >= a) & (p < b)).sum()
        err = ((p < a) & (y == 1)).sum() + ((p >= b) & (y == 0)).sum()
        assert (t.escalated[i, j], t.errors[i, j]) == (esc, err)


def test_target_escalation_is_met_and_more_escalation_means_fewer_errors() -> None:
    p, y = synthetic()
    t = band_table(p, y)
    errors = []
    for target in (0.05, 0.2, 0.4):
        a, b = best_for_escalation(t, target)
        esc = ((p >= a) & (p < b)).mean()
        assert esc <= target
        assert esc >= target - 0.01
        errors.append(((p < a) & (y == 1)).sum() + ((p >= b) & (y == 0)).sum())
    assert errors[0] > errors[1] > errors[2]


def test_max_error_bound_holds_on_the_calibration_data() -> None:
    p, y = synthetic()
    t = band_table(p, y)
    a, b = best_for_error(t, max_error=0.05, confidence=0.95)
    auto = (p < a) | (p >= b)
    k = (((p < a) & (y == 1)) | ((p >= b) & (y == 0))).sum()
    assert clopper_pearson_upper(int(k), int(auto.sum()), 0.95) <= 0.05
