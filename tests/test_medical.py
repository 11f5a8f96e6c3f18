"""mmcourse.medical (notebook 09, §3–§4): clinical metrics and calibration against sklearn, torchmetrics,
slow reference computations and hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from scipy.stats import norm
from sklearn.metrics import confusion_matrix, precision_score, recall_score, roc_auc_score, roc_curve
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from mmcourse import medical as M


def realistic(seed: int, n_pos: int = 390, n_neg: int = 234) -> tuple[np.ndarray, np.ndarray]:
    """Scores like a good pneumonia classifier on Kermany's test set (624 cases, AUC ≈ 0.93)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    z = np.where(y == 1, rng.normal(2.4, 1.3, len(y)), rng.normal(0.0, 1.0, len(y)))
    return y, 1 / (1 + np.exp(-(z - 1.2)))


def with_ties(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores rounded to one decimal, so many scores tie within and across classes."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.35).astype(int)
    s = np.round(np.clip(rng.normal(0.4 + 0.2 * y, 0.2), 0, 1), 1)
    return y, s


def slow_delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """DeLong's AUC and variance from the O(m·n) kernel ψ(x, y) = 1 if x > y, ½ if equal, 0 otherwise."""
    x, yn = s[y == 1], s[y == 0]
    psi = (x[:, None] > yn[None, :]) + 0.5 * (x[:, None] == yn[None, :])  # (m, n)
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)  # structural components of DeLong et al. 1988
    return float(psi.mean()), float(v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(yn))


# ------------------------------------------------------------------ AUC, DeLong, bootstrap

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_delong_auc_equal_sklearn_with_ties(seed):
    y, s = with_ties(seed)
    assert len(np.unique(s)) < 15  # the case really has ties
    want = roc_auc_score(y, s)
    assert M.auc(y, s) == pytest.approx(want, abs=1e-12)
    assert M.delong_auc_ci(y, s)["auc"] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_delong_variance_equals_slow_structural_components(seed):
    y, s = with_ties(seed, n=200 + 50 * seed)
    a, var = slow_delong(y, s)
    got = M.delong_auc_ci(y, s, level=0.9)
    assert got["auc"] == pytest.approx(a, abs=1e-12)
    assert got["se"] ** 2 == pytest.approx(var, rel=1e-10)
    z = norm.ppf(0.95)
    assert got["low"] == pytest.approx(a - z * np.sqrt(var), abs=1e-12)
    assert got["high"] == pytest.approx(a + z * np.sqrt(var), abs=1e-12)


def test_delong_ci_is_clipped_to_unit_interval():
    y = np.r_[np.ones(10, int), np.zeros(10, int)]
    s = np.r_[np.full(10, 0.9), 0.9, np.full(9, 0.1)]  # one tie across classes: AUC 0.995, se > 0
    got = M.delong_auc_ci(y, s)
    assert got["se"] > 0 and got["auc"] + 1.96 * got["se"] > 1
    assert got["high"] == 1.0 and got["low"] < got["auc"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_and_stratified_bootstrap_agree(seed):
    y, s = realistic(seed)
    d, b = M.delong_auc_ci(y, s), M.bootstrap_auc_ci(y, s, n_boot=2000, seed=seed)
    assert b["auc"] == pytest.approx(d["auc"], abs=1e-12)
    assert abs(d["low"] - b["low"]) < 0.01 and abs(d["high"] - b["high"]) < 0.01
    assert b["se"] == pytest.approx(d["se"], rel=0.15)


def test_bootstrap_is_stratified():
    y, _ = realistic(0, n_pos=42, n_neg=114)  # BreastMNIST's test-set class counts
    idx = M.bootstrap_indices(y, n_boot=500, seed=3)
    assert idx.shape == (500, len(y))
    assert (y[idx].sum(axis=1) == 42).all()  # every resample keeps 42 positives and 114 negatives
    assert len({tuple(r) for r in np.sort(idx, axis=1)[:50]}) == 50  # yet the resamples differ
    loose = M.bootstrap_indices(y, n_boot=500, seed=3, stratified=False)
    assert len(np.unique(y[loose].sum(axis=1))) > 5  # the check above could fail


def test_bootstrap_ci_is_the_percentile_interval_of_sklearn_aucs():
    y, s = realistic(4, n_pos=42, n_neg=114)
    for stratified in (True, False):
        idx = M.bootstrap_indices(y, n_boot=200, seed=7, stratified=stratified)
        aucs = [roc_auc_score(y[i], s[i]) for i in idx]
        got = M.bootstrap_auc_ci(y, s, n_boot=200, level=0.9, seed=7, stratified=stratified)
        assert [got["low"], got["high"]] == pytest.approx(np.quantile(aucs, [0.05, 0.95]), abs=1e-12)
        assert got["se"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)


def test_breastmnist_sized_interval_is_wide():
    y, s = realistic(5, n_pos=42, n_neg=114)
    d = M.delong_auc_ci(y, s)
    assert 0.08 < d["high"] - d["low"] < 0.16  # ± 0.04–0.08 at 42 positives, as the docstring says


# ------------------------------------------------------------------ thresholds and operating points

# Hand-made: scores 0.1 … 0.9, labels below (5 positives, 4 negatives). Rule: positive if score >= t.
#   t     0.9  0.8  0.7  0.6  0.5  0.4  0.3  0.2  0.1
#   sens  0.2  0.4  0.6  0.6  0.8  0.8  1.0  1.0  1.0
#   spec  1    1    1    .75  .75  .5   .5   .25  0
#   J     0.2  0.4  0.6  .35  .55  .3   .5   .25  0
HAND_S = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
HAND_Y = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1])


