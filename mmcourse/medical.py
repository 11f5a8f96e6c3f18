"""Clinical metrics and calibration for binary medical classifiers (notebook 09, §3–§4).

Conventions used by every function here:

- labels ``y`` are 0/1 with **1 = the clinically positive class** (pneumonia, malignant). MedMNIST
  does not always follow this: in BreastMNIST 0 = malignant, so call :func:`positive_is_one` first.
- ``score`` is the probability (or any monotone score, e.g. a logit) of class 1.
- **Decision rule: predict positive when ``score >= threshold``.** Thresholds returned here are
  observed scores, so a validation case whose score equals the threshold counts as positive.
  The one exception is :func:`medmnist_acc`, which copies MedMNIST's strict ``> 0.5``.
- Thresholds (:func:`youden_threshold`, :func:`sensitivity_threshold`) and the temperature
  (:func:`fit_temperature`) are chosen on the VALIDATION split and then applied, unchanged, to
  test. A threshold chosen on test reports the best case, not what a deployed model would do.

What a learner should take away (notebook 09):

- AUC measures ranking only: it is the same whichever class you call positive, as long as the
  score follows the label (flip both), and it ignores calibration. Sensitivity, specificity, PPV
  and NPV swap meaning when you flip, which is why the positive class must be the disease.
- An AUC from 42 malignant cases is uncertain: the standard error of AUC is dominated by the
  smaller class, and with m = 42 positives and AUC ≈ 0.9 it is 0.02–0.035, so the 95 % interval
  is roughly ±0.04–0.07. Two models 0.02 apart on BreastMNIST's test set are not distinguishable.
- PPV and NPV depend on prevalence (Kermany's test set is 62.5 % pneumonia, far above a clinic's).
- Accuracy must be compared with the majority baseline: "pneumonia for everyone" scores 0.625 on
  the Kermany test set.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm, rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler

# The label value of the clinically positive class in each dataset's own convention
# (MedMNIST info.py: breastmnist labels = ["malignant", "normal, benign"], pneumoniamnist =
# ["normal", "pneumonia"]; our Kermany loader: CLASSES = ["NORMAL", "PNEUMONIA"]).
POSITIVE_LABEL = {"breastmnist": 0, "pneumoniamnist": 1, "chest_xray": 1}

KINDS = ("top-label", "positive")


# ------------------------------------------------------------------ input checks

def _np(x: Any) -> np.ndarray:
    """A numpy array from a list, numpy array or (CPU or GPU) torch tensor."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _labels01(y: Any, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D int array of 0/1; (N, 1) columns, as MedMNIST stores labels, are flattened."""
    y = _np(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of 0/1 labels, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to evaluate")
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"{name} must contain only 0 and 1 (1 = the clinically positive class), found "
                         f"{bad.tolist()}; for MedMNIST labels use positive_is_one(y, flag)")
    return y.astype(np.int64)


