"""metrics.wilson_interval against statsmodels' reference formula values and its defining properties."""
from __future__ import annotations

import pytest
from scipy import stats

from mmcourse import metrics


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (212, 300), (1, 1000), (500, 1000)])
def test_wilson_inverts_the_score_test(k, n):
    """The Wilson interval is the set of p the two-sided score test at 5 % does not reject."""
    low, high = metrics.wilson_interval(k, n)
    z = stats.norm.ppf(0.975)
    for p in (low, high):
        if 1e-9 < p < 1 - 1e-9:
            assert abs(k / n - p) / ((p * (1 - p) / n) ** 0.5) == pytest.approx(z, rel=1e-6)
    assert 0 <= low <= k / n <= high <= 1


def test_known_value_and_text():
    low, high = metrics.wilson_interval(8, 10)  # Brown, Cai & DasGupta (2001): 0.490–0.943
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert metrics.accuracy_with_interval(8, 10) == "0.800 (n = 10, 95 % CI 0.490–0.943)"
    with pytest.raises(ValueError):
        metrics.wilson_interval(11, 10)