def test_thresholds_on_hand_made_example():
    assert M.youden_threshold(HAND_Y, HAND_S) == 0.7
    assert M.sensitivity_threshold(HAND_Y, HAND_S, 0.95) == 0.3
    assert M.sensitivity_threshold(HAND_Y, HAND_S, 0.8) == 0.5
    assert M.sensitivity_threshold(HAND_Y, HAND_S, 0.6) == 0.7
    op = M.operating_point(HAND_Y, HAND_S, 0.7)  # the score equal to the threshold counts as positive
    assert (op["tp"], op["fp"], op["tn"], op["fn"], op["n"]) == (3, 0, 4, 2, 9)
    assert op["sensitivity"] == 0.6 and op["specificity"] == 1.0 and op["ppv"] == 1.0
    assert op["npv"] == pytest.approx(4 / 6) and op["acc"] == pytest.approx(7 / 9)


def test_youden_ties_go_to_the_highest_threshold():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])  # J = 0.5 at t = 0.4 and at t = 0.2
    assert M.youden_threshold(y, s) == 0.4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sensitivity_threshold_is_the_highest_meeting_the_target(seed):
    y, s = with_ties(seed, n=400)
    for target in (0.8, 0.9, 0.95):
        t = M.sensitivity_threshold(y, s, target)
        assert M.operating_point(y, s, t)["sensitivity"] >= target
        higher = np.unique(s)[np.unique(s) > t]
        if len(higher):
            assert M.operating_point(y, s, higher.min())["sensitivity"] < target


@pytest.mark.parametrize("seed", [0, 1])
def test_youden_maximises_j_over_sklearn_roc_curve(seed):
    y, s = realistic(seed)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    best = thr[1:][np.argmax((tpr - fpr)[1:])]  # continuous scores: no ties in J
    assert M.youden_threshold(y, s) == best
    op = M.operating_point(y, s, best)
    assert op["sensitivity"] + op["specificity"] - 1 == pytest.approx(np.max(tpr - fpr), abs=1e-12)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.61, 0.9])