def _binary(y: Any, score: Any, both_classes: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Checked (labels, scores): same length, finite scores, and (by default) both classes present."""
    y = _labels01(y)
    s = _np(score).astype(np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise ValueError(f"score must be 1-D (the probability of class 1), got shape {s.shape}; "
                         "for (N, 2) probabilities pass probs[:, 1]")
    if len(s) != len(y):
        raise ValueError(f"length mismatch: {len(y)} labels but {len(s)} scores; y[i] and score[i] must "
                         "describe the same case")
    if not np.isfinite(s).all():
        raise ValueError(f"score contains {int((~np.isfinite(s)).sum())} NaN or infinite values: "
                         "check the model output (a diverged model, or a missing prediction)")
    if both_classes:
        counts = np.bincount(y, minlength=2)
        if counts.min() == 0:
            raise ValueError(f"y contains only class {int(counts.argmax())} ({len(y)} cases): AUC, "
                             "sensitivity and specificity need both positives and negatives")
    return y, s


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    return float(norm.ppf(0.5 + level / 2))


# ------------------------------------------------------------------ labels and baselines (§1, §3)

def positive_is_one(y: Any, flag: str) -> np.ndarray:
    """Labels recoded so that the clinically positive class is 1 (notebook 09, §1).

    ``flag`` is a key of :data:`POSITIVE_LABEL`. BreastMNIST stores 0 = malignant and
    1 = normal/benign, so its labels are flipped (malignant → 1); PneumoniaMNIST and the Kermany
    chest X-rays (``"chest_xray"``) already have pneumonia = 1 and are returned unchanged.
    Flip the model's scores the same way (:func:`positive_probability`), or sensitivity and
    specificity swap meaning.
    """
    if flag not in POSITIVE_LABEL:
        raise ValueError(f"unknown dataset flag {flag!r}; known: {sorted(POSITIVE_LABEL)}")
    return (_labels01(y) == POSITIVE_LABEL[flag]).astype(np.int64)


def positive_probability(probs: Any, flag: str) -> np.ndarray:
    """P(clinically positive class) from (N, 2) class probabilities in the dataset's own label order.

    BreastMNIST: ``probs[:, 0]`` (malignant); pneumonia datasets: ``probs[:, 1]`` (notebook 09, §1).
    """
    if flag not in POSITIVE_LABEL:
        raise ValueError(f"unknown dataset flag {flag!r}; known: {sorted(POSITIVE_LABEL)}")
    p = _np(probs).astype(np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"probs must have shape (N, 2), got {p.shape}")
    return p[:, POSITIVE_LABEL[flag]]


def majority_baseline(y_train: Any, y_eval: Any) -> dict:
    """Accuracy of always predicting the most common TRAINING label (notebook 09, §3).

    ``{"label", "acc"}``. Any accuracy a model reports must beat this; on the Kermany test set
    "pneumonia for everyone" already scores 390/624 = 0.625. Ties go to the smaller label.
    Works for multi-class integer labels too.
    """
    tr, ev = _np(y_train).ravel().astype(np.int64), _np(y_eval).ravel().astype(np.int64)
    if tr.size == 0 or ev.size == 0:
        raise ValueError("y_train and y_eval must both be non-empty")
    if tr.min() < 0 or ev.min() < 0:
        raise ValueError("labels must be non-negative integers")
    label = int(np.bincount(tr).argmax())
    return {"label": label, "acc": float(np.mean(ev == label))}


# ------------------------------------------------------------------ AUC and its uncertainty (§3)

def auc(y: Any, score: Any) -> float:
    """Area under the ROC curve, sklearn's ``roc_auc_score`` (notebook 09, §3).

    AUC = P(score of a random positive > score of a random negative) + ½ P(tie): a ranking
    measure, blind to calibration and to any threshold.
    """
    y, s = _binary(y, score)
    return float(roc_auc_score(y, s))


def _midrank_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values (V10 for each positive, V01 for each negative) via midranks.

    Sun & Xu 2014: with Tz the midranks in the pooled sample and Tx, Ty the midranks within
    positives and within negatives, V10_i = (Tz_i − Tx_i) / n and V01_j = 1 − (Tz_j − Ty_j) / m.
    """
    x, yneg = s[y == 1], s[y == 0]
    m, n = len(x), len(yneg)
    tz = rankdata(np.concatenate([x, yneg]))  # 'average' method = midranks: ties share their mean rank
    v10 = (tz[:m] - rankdata(x)) / n  # fraction of negatives below positive i (ties count ½)
    v01 = 1.0 - (tz[m:] - rankdata(yneg)) / m  # fraction of positives above negative j (ties count ½)
    return v10, v01


def delong_auc_ci(y: Any, score: Any, level: float = 0.95) -> dict:
    """AUC with DeLong's standard error and a normal confidence interval (notebook 09, §3).

    ``{"auc", "se", "low", "high"}``. DeLong, DeLong & Clarke-Pearson (1988): each positive i gets a
    placement value V10_i (the fraction of negatives it outranks, ties ½) and each negative j a
    V01_j (the fraction of positives that outrank it); AUC is the mean of either, and
    Var(AUC) ≈ S10 / m + S01 / n with S10, S01 the sample variances (ddof = 1) of V10 and V01 and
    m, n the numbers of positives and negatives. Computed with midranks in O(N log N) (Sun & Xu 2014).

    The interval is AUC ± z·se **on the AUC scale, clipped to [0, 1]**: simple and the usual
    report, but symmetric, so near AUC = 1 the clipped upper end is optimistic about the certainty
    (a logit-scale interval would stay inside (0, 1) and be asymmetric; we do not use it).
    The variance is dominated by the smaller class: with 42 malignant cases in BreastMNIST's test
    set and AUC ≈ 0.9, se ≈ 0.02–0.035 and the interval is about ±0.04–0.07; compare it with
    :func:`bootstrap_auc_ci`.
    """
    y, s = _binary(y, score)
    z = _z(level)
    v10, v01 = _midrank_components(y, s)
    a = float(v10.mean())
    se = math.sqrt(np.var(v10, ddof=1) / len(v10) + np.var(v01, ddof=1) / len(v01)) \
        if min(len(v10), len(v01)) > 1 else float("nan")
    return {"auc": a, "se": se, "low": max(0.0, a - z * se), "high": min(1.0, a + z * se)}


def bootstrap_indices(y: Any, n_boot: int = 2000, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """(n_boot, N) row indices of bootstrap resamples of the cases (notebook 09, §3).

    ``stratified=True`` resamples the positives and the negatives separately, with replacement, so
    every resample keeps the original class counts (and so the prevalence): the interval then
    reflects the uncertainty of the scores, not of the case mix, and no resample lacks a class.
    Row b lists the positives first, then the negatives.
    """
    y = _labels01(y)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, len(y), size=(n_boot, len(y)))
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    return np.concatenate([pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))],
                           neg[rng.integers(0, len(neg), size=(n_boot, len(neg)))]], axis=1)


