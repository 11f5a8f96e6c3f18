"""metrics: the Wilson interval against statsmodels' reference formula values; the group table against fairlearn."""
from __future__ import annotations

import numpy as np
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


# ---------------------------------------------------------------- accuracy per group (notebook 12)

def test_accuracy_by_group_counts_each_group_with_its_wilson_interval():
    correct = [1, 1, 0, 1, 0, 0, 1, 1, 1, 1]
    groups = ["a", "a", "a", "b", "b", "b", "c", "c", "c", "c"]
    rows = metrics.accuracy_by_group(correct, groups)
    assert [(r["group"], r["n"], r["correct"]) for r in rows] == [("b", 3, 1), ("a", 3, 2), ("c", 4, 4)]
    assert rows[0]["accuracy"] == pytest.approx(1 / 3)
    assert (rows[2]["low"], rows[2]["high"]) == metrics.wilson_interval(4, 4)
    gap = metrics.largest_gap(rows)
    assert gap["best"] == "c" and gap["worst"] == "b" and gap["gap"] == pytest.approx(2 / 3)
    assert gap["intervals_overlap"]  # 1/3 of 3 vs 4/4: too few examples to tell
    many = metrics.accuracy_by_group([1] * 200 + [1] * 20 + [0] * 180, ["x"] * 200 + ["y"] * 200)
    assert not metrics.largest_gap(many)["intervals_overlap"]  # 1.00 vs 0.10 of 200 each: a real gap
    with pytest.raises(ValueError, match="one group per example"):
        metrics.accuracy_by_group([1, 0], ["a"])
    with pytest.raises(ValueError, match="two groups"):
        metrics.largest_gap(rows[:1])


def test_accuracy_by_group_and_largest_gap_agree_with_fairlearns_metricframe():
    """Notebook 12's group table is written by hand; fairlearn's MetricFrame must give the same numbers."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(3)
    groups = rng.choice(["jackson", "nicolas", "theo", "yweweler", "george"], size=500)
    y_true = rng.integers(0, 10, size=500)
    skill = {"jackson": 0.9, "nicolas": 0.8, "theo": 0.7, "yweweler": 0.6, "george": 0.5}
    y_pred = np.where(rng.random(500) < np.vectorize(skill.get)(groups), y_true, (y_true + 1) % 10)
    frame = MetricFrame(metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    ours = metrics.accuracy_by_group(y_pred == y_true, groups)
    assert {r["group"]: r["accuracy"] for r in ours} == pytest.approx(frame.by_group.to_dict())
    assert metrics.largest_gap(ours)["gap"] == pytest.approx(frame.difference(method="between_groups"))
    assert metrics.largest_gap(ours)["worst"] == frame.by_group.idxmin()
    assert metrics.largest_gap(ours)["best"] == frame.by_group.idxmax()
