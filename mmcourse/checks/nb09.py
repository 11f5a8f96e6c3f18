"""Checks for notebook 09_medical_imaging: the expected calibration error (exercise 9.1), Grad-CAM
from scratch (9.2), the operating point chosen on validation and reported on test (9.3), the quizzes.

Each check compares the learner's function with the library version in :mod:`mmcourse.medical` or
:mod:`mmcourse.gradcam` and recognises the typical mistakes to give a specific hint. The cases are
built so that every typical mistake changes the answer (tests/test_checks_nb09.py keeps them so):

- ECE: over-confident probabilities strictly inside (0, 1), at least 1e-3 away from every bin edge
  (so the way a learner assigns a value to a bin cannot matter), with empty bins, two and three
  classes, both kinds and two numbers of bins.
- Grad-CAM: a tiny random CNN (BatchNorm, dropout, 5 classes). As for MobileNetV2 on X-rays, its
  maps for the predicted class are positive everywhere, so a missing ReLU only shows for another
  class (:data:`GRADCAM_TARGET`, whose maps have both signs), and a blank image whose map for that
  class is negative everywhere tests that a constant map comes back as zeros.
- Operating point: a hand-made validation/test pair whose Youden thresholds (0.70 and 0.38) and
  0.5 give three different answers, with a test score exactly at the validation threshold.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from mmcourse import checks, gradcam, medical


# --------------------------------------------------------------------------- exercise 9.1: ECE

def reference_expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15,
                                         kind: str = "top-label") -> float:
    """ECE = Σ_b (|B_b| / N) · |acc_b − conf_b| over equal-width bins (notebook 09, §4); :func:`medical.ece`."""
    return medical.ece(probs, labels, n_bins, kind)


#: numbers of bins whose edges the case probabilities keep away from (the asked ones, off-by-ones, one bin)
EDGE_BINS = (1, 9, 10, 11, 14, 15, 16)


def away_from_edges(values: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """True where a value is strictly inside (0, 1) and more than ``margin`` from every edge k/m, m in EDGE_BINS."""
    edges = np.concatenate([np.linspace(0.0, 1.0, m + 1) for m in EDGE_BINS])
    return np.abs(np.asarray(values)[:, None] - edges[None, :]).min(axis=1) > margin


def calibration_case(seed: int, n: int, c: int, sharpen: float = 1.8) -> tuple[np.ndarray, np.ndarray]:
    """Over-confident (N, c) probabilities and labels drawn from the unsharpened ones (notebook 09, §4).

    The labels follow softmax(z), the probabilities softmax(sharpen · z): confidence above accuracy.
    Rows whose confidence (or P(class 1)) is within 1e-3 of a bin edge are dropped.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=(n, c))

    def softmax(v: np.ndarray) -> np.ndarray:
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    labels = np.minimum((rng.uniform(size=(n, 1)) > softmax(z).cumsum(axis=1)).sum(axis=1), c - 1)
    probs = softmax(sharpen * z)
    keep = away_from_edges(probs.max(axis=1)) & away_from_edges(probs[:, 1])
    return probs[keep], labels[keep].astype(np.int64)


def ece_cases() -> list[tuple[str, np.ndarray, np.ndarray, int, str]]:
    """(description, probs, labels, n_bins, kind): the cases exercise 9.1 is checked on, in this order."""
    p3, y3 = calibration_case(0, 400, 3)
    p2, y2 = calibration_case(1, 400, 2)
    return [("3 classes", p3, y3, 15, "top-label"),
            ("2 classes", p2, y2, 15, "top-label"),
            ("2 classes", p2, y2, 15, "positive"),
            ("3 classes", p3, y3, 10, "top-label")]