def _auc_rows(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUC of each row of (B, N) labels and scores by the rank-sum (Mann–Whitney) formula; NaN if one class."""
    m = y.sum(axis=1).astype(np.float64)
    n = y.shape[1] - m
    r = rankdata(s, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * y).sum(axis=1) - m * (m + 1) / 2) / (m * n)


def bootstrap_auc_ci(y: Any, score: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                     stratified: bool = True) -> dict:
    """AUC with a percentile bootstrap interval (notebook 09, §3).

    ``{"auc", "low", "high", "se"}``: ``auc`` is the AUC of the data itself, ``low``/``high`` the
    (1 − level)/2 and (1 + level)/2 quantiles (numpy's linear interpolation) of the AUCs of
    ``n_boot`` resamples drawn by :func:`bootstrap_indices` (stratified by default), ``se`` their
    standard deviation. Unstratified resamples that happen to contain one class only are dropped.
    The percentile interval can be asymmetric (it follows the skew of the AUC near 1), unlike
    :func:`delong_auc_ci`; on a few hundred cases the two agree to about 0.01.
    """
    y, s = _binary(y, score)
    _z(level)  # validates level
    idx = bootstrap_indices(y, n_boot, seed, stratified)
    chunks = np.array_split(idx, max(1, len(idx) // 256))  # bounded memory for large N
    aucs = np.concatenate([_auc_rows(y[c], s[c]) for c in chunks])
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        raise ValueError("every bootstrap resample had one class only: use stratified=True")
    low, high = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return {"auc": float(roc_auc_score(y, s)), "low": float(low), "high": float(high),
            "se": float(aucs.std(ddof=1)) if aucs.size > 1 else float("nan")}


# ------------------------------------------------------------------ thresholds and operating points (§3)

def roc_counts(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tp, fp) for every distinct score, highest first (notebook 09, §3).

    tp[k] and fp[k] count the cases with ``score >= thresholds[k]`` among the positives and the
    negatives: exactly the candidate thresholds and counts behind sklearn's ``roc_curve`` (without
    its extra ``inf`` threshold), in integers so that ties between thresholds are exact.
    """
    y, s = _binary(y, score)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    return s[last], tp, (last + 1) - tp


def youden_threshold(y: Any, score: Any) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity − 1 (notebook 09, §3).

    Candidates are the distinct scores (rule: positive when ``score >= threshold``); ties in J go
    to the highest threshold (the most specific). Choose it on VALIDATION, apply it to test.
    """
    t, tp, fp = roc_counts(y, score)
    npos, nneg = tp[-1], fp[-1]
    j = tp * nneg - fp * npos  # J · npos · nneg, exact in integers
    return float(t[int(np.argmax(j))])


def sensitivity_threshold(y: Any, score: Any, min_sensitivity: float = 0.95) -> float:
    """The HIGHEST threshold whose sensitivity on (y, score) is still ≥ ``min_sensitivity`` (notebook 09, §3).

    Sensitivity can only grow as the threshold falls, so the highest threshold meeting the target
    gives the best specificity under the constraint (a screening operating point: miss at most
    5 % of the disease). The next higher distinct score misses the target. Rule: positive when
    ``score >= threshold``. Choose it on VALIDATION: on test, sensitivity will scatter around the
    target (with 42 positives, one missed case moves it by 0.024), not be guaranteed.
    """
    if not 0 < min_sensitivity <= 1:
        raise ValueError(f"min_sensitivity must be in (0, 1], got {min_sensitivity}")
    t, tp, _ = roc_counts(y, score)
    ok = tp / tp[-1] >= min_sensitivity
    return float(t[int(np.argmax(ok))])  # ok is monotone False…True; the last entry (sens 1) is always True


def confusion(y: Any, pred: Any) -> np.ndarray:
    """The 2×2 confusion matrix ``[[tn, fp], [fn, tp]]`` (sklearn's layout: rows = truth, columns = prediction)."""
    y = _labels01(y)
    p = _labels01(pred, "pred")
    if len(p) != len(y):
        raise ValueError(f"length mismatch: {len(y)} labels but {len(p)} predictions")
    return confusion_matrix(y, p, labels=[0, 1])


def _ratio(a: int, b: int) -> float:
    return a / b if b else float("nan")


def operating_point(y: Any, score: Any, threshold: float) -> dict:
    """Metrics at one threshold, predicting positive when ``score >= threshold`` (notebook 09, §3).

    ``{"threshold", "acc", "sensitivity", "specificity", "ppv", "npv", "tp", "fp", "tn", "fn", "n"}``.
    sensitivity = tp/(tp+fn) (recall of the disease), specificity = tn/(tn+fp), PPV = tp/(tp+fp),
    NPV = tn/(tn+fn); a ratio with an empty denominator is NaN. One class only is allowed here
    (e.g. an all-positive subgroup); its undefined rates are NaN.
    """
    y, s = _binary(y, score, both_classes=False)
    (tn, fp), (fn, tp) = confusion(y, (s >= threshold).astype(np.int64)).tolist()
    n = tn + fp + fn + tp
    return {"threshold": float(threshold), "acc": (tp + tn) / n, "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": n}


# ------------------------------------------------------------------ MedMNIST's Evaluator conventions (§3)

def _last_column(y_score: Any) -> np.ndarray:
    s = _np(y_score).astype(np.float64)
    if s.ndim == 2:
        return s[:, -1]
    if s.ndim == 1:
        return s
    raise ValueError(f"y_score must be (N, 2) class probabilities or (N,) P(class 1), got shape {s.shape}")


def medmnist_acc(y: Any, y_score: Any) -> float:
    """ACC as MedMNIST's ``getACC`` computes it for binary tasks (notebook 09, §3).

    Prediction = ``y_score[:, -1] > 0.5`` (STRICT: a score of exactly 0.5 is class 0), accuracy
    against ``y`` in the dataset's own labels (MedMNIST's numbers use BreastMNIST's 0 = malignant;
    accuracy does not change when both labels and scores are flipped, except exactly at 0.5).
    ``y_score`` is (N, 2) probabilities or (N,) P(class 1); ``y`` may be MedMNIST's (N, 1).
    """
    y, s = _binary(y, _last_column(y_score), both_classes=False)
    return float(np.mean(y == (s > 0.5)))


def medmnist_auc(y: Any, y_score: Any) -> float:
    """AUC as MedMNIST's ``getAUC`` for binary tasks: ``roc_auc_score(y, y_score[:, -1])`` (notebook 09, §3).

    ``y`` in the dataset's own labels, ``y_score`` (N, 2) probabilities or (N,) P(class 1).
    """
    return auc(y, _last_column(y_score))


# ------------------------------------------------------------------ calibration (§4)

def _calibration_inputs(probs: Any, labels: Any, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, "correct") per case for ``kind``; checks shapes, ranges and labels."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use 'top-label' (max probability vs. correct) or "
                         "'positive' (P(y=1) vs. the fraction of positives)")
    p = _np(probs).astype(np.float64)
    lab = _np(labels)
    if lab.ndim == 2 and lab.shape[1] == 1:
        lab = lab[:, 0]
    if p.ndim not in (1, 2) or lab.ndim != 1:
        raise ValueError(f"probs must be (N, C) or (N,) and labels (N,), got {p.shape} and {lab.shape}")
    if len(p) != len(lab):
        raise ValueError(f"length mismatch: {len(p)} probability rows but {len(lab)} labels")
    if len(p) == 0:
        raise ValueError("no cases: probs and labels are empty")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be probabilities in [0, 1]; these look like logits: apply softmax "
                         "(or sigmoid for one column) first")
    if p.ndim == 2 and not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("each row of probs must sum to 1 (class probabilities); apply softmax first")
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)  # P(y=1) → (N, 2) class probabilities
    c = p.shape[1]
    if not np.isin(lab, np.arange(c)).all():
        raise ValueError(f"labels must be integers in 0..{c - 1} for {c} probability columns")
    lab = lab.astype(np.int64)
    if kind == "positive":
        if c != 2:
            raise ValueError(f"kind='positive' needs a binary task ((N,) or (N, 2) probs), got {c} classes")
        return p[:, 1], lab.astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == lab).astype(np.float64)


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15, kind: str = "top-label") -> dict:
    """Per-bin confidence, accuracy and count for a reliability diagram and the ECE (notebook 09, §4).

    Returns ``{"edges" (n_bins+1,), "confidence", "accuracy", "count" (n_bins,), "ece"}``; empty bins
    have NaN confidence and accuracy. Bins are equal-width over [0, 1] and left-closed,
    [e_k, e_k+1), as torchmetrics' ``torch.bucketize(..., right=True)``, except that a confidence of
    exactly 1.0 goes into the last bin (torchmetrics gives it a bin of its own). Edges are float64
    ``np.linspace``; torchmetrics uses ``torch.linspace`` in the input's dtype, so a probability
    equal to an edge up to rounding may land in the neighbouring bin there. Inside the bins the
    two agree exactly.

    - ``kind="top-label"``: confidence = the largest class probability, accuracy = the fraction of
      cases whose argmax is the label. With 2 classes every confidence is ≥ 0.5, so only the upper
      half of the bins is used.
    - ``kind="positive"``: confidence = P(y=1), accuracy = the fraction of positives in the bin
      (the "observed frequency" of a calibration plot).
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    conf, correct = _calibration_inputs(probs, labels, kind)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    b = np.minimum(np.searchsorted(edges, conf, side="right") - 1, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(b, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(b, weights=correct, minlength=n_bins) / count
    full = count > 0
    ece_value = float(np.sum(count[full] / len(conf) * np.abs(accuracy[full] - confidence[full])))
    return {"edges": edges, "confidence": confidence, "accuracy": accuracy, "count": count, "ece": ece_value}


def ece(probs: Any, labels: Any, n_bins: int = 15, kind: str = "top-label") -> float:
    """Expected calibration error with equal-width bins (notebook 09, §4; Guo et al. 2017).

    ECE = Σ_b (|B_b| / N) · |acc_b − conf_b|: the gap between accuracy and mean confidence in each
    bin, WEIGHTED by the bin's share of the cases (an unweighted mean over bins lets a bin of 3
    cases count as much as one of 300). ``probs`` is (N, C) class probabilities or (N,) P(y=1);
    ``kind`` is ``"top-label"`` (as torchmetrics ``MulticlassCalibrationError(num_classes=C,
    n_bins=15, norm="l1")``) or ``"positive"`` (as ``BinaryCalibrationError(n_bins=15, norm="l1")``);
    see :func:`reliability_bins` for the bins.

    ECE depends on the binning: with many bins each holds few cases and the sampling noise of
    acc_b inflates |acc_b − conf_b|: even a perfectly calibrated model gets ECE > 0, growing like
    √(n_bins / N) (about 0.05 with 15 bins and 700 cases). With few bins, over- and under-confident
    cases cancel inside a bin; when the edges of the coarse bins are also edges of the fine ones
    (5 and 15 bins), the coarse ECE can never be larger. Quote the
    number of bins and N with every ECE, and do not compare ECEs computed with different bins.
    """
    return reliability_bins(probs, labels, n_bins, kind)["ece"]


def plot_reliability(ax: Any, bins: dict, label: str | None = None) -> Any:
    """Draw a reliability diagram from :func:`reliability_bins` on a matplotlib ``ax`` (notebook 09, §4).

    Bars: accuracy per bin (bars below the diagonal = over-confident); dashed diagonal: perfect
    calibration; light grey bars at the bottom: the share of cases in each bin, so you can see
    which bins the ECE weighs. The legend gives the ECE.
    """
    edges, count = bins["edges"], bins["count"]
    width = np.diff(edges)
    full = count > 0
    name = f"{label}: " if label else ""
    ax.bar(edges[:-1][full], bins["accuracy"][full], width=width[full], align="edge", alpha=0.7,
           edgecolor="black", label=f"{name}accuracy (ECE = {bins['ece']:.3f})")
    ax.bar(edges[:-1], count / max(1, count.sum()), width=width, align="edge", color="lightgrey",
           alpha=0.8, edgecolor="grey", label="share of cases")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (mean predicted probability in the bin)")
    ax.set_ylabel("accuracy (observed frequency in the bin)")
    ax.legend(loc="upper left")
    return ax


def plot_roc(ax: Any, y: Any, score: Any, label: str, points: dict[str, float] | None = None) -> Any:
    """ROC curve (sklearn ``roc_curve``) with the AUC in the legend and operating points marked (notebook 09, §3).

    ``points`` maps a name to a threshold (chosen on validation); each is drawn at
    (1 − specificity, sensitivity) of ``(y, score)`` with the rule ``score >= threshold``.
    """
    y, s = _binary(y, score)
    fpr, tpr, _ = roc_curve(y, s)
    ax.plot(fpr, tpr, lw=2, label=f"{label} (AUC = {roc_auc_score(y, s):.3f})")
    for name, t in (points or {}).items():
        op = operating_point(y, s, t)
        ax.plot([1 - op["specificity"]], [op["sensitivity"]], "o", ms=8,
                label=f"{name}: t = {t:.3g}, sens {op['sensitivity']:.3f}, spec {op['specificity']:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("1 − specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.legend(loc="lower right")
    return ax


# ------------------------------------------------------------------ temperature scaling (§4)

def _logits_labels(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(_np(logits), dtype=torch.float64)
    y = torch.as_tensor(_np(labels)).reshape(-1)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim not in (1, 2):
        raise ValueError(f"logits must be (N, C) or (N,) (binary), got shape {tuple(z.shape)}")
    if len(z) != len(y):
        raise ValueError(f"length mismatch: {len(z)} logit rows but {len(y)} labels")
    if len(z) == 0 or not torch.isfinite(z).all():
        raise ValueError("logits must be a non-empty array of finite numbers")
    c = 2 if z.ndim == 1 else z.shape[1]
    if not torch.isin(y, torch.arange(c)).all():
        raise ValueError(f"labels must be integers in 0..{c - 1}")
    return z, y.long()


def _nll(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if z.ndim == 1:
        return F.binary_cross_entropy_with_logits(z, y.to(z.dtype))
    return F.cross_entropy(z, y)


def fit_temperature(logits: Any, labels: Any, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising the NLL of softmax(z / T) on VALIDATION (notebook 09, §4).

    Guo et al. 2017: one scalar divides all logits. (N, C) logits use softmax and cross-entropy,
    (N,) binary logits sigmoid(z / T) and binary cross-entropy. We optimise log T (so T stays
    positive) with L-BFGS in float64, starting at T = 1. T > 1 softens an over-confident model.
    Dividing by T changes no argmax and no ranking: accuracy, ACC at 0.5 and AUC are unchanged;
    only the probabilities (hence ECE, NLL, and the numeric value of a probability threshold)
    move. Fit on validation logits, never on test. If the validation cases are perfectly separated,
    the NLL keeps falling as T → 0 and the fitted T is meaningless (tiny); check T before using it.
    """
    z, y = _logits_labels(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """softmax(z / T) for (N, C) logits, or sigmoid(z / T) = P(y=1) for (N,) binary logits (notebook 09, §4)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = torch.as_tensor(_np(logits), dtype=torch.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim not in (1, 2):
        raise ValueError(f"logits must be (N, C) or (N,) (binary), got shape {tuple(z.shape)}")
    z = z / temperature
    return (torch.sigmoid(z) if z.ndim == 1 else torch.softmax(z, dim=1)).numpy()


def nll(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of (N, C) probabilities or (N,) P(y=1), clipped at 1e-12 (notebook 09, §4)."""
    _calibration_inputs(probs, labels, "top-label")  # validates shapes, ranges and labels
    p = _np(probs).astype(np.float64)
    lab = _np(labels).reshape(-1).astype(np.int64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(lab)), lab], 1e-12, None))))