def test_operating_point_matches_sklearn(t):
    y, s = realistic(3)
    pred = (s >= t).astype(int)
    op = M.operating_point(y, s, t)
    (tn, fp), (fn, tp) = confusion_matrix(y, pred)
    assert (op["tn"], op["fp"], op["fn"], op["tp"], op["n"]) == (tn, fp, fn, tp, len(y))
    assert op["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert op["specificity"] == pytest.approx(recall_score(y, pred, pos_label=0))
    assert op["ppv"] == pytest.approx(precision_score(y, pred))
    assert op["npv"] == pytest.approx(precision_score(y, pred, pos_label=0))
    assert op["acc"] == pytest.approx(np.mean(pred == y))
    np.testing.assert_array_equal(M.confusion(y, pred), confusion_matrix(y, pred))


def test_operating_point_undefined_ratio_is_nan():
    op = M.operating_point(HAND_Y, HAND_S, 2.0)  # nothing predicted positive
    assert np.isnan(op["ppv"]) and op["sensitivity"] == 0.0 and op["specificity"] == 1.0


def test_confusion_layout():
    np.testing.assert_array_equal(M.confusion([0, 0, 1, 1, 1], [0, 1, 0, 1, 1]), [[1, 1], [1, 2]])


# ------------------------------------------------------------------ MedMNIST conventions, labels, baseline

def test_medmnist_acc_uses_strict_half():
    y = np.array([[0], [1], [1], [0]])  # MedMNIST's (N, 1) labels
    ys = np.array([[0.5, 0.5], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1]])
    assert M.medmnist_acc(y, ys) == 0.75  # the exact 0.5 is predicted 0, so case 0 is right; case 2 is wrong
    assert M.medmnist_acc(y[:, 0], ys[:, 1]) == 0.75  # (N,) scores too
    assert M.operating_point(y, ys[:, 1], 0.5)["acc"] == 0.5  # our >= rule counts 0.5 as positive


def test_medmnist_auc_uses_last_column():
    y, s = realistic(2)
    ys = np.stack([1 - s, s], axis=1)
    assert M.medmnist_auc(y, ys) == pytest.approx(roc_auc_score(y, ys[:, -1]), abs=1e-12)
    assert M.medmnist_auc(y, s) == M.medmnist_auc(y, ys)


def test_positive_is_one_and_flip_invariance():
    y = np.array([[0], [1], [1], [0], [1]])
    np.testing.assert_array_equal(M.positive_is_one(y, "breastmnist"), [1, 0, 0, 1, 0])  # malignant → 1
    np.testing.assert_array_equal(M.positive_is_one(y, "pneumoniamnist"), [0, 1, 1, 0, 1])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4], [0.1, 0.9]])
    np.testing.assert_array_equal(M.positive_probability(probs, "breastmnist"), probs[:, 0])
    # AUC does not depend on which class is called positive when labels and scores flip together ...
    yy, pp = M.positive_is_one(y, "breastmnist"), M.positive_probability(probs, "breastmnist")
    assert M.auc(yy, pp) == pytest.approx(M.medmnist_auc(y, probs))
    # ... but sensitivity and specificity swap
    a, b = M.operating_point(y, probs[:, 1], 0.5), M.operating_point(yy, pp, 0.5 + 1e-9)
    assert (a["sensitivity"], a["specificity"]) == (b["specificity"], b["sensitivity"])


def test_majority_baseline():
    got = M.majority_baseline([1, 1, 0, 1, 0], [0, 1, 1, 1])
    assert got == {"label": 1, "acc": 0.75}
    y_test = np.r_[np.ones(390), np.zeros(234)]  # Kermany's test set: "pneumonia for everyone"
    assert M.majority_baseline(np.r_[np.ones(3875), np.zeros(1341)], y_test)["acc"] == 0.625


# ------------------------------------------------------------------ calibration