def _conf_correct(probs: np.ndarray, labels: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "positive":
        return probs[:, 1], (labels == 1).astype(np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(np.float64)


def _bins(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bin of each case, count, mean confidence, accuracy) of the non-empty bins' arrays (all n_bins long)."""
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)  # the cases are away from the edges
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (b, count, np.bincount(b, weights=conf, minlength=n_bins) / count,
                np.bincount(b, weights=correct, minlength=n_bins) / count)


def _weighted_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    _, count, cb, ab = _bins(conf, correct, n_bins)
    full = count > 0
    return float(np.sum(count[full] / len(conf) * np.abs(ab - cb)[full]))


def _ece_variant(probs: np.ndarray, labels: np.ndarray, n_bins: int, kind: str, how: str) -> float | None:
    """The ECE a typical mistake computes (``how`` names it); None where it cannot differ from the right one."""
    conf, correct = _conf_correct(probs, labels, kind)
    b, count, cb, ab = _bins(conf, correct, n_bins)
    full, n = count > 0, len(conf)
    gap, w = np.abs(ab - cb)[full], count[full] / n
    if how == "unweighted":
        return float(gap.mean())
    if how == "over n_bins":
        return float(gap.sum() / n_bins)
    if how == "squared":
        return float(np.sum(w * gap ** 2))
    if how == "root squared":
        return float(np.sqrt(np.sum(w * gap ** 2)))
    if how == "signed":
        return float(np.sum(w * (ab - cb)[full]))
    if how == "one bin":
        return abs(float(correct.mean() - conf.mean()))
    if how == "accuracy over N":
        return float(np.sum(w * np.abs(np.bincount(b, weights=correct, minlength=n_bins)[full] / n - cb[full])))
    if how == "overall accuracy":
        return float(np.sum(w * np.abs(correct.mean() - cb[full])))
    if how == "bin centres":
        centres = (np.arange(n_bins) + 0.5) / n_bins
        return float(np.sum(w * np.abs(ab[full] - centres[full])))
    if how in ("n_bins + 1", "n_bins - 1"):
        return medical.ece(probs, labels, n_bins + (1 if how == "n_bins + 1" else -1), kind)
    if how == "kind ignored":  # also what "positive" computes on 3 classes: probs[:, 1] against label == 1
        return _weighted_ece(*_conf_correct(probs, labels, "top-label" if kind == "positive" else "positive"),
                             n_bins)
    if how == "argmax accuracy for positive":
        return _weighted_ece(probs[:, 1], (probs.argmax(axis=1) == labels).astype(np.float64), n_bins) \
            if kind == "positive" else None
    if how == "hard-coded 15":
        return medical.ece(probs, labels, 15, kind) if n_bins != 15 else None
    if how == "percent":
        return 100 * medical.ece(probs, labels, n_bins, kind)
    raise ValueError(f"unknown ECE variant {how!r}")


_BIN_SIZE_HINT = ("weight each bin by its share of the cases, |B_b| / N, and sum: ECE = Σ_b (|B_b| / N) · "
                  "|acc_b − conf_b|. ")
_OFF_BY_ONE = ("n_bins equal-width bins need n_bins + 1 edges: np.linspace(0, 1, n_bins + 1); bin of a "
               "confidence p: min(int(p · n_bins), n_bins − 1)")
_ONE_BIN = ("take |acc_b − conf_b| in EACH bin, then the weighted sum: without the absolute value per bin "
            "(or with all cases in one bin) over- and under-confident bins cancel, and Σ_b (|B_b|/N)(acc_b − "
            "conf_b) is just the overall accuracy minus the mean confidence")

#: (variant of :func:`_ece_variant`, hint), tried in this order on the first case that differs
ECE_MISTAKES: list[tuple[str, str]] = [
    ("unweighted", _BIN_SIZE_HINT + "An unweighted mean over the non-empty bins lets a bin of 3 cases count as "
                                    "much as one of 300"),
    ("over n_bins", _BIN_SIZE_HINT + "Dividing the sum of the gaps by the number of bins (empty ones included) "
                                     "is an unweighted mean too"),
    ("n_bins + 1", "you used n_bins + 1 bins: " + _OFF_BY_ONE),
    ("n_bins - 1", "you used n_bins − 1 bins (np.linspace(0, 1, n_bins) gives n_bins − 1 bins): " + _OFF_BY_ONE),
    ("hard-coded 15", "use the n_bins argument instead of a hard-coded 15"),
    ("kind ignored", "the kind argument is ignored: \"top-label\" uses the largest probability and whether the "
                     "argmax is the label; \"positive\" uses probs[:, 1] and the fraction of label 1 in the bin"),
    ("argmax accuracy for positive", "for kind=\"positive\" the bin's accuracy is the fraction of cases with "
                                     "label 1 (the observed frequency), not whether the argmax was right"),
    ("squared", "the ECE uses the absolute gap |acc_b − conf_b| (the L1 norm), not its square"),
    ("root squared", "the ECE uses the absolute gap |acc_b − conf_b| (the L1 norm), not the root of the "
                     "weighted squared gaps (that is the L2 calibration error)"),
    ("signed", _ONE_BIN),
    ("one bin", _ONE_BIN),
    ("accuracy over N", "acc_b is the accuracy of the cases IN bin b: the number correct in the bin divided by "
                        "|B_b|, not by N"),
    ("overall accuracy", "acc_b is the accuracy of the cases IN bin b, not the accuracy over all cases"),
    ("bin centres", "conf_b is the mean confidence of the cases in bin b, not the bin's centre"),
    ("percent", "return the ECE as a fraction between 0 and 1, not a percentage"),
]


def check_expected_calibration_error(fn: Callable) -> None:
    """Check ``expected_calibration_error(probs, labels, n_bins=15, kind="top-label")`` (notebook 09, §4)
    against :func:`mmcourse.medical.ece` on :func:`ece_cases`."""
    name = "expected_calibration_error"
    cases = ece_cases()
    found = []
    for _, probs, labels, n_bins, kind in cases:
        got = checks.attempt(name, fn, probs.copy(), labels.copy(), n_bins=n_bins, kind=kind,
                             fallback="mmcourse.medical.ece")
        if checks.is_pending(got):
            return
        try:
            found.append(float(got))
        except (TypeError, ValueError):
            checks.failed(name, "one number", f"{type(got).__name__} {got!r:.80}",
                          "return the ECE as one float: the weighted sum of the per-bin gaps, not the bins")
            return
    want = [medical.ece(probs, labels, n_bins, kind) for _, probs, labels, n_bins, kind in cases]
    bad = [i for i in range(len(cases)) if not np.isclose(found[i], want[i], rtol=1e-6, atol=1e-7)]
    if not bad:
        checks.passed(name, f"{len(cases)} cases: top-label with 3 and 2 classes, positive class, 10 bins")
        return
    i = bad[0]
    what, probs, labels, n_bins, kind = cases[i]
    where = f"for {what}, kind={kind!r}, n_bins={n_bins}"
    hint = "ECE = Σ_b (|B_b| / N) · |acc_b − conf_b| over n_bins equal-width bins on [0, 1]; medical.ece"
    for how, why in ECE_MISTAKES:
        wrong = _ece_variant(probs, labels, n_bins, kind, how)
        if wrong is not None and np.isclose(found[i], wrong, rtol=1e-6, atol=1e-7):
            hint = why
            break
    checks.failed(name, f"{want[i]:.5f} {where}", f"{found[i]:.5f}", hint)


# --------------------------------------------------------------------------- exercise 9.2: Grad-CAM

def reference_grad_cam(model: nn.Module, images: torch.Tensor, layer: nn.Module,
                       target: int | None = None) -> np.ndarray:
    """Grad-CAM maps (N, h, w) at the layer's resolution, min–max scaled per image (notebook 09, §5)."""
    return gradcam.grad_cam(model, images, layer, target, size=None)


#: the class whose maps have both signs on the check images (the predicted classes' are positive everywhere)
GRADCAM_TARGET = 3
_GRADCAM_SEED = 18


def gradcam_model() -> nn.Sequential:
    """A tiny random CNN in eval mode; ``model[2]`` (conv → BatchNorm → in-place ReLU) is the Grad-CAM layer.

    Built under a forked random state, so the global one is left alone; BatchNorm's running
    statistics and affine parameters are random, the head's weights N(0, 15²) so that the classes
    differ between images and the maps are not tiny (logits of about ±10).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_GRADCAM_SEED)
        model = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True)),
            nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True)),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(16, 5))
        with torch.no_grad():
            for bn in (model[0][1], model[2][1]):
                bn.running_mean.uniform_(-0.3, 0.3)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.3, 0.3)
            nn.init.normal_(model[-1].weight, std=15.0)
            nn.init.zeros_(model[-1].bias)
    return model.eval()


def gradcam_images() -> torch.Tensor:
    """Four 12 × 16 random images (H ≠ W shows swapped axes); image 1 is blank (all zero)."""
    x = torch.randn(4, 3, 12, 16, generator=torch.Generator().manual_seed(_GRADCAM_SEED))
    x[1] = 0.0
    return x


#: (what the case shows, target, model handed over in train mode), checked in this order
GRADCAM_CASES: list[tuple[str, int | None, bool]] = [
    (" (target=None: each image's predicted class)", None, False),
    (f" (target={GRADCAM_TARGET} for every image; image 1 is blank)", GRADCAM_TARGET, False),
    (" (a model handed over in train mode)", None, True),
]


def hooks_left(model: nn.Module) -> list[str]:
    """Names of the submodules that still carry a forward or backward hook ("" for the model itself)."""
    return [name for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks]


def _gradients(model: nn.Module, images: torch.Tensor, layer: nn.Module,
               score: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` and ``d score(logits) / dA`` on an eval-mode copy: the gradient of another score than y_c."""
    clone = copy.deepcopy(model).eval()
    module = clone.get_submodule(gradcam.layer_name(model, layer))
    kept: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, i, out: kept.append(out))
    try:
        logits = clone(images)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(score(logits), kept[0])
    return kept[0].detach(), grad