# ------------------------------------------------------------------ training (§2; `mmcourse finetune medical`)

REMEDIES = ("plain", "weighted loss", "balanced sampler")


def class_weights(labels: Any) -> torch.Tensor:
    """``w_c = N / (2 N_c)``: each class contributes half of the loss (notebook 09, §2.2)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=2)
    return torch.tensor(len(labels) / (2 * counts), dtype=torch.float32)


def remedy_loader(dataset: Any, labels: Any, remedy: str, batch_size: int, **kw: Any) -> DataLoader:
    """Shuffled batches; with remedy "balanced sampler", each class is drawn with probability 1/2
    (``WeightedRandomSampler``, with replacement; notebook 09, §2.2). Other remedies shuffle."""
    if remedy not in REMEDIES:
        raise ValueError(f"unknown remedy {remedy!r}; choose one of {REMEDIES}")
    if remedy == "balanced sampler":
        labels = np.asarray(labels)
        w = (1.0 / np.bincount(labels, minlength=2))[labels]
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(labels), replacement=True)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, **kw)


def subset_rows(n: int | None, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of ``n`` of ``range(size)`` (sorted), or all of them when ``n`` is None."""
    if n is None or n >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).permutation(size)[:n])


def image_ids(dataset: Any, rows: Any) -> list[str]:
    """The identity of each image: its last three path parts (split/class/file), else name/split/index."""
    if hasattr(dataset, "records") and "path" in dataset.records[0]:
        return ["/".join(Path(dataset.records[int(i)]["path"]).parts[-3:]) for i in rows]
    return [f"{dataset.info.name}/{dataset.info.split}/{int(i)}" for i in rows]


