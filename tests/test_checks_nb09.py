"""Checks of notebook 09_medical_imaging: the references and independent solutions pass, every typical
mistake gets ✗ and its own hint, unattempted exercises are pending, and the check cases really show
what they claim (probabilities away from bin edges, a Grad-CAM class whose maps have both signs, two
different Youden thresholds)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from mmcourse import checks, gradcam, medical
from mmcourse.checks import nb09
from mmcourse.data.medmnist import FLAGS
from checkhelp import verdict, stub


pytestmark = pytest.mark.usefixtures("lenient")


@pytest.mark.parametrize("check", [nb09.check_expected_calibration_error, nb09.check_grad_cam,
                                   nb09.check_operating_point_on_test])
def test_unattempted_exercise_is_pending(capsys, check):
    out = verdict(check, stub, capsys)
    assert "pending" in out and "✗" not in out and out.count("pending") == 1, out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="unweighted mean"):
        nb09.check_expected_calibration_error(lambda p, y, n_bins=15, kind="top-label": _learner_ece(
            p, y, n_bins, kind, mistake="unweighted"))
    with pytest.raises(checks.CheckFailed, match="chosen on TEST"):
        nb09.check_operating_point_on_test(lambda yv, sv, yt, st: medical.operating_point(
            yt, st, medical.youden_threshold(yt, st)))


# ---------------------------------------------------------------- 9.1 expected_calibration_error

def _learner_ece(probs, labels, n_bins=15, kind="top-label", mistake=None):
    """ECE as a learner writes it (a loop over right-closed bins), with one typical mistake switched on."""
    nb = 15 if mistake == "hard-coded 15" else n_bins
    k = ("top-label" if kind == "positive" else "positive") if mistake == "kind ignored" else kind
    if k == "positive":
        conf, correct = probs[:, 1], (labels == 1).astype(float)
        if mistake == "argmax accuracy":
            correct = (probs.argmax(axis=1) == labels).astype(float)
    else:
        conf, correct = probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0, 1, nb + 1 + {"n_bins + 1": 1, "n_bins - 1": -1}.get(mistake, 0))
    gaps, weights = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if not inside.any():
            continue
        acc = correct[inside].mean()
        if mistake == "accuracy over N":
            acc = correct[inside].sum() / len(conf)
        elif mistake == "overall accuracy":
            acc = correct.mean()
        mean_conf = (lo + hi) / 2 if mistake == "bin centres" else conf[inside].mean()
        gap = acc - mean_conf
        gaps.append({"squared": gap ** 2, "root squared": gap ** 2, "signed": gap}.get(mistake, abs(gap)))
        weights.append(inside.sum() / len(conf))
    gaps, weights = np.array(gaps), np.array(weights)
    if mistake == "unweighted":
        return gaps.mean()
    if mistake == "over n_bins":
        return gaps.sum() / nb
    if mistake == "one bin":
        return abs(correct.mean() - conf.mean())
    value = np.sum(weights * gaps)
    if mistake == "root squared":
        return np.sqrt(value)
    return 100 * value if mistake == "percent" else value


def test_ece_reference_and_an_independent_solution_pass(capsys):
    for solution in (nb09.reference_expected_calibration_error, _learner_ece):
        out = verdict(nb09.check_expected_calibration_error, solution, capsys)
        assert out.count("✓") == 1 and "✗" not in out, out
    # a tensor scalar is a number too
    out = verdict(nb09.check_expected_calibration_error,
                  lambda p, y, n_bins=15, kind="top-label": torch.tensor(_learner_ece(p, y, n_bins, kind)), capsys)
    assert out.count("✓") == 1 and "✗" not in out, out


def test_ece_cases_are_strictly_inside_and_away_from_bin_edges():
    for _, probs, labels, n_bins, kind in nb09.ece_cases():
        assert probs.min() > 0 and probs.max() < 1 and np.allclose(probs.sum(axis=1), 1)
        for values in (probs.max(axis=1), probs[:, 1]):
            for m in nb09.EDGE_BINS:
                scaled = values * m
                assert np.abs(scaled - np.round(scaled)).min() > 1e-3 * m  # no value within 1e-3 of k/m
        assert len(labels) > 300 and set(np.unique(labels)) == set(range(probs.shape[1]))
        bins = medical.reliability_bins(probs, labels, n_bins, kind)
        assert (bins["count"] == 0).any() or kind == "positive"  # empty bins: weighting matters
        assert bins["ece"] > 0.05  # over-confident: far from 0


@pytest.mark.parametrize("mistake, hint", [
    ("unweighted", "unweighted mean over the non-empty bins"),
    ("over n_bins", "empty ones included"),
    ("n_bins + 1", "you used n_bins + 1 bins"),
    ("n_bins - 1", "you used n_bins − 1 bins"),
    ("hard-coded 15", "hard-coded 15"),
    ("kind ignored", "the kind argument is ignored"),
    ("argmax accuracy", "the fraction of cases with label 1"),
    ("squared", "not its square"),
    ("root squared", "L2 calibration error"),
    ("signed", "in EACH bin"),
    ("one bin", "in EACH bin"),
    ("accuracy over N", "not by N"),
    ("overall accuracy", "not the accuracy over all cases"),
    ("bin centres", "not the bin's centre"),
    ("percent", "not a percentage"),
])
def test_ece_typical_mistakes(capsys, mistake, hint):
    def wrong(probs, labels, n_bins=15, kind="top-label"):
        return _learner_ece(probs, labels, n_bins, kind, mistake=mistake)
    out = verdict(nb09.check_expected_calibration_error, wrong, capsys)
    assert "✗" in out and hint in out, out


def test_ece_kind_ignored_the_other_way_round(capsys):
    """Always the positive-class ECE: caught on the 3-class top-label case already."""
    out = verdict(nb09.check_expected_calibration_error,
                  lambda p, y, n_bins=15, kind="top-label": _learner_ece(p, y, n_bins, "positive"), capsys)
    assert "✗" in out and "3 classes" in out and "kind argument is ignored" in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda p, y, n_bins=15, kind="top-label": medical.reliability_bins(p, y, n_bins, kind)["accuracy"],
     "one float"),
    (lambda p, y, n_bins=15, kind="top-label": None, "one float"),
    (lambda p, y, n_bins=15, kind="top-label": p[:, 5].sum(), "IndexError"),
])
def test_ece_wrong_return_or_crash(capsys, wrong, hint):
    out = verdict(nb09.check_expected_calibration_error, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- 9.2 grad_cam

def _learner_grad_cam(model, images, layer, target=None, *, relu=True, weights="gradients", cls="target",
                      score="logit", norm="minmax", guard=True, eps=1e-7, eval_mode=True, remove=True,
                      hook="forward", shape="maps"):
    """Grad-CAM as a learner writes it (a forward hook and a tensor hook), with one mistake switched on."""
    if eval_mode:
        model.eval()
    store = {}

    def keep(module, inputs, output):
        store["A"] = output
        output.register_hook(lambda g: store.__setitem__("G", g))

    def keep_grad(module, grad_input, grad_output):
        store["G"] = grad_output[0]

    if hook == "full backward":  # the output's gradient from a module backward hook instead of a tensor hook
        handles = [layer.register_forward_hook(lambda m, i, o: store.__setitem__("A", o)),
                   layer.register_full_backward_hook(keep_grad)]
    else:
        handles = [layer.register_forward_hook(keep)]
    logits = model(images)
    n = len(images)
    classes = logits.argmax(dim=1) if target is None or cls == "predicted" else torch.full((n,), target)
    if score == "logit":
        s = logits[torch.arange(n), classes].sum()
    elif score == "softmax":
        s = logits.softmax(dim=1)[torch.arange(n), classes].sum()
    else:
        s = logits.sum()
    s.backward()
    if remove:
        for h in handles:
            h.remove()
    A, G = store["A"].detach(), store["G"].detach()
    if weights == "pixelwise":
        cam = (G * A).sum(dim=1)
    else:
        alpha = (G if weights == "gradients" else A).mean(dim=(2, 3), keepdim=True)
        cam = (alpha * A).sum(dim=1, keepdim=shape == "keepdim")
    if relu:
        cam = torch.relu(cam)
    if shape == "upsampled":
        cam = torch.nn.functional.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear")[:, 0]
    if norm == "none":
        return cam
    if norm == "batch":
        return (cam - cam.min()) / (cam.max() - cam.min())
    flat = cam.flatten(1)
    low = flat.min(dim=1).values.view(-1, *[1] * (cam.dim() - 1))
    high = flat.max(dim=1).values.view(-1, *[1] * (cam.dim() - 1))
    if norm == "max":
        low = torch.zeros_like(low)
    if not guard:
        return (cam - low) / (high - low)
    return (cam - low) / (high - low + eps)


@pytest.mark.parametrize("solution", [nb09.reference_grad_cam, _learner_grad_cam,
                                      lambda m, x, layer, t=None: _learner_grad_cam(m, x, layer, t,
                                                                                    hook="full backward"),
                                      lambda m, x, layer, t=None: _learner_grad_cam(m, x, layer, t, eps=1e-5)],
                         ids=["reference", "tensor hook, eps 1e-7", "full backward hook", "eps 1e-5"])
def test_grad_cam_reference_and_independent_solutions_pass(capsys, solution):
    out = verdict(nb09.check_grad_cam, solution, capsys)
    assert out.count("✓") == len(nb09.GRADCAM_CASES) and "✗" not in out, out


def test_grad_cam_cases_show_what_they_claim():
    """Predicted-class maps positive everywhere (the ReLU is invisible there, as for MobileNetV2 on X-rays);
    the target class differs from every prediction, has maps with both signs, and none at all on the blank image."""
    model, x = nb09.gradcam_model(), nb09.gradcam_images()
    assert not model.training and isinstance(model[2][2], torch.nn.ReLU) and model[2][2].inplace
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    assert len(set(predicted.tolist())) > 1 and nb09.GRADCAM_TARGET not in predicted.tolist()
    activations, gradients, _ = gradcam.activations_and_gradients(model, x, model[2], None)
    raw = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    assert (raw > 0).all()
    activations, gradients, _ = gradcam.activations_and_gradients(model, x, model[2], nb09.GRADCAM_TARGET)
    raw = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)
    assert (raw[1] < 0).all()
    for i in (0, 2, 3):
        assert (raw[i] < 0).any() and (raw[i] > 0).any()
    maps = nb09.reference_grad_cam(model, x, model[2], nb09.GRADCAM_TARGET)
    assert maps.shape == (4, 6, 8) and np.array_equal(maps[1], np.zeros((6, 8)))
    assert np.allclose(maps[[0, 2, 3]].max(axis=(1, 2)), 1) and maps.min() == 0


def test_gradcam_model_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    a, b = nb09.gradcam_model(), nb09.gradcam_model()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("kwargs, hint", [
    ({"relu": False}, "BEFORE the min–max scaling"),
    ({"weights": "activations"}, "come from the GRADIENTS"),
    ({"weights": "pixelwise"}, "average the gradients over the positions first"),
    ({"weights": "pixelwise", "relu": False}, "average the gradients over the positions first"),
    ({"cls": "predicted"}, "not of each image's predicted class"),
    ({"score": "softmax"}, "before the softmax"),
    ({"score": "all logits"}, "not the sum of all the logits"),
    ({"norm": "none"}, "scale each map to [0, 1]"),
    ({"norm": "max"}, "subtracts the minimum first"),
    ({"norm": "batch"}, "per image"),
    ({"guard": False}, "divide by max − min only where it is > 0"),
    ({"eps": 1e-3}, "must be tiny next to max − min"),
    ({"eval_mode": False}, "eval mode"),
    ({"remove": False}, "remove every hook"),
    ({"shape": "upsampled"}, "no upsampling"),
    ({"shape": "keepdim"}, "drop the channel axis"),
])
def test_grad_cam_typical_mistakes(capsys, kwargs, hint):
    def wrong(model, images, layer, target=None):
        return _learner_grad_cam(model, images, layer, target, **kwargs)
    out = verdict(nb09.check_grad_cam, wrong, capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, x, layer, t=None: None, "forget to `return`"),
    (lambda m, x, layer, t=None: _learner_grad_cam(m, x, layer, t)[0], "not only the first"),
    (lambda m, x, layer, t=None: _learner_grad_cam(m, x, layer, t).mean(dim=0, keepdim=True), "alpha_k = mean"),
])
def test_grad_cam_wrong_returns(capsys, wrong, hint):
    out = verdict(nb09.check_grad_cam, wrong, capsys)
    assert "✗" in out and hint in out, out


def test_grad_cam_that_changes_the_weights_is_caught(capsys):
    def step(model, images, layer, target=None):
        maps = _learner_grad_cam(model, images, layer, target)
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad  # an optimizer step left in by mistake
        return maps
    out = verdict(nb09.check_grad_cam, step, capsys)
    assert "✗" in out and "only reads the model" in out, out


# ---------------------------------------------------------------- 9.3 operating_point_on_test

def _learner_operating_point(y_val, s_val, y_test, s_test, *, choose_on="val", fixed=None, rule=">=",
                             report_on="test", swap=False):
    """Youden's threshold via sklearn's roc_curve, metrics by hand, with one mistake switched on."""
    y_choose, s_choose = (y_val, s_val) if choose_on == "val" else (y_test, s_test)
    fpr, tpr, thresholds = roc_curve(y_choose, s_choose)
    t = float(thresholds[np.argmax(tpr - fpr)]) if fixed is None else fixed
    y, s = (y_test, s_test) if report_on == "test" else (y_val, s_val)
    pred = s >= t if rule == ">=" else s > t
    tp, tn = np.sum(pred & (y == 1)), np.sum(~pred & (y == 0))
    sens, spec = tp / np.sum(y == 1), tn / np.sum(y == 0)
    if swap:
        sens, spec = spec, sens
    return {"threshold": t, "sensitivity": sens, "specificity": spec, "acc": (tp + tn) / len(y)}


def test_operating_point_reference_and_an_independent_solution_pass(capsys):
    for solution in (nb09.reference_operating_point_on_test, _learner_operating_point):
        out = verdict(nb09.check_operating_point_on_test, solution, capsys)
        assert out.count("✓") == 2 and "✗" not in out, out


def test_operating_point_hand_case_by_hand():
    y_val, s_val, y_test, s_test = nb09.operating_point_hand_case()
    assert medical.youden_threshold(y_val, s_val) == 0.70 and medical.youden_threshold(y_test, s_test) == 0.38
    op = nb09.reference_operating_point_on_test(y_val, s_val, y_test, s_test)
    # test positives >= 0.70: 0.73, 0.85 of 7; negatives below 0.70: 7 of 9 (0.70 itself and 0.78 are positive)
    assert op["threshold"] == 0.70
    assert op["sensitivity"] == pytest.approx(2 / 7) and op["specificity"] == pytest.approx(7 / 9)
    assert op["acc"] == pytest.approx(9 / 16)
    assert 0.70 in s_test  # so "score > threshold" gives another answer
    # the Youden maximum on validation is unique (J = 0.8, next 0.714), so any correct method finds 0.70
    fpr, tpr, thresholds = roc_curve(y_val, s_val)
    j = np.sort(tpr - fpr)
    assert j[-1] == pytest.approx(0.8) and j[-2] < j[-1] - 0.05


def test_operating_point_random_case_thresholds_differ():
    y_val, s_val, y_test, s_test = nb09.operating_point_random_case()
    t_val, t_test = medical.youden_threshold(y_val, s_val), medical.youden_threshold(y_test, s_test)
    assert abs(t_val - t_test) > 0.1
    for y, s in ((y_val, s_val), (y_test, s_test)):
        fpr, tpr, _ = roc_curve(y, s)
        j = np.sort(tpr - fpr)
        assert j[-1] > j[-2] + 1e-9  # a unique maximum: roc_curve's argmax and youden_threshold agree


@pytest.mark.parametrize("kwargs, hint", [
    ({"choose_on": "test"}, "chosen on TEST"),
    ({"fixed": 0.5}, "not a fixed 0.5"),
    ({"report_on": "val"}, "must be computed on TEST"),
    ({"rule": ">"}, "score >= threshold"),
    ({"swap": True}, "sensitivity and specificity are swapped"),
])
def test_operating_point_typical_mistakes(capsys, kwargs, hint):
    def wrong(y_val, s_val, y_test, s_test):
        return _learner_operating_point(y_val, s_val, y_test, s_test, **kwargs)
    out = verdict(nb09.check_operating_point_on_test, wrong, capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda yv, sv, yt, st: (0.7, 0.3, 0.8), "a dict with keys"),
    (lambda yv, sv, yt, st: {"threshold": 0.7, "sens": 0.3}, "a dict with keys"),
    (lambda yv, sv, yt, st: {**_learner_operating_point(yv, sv, yt, st), "threshold": 0.6},
     "maximises J"),
    (lambda yv, sv, yt, st: {**_learner_operating_point(yv, sv, yt, st), "acc": 0.1}, "the threshold is right"),
])
def test_operating_point_wrong_returns(capsys, wrong, hint):
    out = verdict(nb09.check_operating_point_on_test, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- quizzes

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb09.check_quiz_9_1, 0.625, 0.375, "always saying NORMAL"),
    (nb09.check_quiz_9_1, 0.625, 62.5, "not a percentage"),
    (nb09.check_quiz_9_1, 0.625, 0.5, "390 / 624"),
    (nb09.check_quiz_9_2, "b", "a", "0 = malignant"),
    (nb09.check_quiz_9_3, 0.2, 0.95, "0.95 is the sensitivity"),
    (nb09.check_quiz_9_3, 0.2, 0.8, "0.80 is the specificity"),
    (nb09.check_quiz_9_3, 0.2, 0.5, "Bayes"),
    (nb09.check_quiz_9_3, 0.2, 0.21, "0.0475 / 0.2375"),  # outside the 0.005 tolerance
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)


def test_quiz_9_3_tolerance_is_half_a_percent(capsys):
    for answer, ok in ((0.2049, True), (0.1951, True), (0.2051, False), (0.1949, False)):
        nb09.check_quiz_9_3(lambda: answer)
        assert ("✓" in capsys.readouterr().out) == ok, answer


def test_quiz_answers_computed():
    assert 390 / (234 + 390) == 0.625
    # PPV by counting 1,000 children: 50 with pneumonia (47.5 found), 950 without (190 false positives)
    assert 47.5 / (47.5 + 0.2 * 950) == pytest.approx(0.2)
    assert FLAGS["breastmnist"]["labels"][0] == "malignant" and medical.POSITIVE_LABEL["breastmnist"] == 0
    assert medical.positive_is_one(np.array([0, 1]), "breastmnist").tolist() == [1, 0]


def test_quiz_9_2_docstring_lists_the_options():
    doc = re.sub(r"\s+", " ", nb09.check_quiz_9_2.__doc__)
    for letter, text in nb09.QUIZ_9_2.items():
        assert f"{letter}) {text}" in doc
    assert set(nb09.QUIZ_9_2) == {"a", "b", "c", "d"}