def random_probs(seed: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Dirichlet class probabilities (strictly inside (0, 1)) and labels drawn from a sharpened version."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.8), size=n)
    sharp = p ** 2 / (p ** 2).sum(axis=1, keepdims=True)  # labels less random than p says: miscalibrated
    labels = np.array([rng.choice(c, p=q) for q in sharp])
    return p, labels


@pytest.mark.parametrize("c", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_label_ece_matches_torchmetrics(seed, c):
    p, labels = random_probs(seed, 700, c)
    assert 0 < p.min() and p.max() < 1
    want = MulticlassCalibrationError(num_classes=c, n_bins=15, norm="l1")(torch.tensor(p), torch.tensor(labels))
    assert M.ece(p, labels, kind="top-label") == pytest.approx(float(want), abs=1e-6)
    if c == 2:  # (N,) P(y=1) gives the same top-label ECE as the (N, 2) probabilities
        assert M.ece(p[:, 1], labels) == pytest.approx(M.ece(p, labels), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_positive_class_ece_matches_torchmetrics(seed):
    p, labels = random_probs(seed, 700, 2)
    want = BinaryCalibrationError(n_bins=15, norm="l1")(torch.tensor(p[:, 1]), torch.tensor(labels))
    assert M.ece(p[:, 1], labels, kind="positive") == pytest.approx(float(want), abs=1e-9)
    assert M.ece(p, labels, kind="positive") == pytest.approx(float(want), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_of_a_calibrated_model_grows_with_the_number_of_bins(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, 700)
    labels = (rng.uniform(size=700) < p).astype(int)  # perfectly calibrated by construction
    e5, e15, e60 = (M.ece(p, labels, n_bins=b, kind="positive") for b in (5, 15, 60))
    assert 0.02 < e15 < 0.1  # not 0: sampling noise inside each bin
    assert e5 < e15 < e60 and e60 > 1.5 * e5


def test_ece_is_weighted_by_bin_size():
    # 90 cases at P(y=1) = 0.1 with 9 positives (calibrated), 10 cases at 0.9 with none (gap 0.9)
    p = np.r_[np.full(90, 0.1), np.full(10, 0.9)]
    labels = np.r_[np.ones(9, int), np.zeros(81, int), np.zeros(10, int)]
    got = M.ece(p, labels, kind="positive")
    assert got == pytest.approx(0.1 * 0.9)  # Σ |B|/N · gap = 0.9 · 0 + 0.1 · 0.9
    bins = M.reliability_bins(p, labels, kind="positive")
    full = bins["count"] > 0
    unweighted = np.mean(np.abs(bins["accuracy"] - bins["confidence"])[full])
    assert unweighted == pytest.approx(0.45) and abs(got - unweighted) > 0.3  # the wrong ECE is caught


def test_reliability_bins_hand_made():
    p = np.array([0.05, 0.15, 0.25, 0.35, 0.95])
    labels = np.array([0, 1, 0, 1, 1])
    bins = M.reliability_bins(p, labels, n_bins=5, kind="positive")  # edges 0, .2, .4, .6, .8, 1
    np.testing.assert_allclose(bins["edges"], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_array_equal(bins["count"], [2, 2, 0, 0, 1])
    np.testing.assert_allclose(bins["confidence"][[0, 1, 4]], [0.1, 0.3, 0.95])
    np.testing.assert_allclose(bins["accuracy"][[0, 1, 4]], [0.5, 0.5, 1.0])
    assert np.isnan(bins["accuracy"][2])
    assert bins["ece"] == pytest.approx(0.4 * 0.4 + 0.4 * 0.2 + 0.2 * 0.05)
    assert M.reliability_bins(np.array([1.0]), np.array([1]), n_bins=5)["count"][-1] == 1  # 1.0: last bin


# ------------------------------------------------------------------ temperature scaling

def sample_labels(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if probs.ndim == 1:
        return torch.bernoulli(probs, generator=gen).long()
    return torch.multinomial(probs, 1, generator=gen)[:, 0]


@pytest.mark.parametrize("c", [3, None])
def test_fit_temperature_recovers_known_temperature(c):
    gen = torch.Generator().manual_seed(0)
    t_true = 2.5
    z = 3 * torch.randn(20000, c or 1, generator=gen, dtype=torch.float64)
    z = z if c else z[:, 0]  # (N,) binary logits
    y = sample_labels(torch.as_tensor(M.apply_temperature(z, t_true)), gen)
    assert M.fit_temperature(z, y) == pytest.approx(t_true, rel=0.1)


def test_temperature_scaling_fixes_an_over_confident_model():
    gen = torch.Generator().manual_seed(1)
    z = 1.5 * torch.randn(6000, 3, generator=gen, dtype=torch.float64)  # calibrated logits
    y = sample_labels(torch.softmax(z, dim=1), gen)
    over = 3 * z  # the same ranking, three times too confident
    val, test = slice(0, 3000), slice(3000, None)
    t = M.fit_temperature(over[val], y[val])
    assert t == pytest.approx(3.0, rel=0.15)
    for part in (val, test):
        before, after = torch.softmax(over[part], dim=1).numpy(), M.apply_temperature(over[part], t)
        assert M.nll(after, y[part]) < M.nll(before, y[part]) - 0.1
        assert M.ece(after, y[part]) < M.ece(before, y[part]) / 2
        np.testing.assert_array_equal(after.argmax(1), before.argmax(1))  # accuracy is unchanged
    want_nll = torch.nn.functional.cross_entropy(over[test] / t, y[test]).item()
    assert M.nll(M.apply_temperature(over[test], t), y[test]) == pytest.approx(want_nll, rel=1e-9)


def test_apply_temperature_one_is_softmax_and_sigmoid():
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    np.testing.assert_allclose(M.apply_temperature(z, 1.0), torch.softmax(z, 1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(M.apply_temperature(z[:, 0], 2.0), torch.sigmoid(z[:, 0] / 2).numpy(), rtol=1e-12)


# ------------------------------------------------------------------ plots

def test_plot_roc_draws_sklearn_curve_and_operating_points():
    y, s = realistic(0)
    ax = Figure().add_subplot()
    t = M.youden_threshold(y, s)
    M.plot_roc(ax, y, s, "model", points={"Youden": t})
    fpr, tpr, _ = roc_curve(y, s)
    curve, point = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(curve.get_xdata(), fpr)
    np.testing.assert_allclose(curve.get_ydata(), tpr)
    op = M.operating_point(y, s, t)
    assert point.get_xdata()[0] == pytest.approx(1 - op["specificity"])
    assert point.get_ydata()[0] == pytest.approx(op["sensitivity"])
    texts = [x.get_text() for x in ax.get_legend().get_texts()]
    assert f"AUC = {roc_auc_score(y, s):.3f}" in texts[0] and texts[1].startswith("Youden")
    assert "sensitivity" in ax.get_ylabel() and "specificity" in ax.get_xlabel()


def test_plot_reliability_draws_bins():
    p, labels = random_probs(0, 500, 2)
    bins = M.reliability_bins(p, labels)
    ax = Figure().add_subplot()
    M.plot_reliability(ax, bins, label="before")
    n_full = int((bins["count"] > 0).sum())
    heights = [r.get_height() for r in ax.patches]
    np.testing.assert_allclose(heights[:n_full], bins["accuracy"][bins["count"] > 0])
    np.testing.assert_allclose(heights[n_full:], bins["count"] / 500)
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("before") and f"ECE = {bins['ece']:.3f}" in t for t in texts)
    assert ax.get_xlabel() and ax.get_ylabel()


# ------------------------------------------------------------------ clear errors

def test_clear_errors():
    y, s = realistic(0, 20, 20)
    with pytest.raises(ValueError, match="only class 1"):
        M.auc(np.ones(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="only class 0"):
        M.delong_auc_ci(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="only class"):
        M.youden_threshold(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="NaN"):
        M.auc(y, np.r_[s[:-1], np.nan])
    with pytest.raises(ValueError, match="length mismatch"):
        M.bootstrap_auc_ci(y, s[:-1])
    with pytest.raises(ValueError, match="only 0 and 1.*positive_is_one"):
        M.auc(np.r_[y[:-1], 2], s)
    with pytest.raises(ValueError, match="level"):
        M.delong_auc_ci(y, s, level=95)
    with pytest.raises(ValueError, match="min_sensitivity"):
        M.sensitivity_threshold(y, s, 95)
    with pytest.raises(ValueError, match=r"\[0, 1\].*softmax"):
        M.ece(np.c_[-s, 1 + s], y)
    with pytest.raises(ValueError, match="sum to 1"):
        M.ece(np.c_[s, s], y)
    with pytest.raises(ValueError, match="length mismatch"):
        M.ece(s, y[:-1])
    with pytest.raises(ValueError, match="unknown kind"):
        M.ece(s, y, kind="class-wise")
    with pytest.raises(ValueError, match="binary task"):
        M.ece(np.full((4, 3), 1 / 3), [0, 1, 2, 0], kind="positive")
    with pytest.raises(ValueError, match="unknown dataset flag"):
        M.positive_is_one(y, "chestmnist")
    with pytest.raises(ValueError, match="labels must be integers"):
        M.fit_temperature(torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="temperature must be positive"):
        M.apply_temperature(torch.zeros(4, 3), 0.0)