def pooled_features(model: nn.Module, dataset: Any, rows: Any, size: int, device: Any = None) -> np.ndarray:
    """Cached ``(n, 1280)`` pooled MobileNetV2 features of ``dataset[rows]["image"]`` (ImageNet-normalised
    inside), keyed by the weights, the images, the size and the data source (notebook 09, §2.1)."""
    from mmcourse import alignment, pretrained

    key = {"weights": pretrained.weights_key(model), "images": image_ids(dataset, rows), "image_size": size,
           "source": dataset.info.source, "what": "mobilenet_v2 pooled fp32 v1"}
    return alignment.cached_array("nb09_pooled", key,
                                  lambda: alignment.image_features(model, dataset, rows, device=device))


def positive_score(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """P(class 1) of a 2-class classifier on ready inputs ``x`` (softmax column 1), without gradients."""
    with torch.no_grad():
        return model(x).softmax(-1)[:, 1].cpu().numpy()


def train_probe(x_train: torch.Tensor, y_train: Any, x_val: torch.Tensor, y_val: Any, remedy: str, seed: int,
                epochs: int) -> tuple[nn.Linear, Any]:
    """A linear probe ``nn.Linear(d, 2)`` on frozen features with ``remedy``, early-stopped on the
    validation AUC (notebook 09, §2.1–2.2). It trains on the CPU in this process alone
    (``distributed=False``): under torchrun every rank trains the same probe. Returns (probe, History)."""
    from mmcourse.train import fit

    torch.manual_seed(seed)
    head = nn.Linear(x_train.shape[1], 2)
    weight = class_weights(y_train) if remedy == "weighted loss" else None
    loader = remedy_loader(TensorDataset(x_train, torch.as_tensor(np.asarray(y_train))), y_train, remedy, 64)
    hist = fit(head, lambda m, b: F.cross_entropy(m(b[0]), b[1], weight=weight), loader, val_loader=[None],
               eval_fn=lambda m, _: {"val_auc": auc(y_val, positive_score(m, x_val))}, epochs=epochs, lr=3e-3,
               weight_decay=0.01, monitor="val_auc", mode="max", patience=8, seed=seed, progress=False,
               device="cpu", distributed=False)
    return head.eval(), hist


def choose_remedy(x_train: torch.Tensor, y_train: Any, x_val: torch.Tensor, y_val: Any, epochs: int,
                  seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[str, nn.Linear, dict[str, list[dict]]]:
    """Train a probe per remedy and seed; choose the remedy with the best mean validation AUC
    (notebook 09, §2.2). Returns (remedy, its best seed's probe, runs), where ``runs[remedy]`` lists
    per seed the validation AUC, the sensitivity and specificity at 0.5, and the probe."""
    runs = {}
    for remedy in REMEDIES:
        runs[remedy] = []
        for seed in seeds:
            head, hist = train_probe(x_train, y_train, x_val, y_val, remedy, seed, epochs)
            op = operating_point(y_val, positive_score(head, x_val), 0.5)
            runs[remedy].append({"val_auc": hist.best_metric, "sensitivity": op["sensitivity"],
                                 "specificity": op["specificity"], "probe": head})
    remedy = max(REMEDIES, key=lambda r: np.mean([v["val_auc"] for v in runs[r]]))
    return remedy, max(runs[remedy], key=lambda v: v["val_auc"])["probe"], runs


def predict_logits(model: nn.Module, dataset: Any, rows: Any, device: Any = None, batch_size: int = 64) -> np.ndarray:
    """``(n, 2)`` logits of ``dataset[rows]["image"]`` (ImageNet-normalised here), in eval mode."""
    from mmcourse import data
    from mmcourse.data.transforms import normalize

    device = device if device is not None else next(model.parameters()).device
    loader = data.dataloader(Subset(dataset, [int(i) for i in rows]), batch_size=batch_size)
    model.eval()
    out = []
    with torch.no_grad():
        for b in loader:
            out.append(model(normalize(b["image"]).to(device)).float().cpu())
    return torch.cat(out).numpy()


def finetune_loss(weight: torch.Tensor | None = None):
    """Cross-entropy of ``model(normalize(batch["image"]))`` against ``batch["label"]``, optionally class-weighted."""
    from mmcourse.data.transforms import normalize

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(normalize(batch["image"])), batch["label"],
                               weight=None if weight is None else weight.to(batch["label"].device))
    return loss


def finetune(model: nn.Module, train_set: Any, rows: Any, labels: Any, val_auc_fn: Any, *, remedy: str,
             epochs: int, batch_size: int, lr: float = 3e-4, run_dir: Any = None, resume: bool = True,
             workers: int = 0, device: Any = None, progress: bool = True, warmup_steps: int | None = None,
             patience: int = 3, **levers: Any) -> Any:
    """Full fine-tuning of an image classifier on ``train_set[rows]`` with the chosen imbalance
    ``remedy`` (notebook 09, §2.3; ``python -m mmcourse finetune medical``): AdamW at ``lr``, weight
    decay 0.01, early stopping on ``val_auc_fn(model) -> {"val_auc": ...}`` after ``patience`` evaluations
    without a gain, a
    checkpoint after every epoch in ``run_dir`` that an interrupted run resumes from. ``levers``
    go to ``fit`` (``channels_last``, ``compile``, ``amp``, ``fused``). Runs unchanged under
    torchrun. Returns fit's History; ``model`` holds the best weights."""
    from mmcourse import data
    from mmcourse.train import fit

    labels = np.asarray(labels)
    weight = class_weights(labels) if remedy == "weighted loss" else None
    loader = remedy_loader(Subset(train_set, [int(i) for i in rows]), labels, remedy, batch_size,
                           collate_fn=data.collate, num_workers=workers)
    return fit(model, finetune_loss(weight), loader, val_loader=[None], eval_fn=lambda m, _: val_auc_fn(m),
               epochs=epochs, lr=lr, weight_decay=0.01, warmup_steps=warmup_steps, monitor="val_auc", mode="max",
               patience=patience, checkpoint_dir=run_dir, checkpoint_every="epoch" if run_dir else None,
               resume=resume and run_dir is not None, seed=0, device=device, progress=progress, **levers)