def _normalised(raw: torch.Tensor) -> np.ndarray:
    return gradcam.minmax(raw.float()).numpy()


def _weighted(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    return (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)


_NO_RELU = ("apply the ReLU to Σ_k alpha_k A_k BEFORE the min–max scaling: it keeps only the evidence FOR the "
            "class (after the scaling it changes nothing). The predicted class's map is often positive "
            "everywhere, so the ReLU only shows for another class, as here")
_PIXELWISE = ("average the gradients over the positions first, alpha_k = dy_c/dA_k averaged over (h, w), one "
              "weight per channel; Σ_k dA_k · A_k pixel by pixel is another method (gradient × activation)")


def grad_cam_mistakes(model: nn.Module, images: torch.Tensor, layer: nn.Module,
                      target: int | None) -> list[tuple[np.ndarray, str]]:
    """(maps, hint) that typical mistakes return on this case, in the order they are tried."""
    activations, gradients, classes = gradcam.activations_and_gradients(model, images, layer, target)
    raw = _weighted(activations, gradients)
    cam = raw.clamp_min(0)
    high = cam.amax(dim=(1, 2), keepdim=True)
    rows = torch.arange(len(classes))
    soft_a, soft_g = _gradients(model, images, layer, lambda z: z.softmax(dim=1)[rows, classes].sum())
    all_a, all_g = _gradients(model, images, layer, lambda z: z.sum())
    from_activations = _weighted(activations, activations)
    mistakes = [
        (_normalised(raw), _NO_RELU),
        (_normalised(from_activations.clamp_min(0)), "the channel weights alpha_k come from the GRADIENTS, "
                                                     "alpha_k = mean over (h, w) of dy_c/dA_k, not from the "
                                                     "activations A_k"),
        (_normalised((gradients * activations).sum(dim=1).clamp_min(0)), _PIXELWISE),
        (_normalised((gradients * activations).sum(dim=1)), _PIXELWISE),
    ]
    if target is not None:
        predicted = gradcam.grad_cam(model, images, layer, None, size=None)
        mistakes.append((predicted, f"the gradient must be that of the target class ({target}), not of each "
                                    "image's predicted class: use `target` when it is given, argmax only when "
                                    "it is None"))
    mistakes += [
        (_normalised(_weighted(soft_a, soft_g).clamp_min(0)), "take the gradient of the class's LOGIT y_c "
                                                              "(the model's output, before the softmax), not "
                                                              "of its probability"),
        (_normalised(_weighted(all_a, all_g).clamp_min(0)), "backpropagate only the target class's logit, "
                                                            "logits[n, c_n] summed over the images, not the sum "
                                                            "of all the logits"),
        (cam.numpy(), "scale each map to [0, 1]: (cam − min) / (max − min), per image"),
        ((cam / high).numpy(), "min–max scaling subtracts the minimum first: (cam − min) / (max − min); "
                               "dividing by the maximum only leaves a map that is positive everywhere "
                               "(often the predicted class's) above 0"),
        (((cam - cam.min()) / (cam.max() - cam.min())).numpy(), "scale each image's map on its own (min and "
                                                                 "max over (h, w) per image), not over the "
                                                                 "whole batch"),
    ]
    return mistakes


def _undo_epsilon(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per image, a map whose maximum is in [0.9, 1) where the right one reaches 1, rescaled to maximum 1.

    That is what a small epsilon in the division, (cam − min) / (max − min + eps) as pytorch-grad-cam's
    1e-7, gives; such a map is accepted. Every other map is returned unchanged.
    """
    out = got.astype(np.float64)
    peak = out.max(axis=(1, 2))
    scale = np.where((want.max(axis=(1, 2)) > 0) & (peak >= 0.9) & (peak < 1), peak, 1.0)
    return out / scale[:, None, None]


def _state_changes(model: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    after = model.state_dict()
    return [k for k, v in before.items() if k not in after or not torch.equal(after[k], v)]


def check_grad_cam(fn: Callable) -> None:
    """Check ``grad_cam(model, images, layer, target) -> (N, h, w)`` (notebook 09, §5) against
    :func:`mmcourse.gradcam.grad_cam` with ``size=None`` on :func:`gradcam_model`, layer ``model[2]``.

    ``target`` is None (each image's predicted class) or one class index for every image. The
    model must come back without hooks and with an unchanged state_dict (in train mode, BatchNorm
    would overwrite its running statistics). A small epsilon in the min–max division is accepted.
    """
    name = "grad_cam"
    for what, target, train_mode in GRADCAM_CASES:
        if not _check_grad_cam_case(name + what, fn, target, train_mode):
            return


def _check_grad_cam_case(name: str, fn: Callable, target: int | None, train_mode: bool) -> bool:
    model, images = gradcam_model(), gradcam_images()
    if train_mode:
        model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = checks.attempt(name, fn, model, images.clone(), model[2], target, fallback="mmcourse.gradcam.grad_cam",
                           shape_hint="A is (N, K, h, w); alpha = gradients.mean(dim=(2, 3), keepdim=True); the map "
                                      "(alpha * A).sum(dim=1) is (N, h, w)")
    if checks.is_pending(found):
        return False
    left = hooks_left(model)
    if left:
        where = ", ".join(f"model.get_submodule({n!r})" if n else "the model itself" for n in left)
        return checks.failed(name, "the model without hooks afterwards", f"hooks still on {where}",
                             "remove every hook you registered, also when something fails: handle = "
                             "layer.register_forward_hook(...); try: ... finally: handle.remove(). A hook left "
                             "behind runs on every later forward pass and keeps old tensors alive")
    changed = _state_changes(model, before)
    if changed:
        stats = [k for k in changed if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        if stats:
            return checks.failed(name, "the model's state_dict unchanged", f"{stats[0]} changed",
                                 "put the model in eval mode first (model.eval()): in train mode BatchNorm "
                                 "normalises with the batch's statistics and overwrites its running ones, and "
                                 "dropout zeroes random channels, so the maps are neither right nor repeatable")
        return checks.failed(name, "the model's state_dict unchanged", f"{changed[0]} changed",
                             "Grad-CAM only reads the model: no optimizer step, no in-place change of the weights")
    if found is None:
        return checks.failed(name, "an array (N, h, w)", "None", "did you forget to `return` the maps?")
    want = reference_grad_cam(model, images, model[2], target)
    n, h, w = want.shape
    if checks.shape_mistake(name, found, want, {
            tuple(images.shape[:1]) + tuple(images.shape[2:]): f"keep the maps at the layer's resolution "
                                                               f"({h} × {w}): no upsampling in this exercise",
            (n, 1, h, w): "one map per image, (N, h, w): drop the channel axis after summing (keepdim=False)",
            (n, 16, h, w): "sum the weighted activations over the channels: (alpha * A).sum(dim=1)",
            (h, w): "return the maps of all N images, (N, h, w), not only the first"}):
        return False
    hint = ("alpha_k = mean over (h, w) of dy_c/dA_k; cam = ReLU(Σ_k alpha_k A_k); then "
            "(cam − min) / (max − min) per image")
    got = checks._as_array(found)
    if got.shape != want.shape or not np.issubdtype(got.dtype, np.number):
        return checks.close(name, found, want, hint=hint)  # says what is wrong with the shape or dtype
    if np.isnan(got).any():
        bad = sorted({int(i) for i in np.argwhere(np.isnan(got))[:, 0]})
        return checks.failed(name, "maps in [0, 1]", f"NaN in the map of image {bad}",
                             "a constant map (here all zero after the ReLU: this class has no evidence in a blank "
                             "image) must come back as zeros: divide by max − min only where it is > 0")
    got = _undo_epsilon(got, want)
    mistakes = grad_cam_mistakes(model, images, model[2], target)
    mistakes.append((want * got.max(axis=(1, 2), keepdims=True),
                     "each map must reach 1: (cam − min) / (max − min); an epsilon in the division (max − min + "
                     "eps) must be tiny next to max − min (some of these maps span only about 1e-3), e.g. 1e-8, "
                     "or divide only where max > min"))
    return checks.close(name, got, want, atol=1e-4, rtol=0, mistakes=mistakes, hint=hint)


# --------------------------------------------------------------------------- exercise 9.3: operating point

def reference_operating_point_on_test(y_val: np.ndarray, score_val: np.ndarray, y_test: np.ndarray,
                                      score_test: np.ndarray) -> dict:
    """Youden's threshold chosen on VALIDATION, metrics on TEST at it (notebook 09, §3)."""
    return medical.operating_point(y_test, score_test, medical.youden_threshold(y_val, score_val))


def operating_point_hand_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y_val, score_val, y_test, score_test) by hand: Youden's threshold is 0.70 on validation, 0.38 on test.

    Validation: J = 4/5 + 7/7 − 1 = 0.8 at 0.70 (next best 0.714 at 0.52). Test at 0.70: 2 of 7
    positives found, 7 of 9 negatives below it (the negative at exactly 0.70 counts as positive,
    rule ``score >= threshold``): sensitivity 0.286, specificity 0.778.
    """
    neg_val, pos_val = [0.05, 0.12, 0.20, 0.31, 0.44, 0.58, 0.66], [0.52, 0.70, 0.74, 0.81, 0.90]
    neg_test, pos_test = [0.08, 0.15, 0.22, 0.28, 0.35, 0.47, 0.55, 0.70, 0.78], [0.38, 0.41, 0.45, 0.60, 0.68,
                                                                                    0.73, 0.85]
    return (np.r_[np.zeros(len(neg_val), int), np.ones(len(pos_val), int)], np.array(neg_val + pos_val),
            np.r_[np.zeros(len(neg_test), int), np.ones(len(pos_test), int)], np.array(neg_test + pos_test))


def operating_point_random_case(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A larger validation/test pair whose score distributions differ (a shifted test population)."""
    rng = np.random.default_rng(seed)

    def split(n: int, prevalence: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.uniform(size=n) < prevalence).astype(int)
        z = rng.normal(2.0 * y + shift, 1.0)
        return y, 1 / (1 + np.exp(-(z - 1.0)))
    return (*split(150, 0.4, 0.0), *split(200, 0.6, 0.9))


_KEYS = ("threshold", "sensitivity", "specificity", "acc")


def _strict_rule(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """The operating point with ``score > threshold`` (the wrong rule for this course)."""
    op = medical.operating_point(y, score, np.nextafter(threshold, np.inf))
    return {**op, "threshold": threshold}


def _matches(found: dict, wrong: dict, keys: Sequence[str]) -> bool:
    return all(np.isclose(float(found[k]), float(wrong[k]), rtol=0, atol=1e-9) for k in keys)


def _show(op: dict) -> str:
    return ", ".join(f"{k} {float(op[k]):.3f}" for k in _KEYS)


def check_operating_point_on_test(fn: Callable) -> None:
    """Check ``operating_point_on_test(y_val, score_val, y_test, score_test) -> dict`` (notebook 09, §3).

    The dict needs at least threshold, sensitivity, specificity and acc; the threshold must be
    Youden's on validation (:func:`medical.youden_threshold`) and the metrics those of
    :func:`medical.operating_point` on test at it.
    """
    name = "operating_point_on_test"
    for what, case in ((" (hand-made case)", operating_point_hand_case()),
                       (" (150 validation, 200 test cases)", operating_point_random_case())):
        if not _check_operating_case(name + what, fn, *case):
            return


def _check_operating_case(name: str, fn: Callable, y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray,
                          s_test: np.ndarray) -> bool:
    found = checks.attempt(name, fn, y_val.copy(), s_val.copy(), y_test.copy(), s_test.copy(),
                           fallback="medical.operating_point(y_test, score_test, medical.youden_threshold(y_val, "
                                    "score_val))")
    if checks.is_pending(found):
        return False
    if not isinstance(found, dict) or any(k not in found for k in _KEYS):
        have = sorted(found) if isinstance(found, dict) else type(found).__name__
        return checks.failed(name, f"a dict with keys {', '.join(_KEYS)}", have,
                             "return the dict of medical.operating_point(y_test, score_test, threshold)")
    try:
        [float(found[k]) for k in _KEYS]
    except (TypeError, ValueError):
        return checks.failed(name, "numbers under " + ", ".join(_KEYS), {k: found[k] for k in _KEYS},
                             "each of these is one number")
    t_val, t_test = medical.youden_threshold(y_val, s_val), medical.youden_threshold(y_test, s_test)
    want = medical.operating_point(y_test, s_test, t_val)
    if _matches(found, want, _KEYS):
        return checks.passed(name, f"threshold {t_val:.3f} from validation; on test sensitivity "
                                   f"{want['sensitivity']:.3f}, specificity {want['specificity']:.3f}")
    metrics = ("sensitivity", "specificity", "acc")
    swapped = {**want, "sensitivity": want["specificity"], "specificity": want["sensitivity"]}
    mistakes = [
        (medical.operating_point(y_test, s_test, t_test), metrics,
         f"the threshold was chosen on TEST ({t_test:.3f}): choose it on validation "
         f"(youden_threshold(y_val, score_val) = {t_val:.3f}) and apply it unchanged to test. A threshold tuned on "
         "test reports the best case, not what the deployed model would do"),
        (medical.operating_point(y_test, s_test, 0.5), metrics,
         "the threshold is Youden's J on validation, not a fixed 0.5 (0.5 is MedMNIST's ACC convention, not an "
         "operating point chosen for the patients)"),
        (medical.operating_point(y_val, s_val, t_val), metrics,
         "the threshold comes from validation, but the metrics must be computed on TEST: "
         "operating_point(y_test, score_test, threshold)"),
        (_strict_rule(y_test, s_test, t_val), metrics,
         "the course's rule is positive when score >= threshold (a case exactly at the threshold is positive); "
         "you used score > threshold"),
        (swapped, metrics,
         "sensitivity and specificity are swapped: sensitivity = tp / (tp + fn) (the sick found), "
         "specificity = tn / (tn + fp) (the healthy cleared)"),
    ]
    for wrong, keys, hint in mistakes:
        if _matches(found, wrong, keys):
            return checks.failed(name, _show(want), _show(found), hint)
    if np.isclose(float(found["threshold"]), t_test, atol=1e-9):
        hint = mistakes[0][2]
    elif np.isclose(float(found["threshold"]), 0.5, atol=1e-9):
        hint = mistakes[1][2]
    elif not np.isclose(float(found["threshold"]), t_val, atol=1e-9):
        hint = ("the threshold is the validation score that maximises J = sensitivity + specificity − 1 "
                "(positive when score >= threshold; ties to the highest): medical.youden_threshold(y_val, score_val)")
    else:
        hint = ("the threshold is right; compute the test metrics at it with medical.operating_point(y_test, "
                "score_test, threshold) and return that dict")
    return checks.failed(name, _show(want), _show(found), hint)


# --------------------------------------------------------------------------- quizzes

def check_quiz_9_1(fn: Callable) -> None:
    """Quiz 9.1 (a number).

    Question: "Kermany test set: 234 normal, 390 pneumonia. Accuracy of a model that always says pneumonia?"
    """
    checks.quiz_with_hints(
        "quiz 9.1 (majority baseline)", fn, 390 / 624,
        "Always saying pneumonia is right for every pneumonia case: 390 / (234 + 390) = 390 / 624 = 0.625, "
        "with sensitivity 1 and specificity 0. Every accuracy on this test set must be compared with this "
        "baseline (an ACC of 0.80 is only 0.175 above a model that looks at nothing), which is why "
        "sensitivity and specificity say more than accuracy on an imbalanced set.",
        0.02,
        [(234 / 624, "0.375 = 234/624 is the accuracy of always saying NORMAL."),
         (62.5, "Give the accuracy as a fraction between 0 and 1, not a percentage.")])


QUIZ_9_2 = {
    "a": "benign or normal",
    "b": "malignant",
    "c": "unlabeled",
    "d": "pneumonia",
}


def check_quiz_9_2(fn: Callable) -> None:
    """Quiz 9.2 (multiple choice: return the letter).

    Question: "In BreastMNIST, what does label 0 mean?"
    a) benign or normal
    b) malignant
    c) unlabeled
    d) pneumonia
    (the options are :data:`QUIZ_9_2`; a test keeps this docstring equal to them)
    """
    checks.quiz("quiz 9.2 (BreastMNIST labels)", fn, "b",
                "MedMNIST's BreastMNIST stores 0 = malignant and 1 = normal or benign (its info dict lists the "
                "labels in that order), the opposite of the usual convention. Sensitivity, specificity, PPV and "
                "NPV are about the disease, so flip the labels first (medical.positive_is_one(y, "
                "\"breastmnist\")) and take P(malignant) = probs[:, 0] as the score; AUC and accuracy survive "
                "the flip, the clinical metrics swap meaning without it.",
                choices=QUIZ_9_2)


def check_quiz_9_3(fn: Callable) -> None:
    """Quiz 9.3 (a number).

    Question: "A test with sensitivity 0.95 and specificity 0.80 is used where 5 % of the children tested
    have pneumonia. What fraction of positive results are true pneumonia (PPV)?"
    """
    sens, spec, prev = 0.95, 0.80, 0.05
    ppv = sens * prev / (sens * prev + (1 - spec) * (1 - prev))
    checks.quiz_with_hints(
        "quiz 9.3 (PPV at 5 % prevalence)", fn, ppv,
        "Bayes: PPV = sens · prev / (sens · prev + (1 − spec) · (1 − prev)) = 0.95 · 0.05 / (0.0475 + "
        "0.20 · 0.95) = 0.0475 / 0.2375 = 0.20. Of 1,000 children, 50 have pneumonia and 47.5 test positive; "
        "of the 950 without, 190 test positive too: only 1 positive in 5 is pneumonia. PPV falls with the "
        "prevalence (Kermany's test set is 62.5 % pneumonia, far above a clinic's), sensitivity and "
        "specificity do not.",
        0.005 / ppv,
        [(0.95, "0.95 is the sensitivity, P(positive | pneumonia), not the PPV, P(pneumonia | positive)."),
         (0.80, "0.80 is the specificity, P(negative | no pneumonia), not the PPV, P(pneumonia | positive)."),
         (20.0, "Give the PPV as a fraction between 0 and 1, not a percentage.")])
