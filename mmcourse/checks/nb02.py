"""Checks for notebook 02_image_encoders (references: :mod:`mmcourse.image`)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mmcourse import checks, image

reference_to_model_input = image.to_model_input
reference_patchify = image.patchify
reference_vit_tokens = image.vit_tokens
reference_probe_accuracy = image.probe_with_cv

_MEAN = np.array(image.IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(image.IMAGENET_STD, dtype=np.float32)


def _photo() -> np.ndarray:
    """A small non-square 'photo' (5 × 7 pixels, RGB, uint8), so swapped axes show in the shape."""
    return np.random.default_rng(2).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def check_to_model_input(fn: Callable) -> None:
    """Check ``to_model_input(image)``: (H, W, 3) uint8 → (3, H, W) float32, normalised with ImageNet mean/std."""
    name = "to_model_input"
    photo = _photo()
    found = checks.attempt(name, fn, photo.copy(), fallback="mmcourse.image.to_model_input")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the result?")
        return
    if not hasattr(found, "shape"):
        checks.failed(name, "a torch tensor (3, H, W)", type(found).__name__, "return a torch.Tensor")
        return
    h, w, c = photo.shape
    shape = tuple(found.shape)
    if shape != (c, h, w):
        if shape == (h, w, c):
            hint = ("the result is still channels-last (H, W, C) like NumPy/PIL; PyTorch wants channels "
                    "first: `.permute(2, 0, 1)`")
        elif shape == (c, w, h):
            hint = ("height and width are swapped: `.T` or `.permute(2, 1, 0)` reverses all axes; "
                    "use `.permute(2, 0, 1)` to move only the channel axis to the front")
        else:
            hint = "the input is (H, W, 3); the output must have the same pixels as (3, H, W)"
        checks.failed(name, f"shape {(c, h, w)}", f"shape {shape}", hint)
        return
    dtype = found.dtype
    if dtype in (torch.uint8, np.uint8) or (isinstance(dtype, np.dtype) and np.issubdtype(dtype, np.integer)) \
            or (isinstance(dtype, torch.dtype) and not dtype.is_floating_point):
        checks.failed(name, "dtype float32", f"dtype {dtype}",
                      "convert to float before dividing (`.float()`): uint8 holds only whole numbers 0..255 "
                      "and wraps around on subtraction")
        return
    if dtype not in (torch.float32, np.float32):
        checks.failed(name, "dtype float32", f"dtype {dtype}",
                      "the model's weights are float32; use `.float()` / `torch.float32` (NumPy's default is float64)")
        return
    x = photo.astype(np.float32).transpose(2, 0, 1)  # (C, H, W), 0..255
    mean, std = _MEAN[:, None, None], _STD[:, None, None]
    mistakes = [
        (x / 255.0, "you scaled to [0, 1] but forgot the normalisation: subtract the ImageNet mean and "
                    "divide by the std, per channel"),
        ((x - mean) / std, "you forgot to divide by 255 first: mean and std are given for pixel values in [0, 1]"),
        (x / 255.0 - mean, "you subtracted the mean but did not divide by the std"),
        ((x / 255.0 - mean[::-1]) / std[::-1], "the mean/std are in RGB order (R first); you used them reversed (BGR)"),
        ((x / 255.0 - _MEAN.mean()) / _STD.mean(), "normalise each channel with its own mean and std "
                                                  "(shape them (3, 1, 1) so they broadcast over H and W)"),
    ]
    checks.close(name, found, image.to_model_input(photo), atol=1e-5, mistakes=mistakes,
                 hint="expected (x / 255 − mean[c]) / std[c] for channel c")


def _patch_input() -> torch.Tensor:
    # 2 images, 3 channels, 8 × 12 pixels: with P = 4 a 2 × 3 grid of patches (not square on purpose)
    return torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12) / 100.0


def check_patchify(fn: Callable) -> None:
    """Check ``patchify(images, patch)``: (B, C, H, W) → (B, N, C·P·P), raster order, (c, row, col) inside a patch."""
    name = "patchify"
    x, p = _patch_input(), 4
    b, c, h, w = x.shape
    gh, gw, n, d = h // p, w // p, (h // p) * (w // p), c * p * p
    found = checks.attempt(name, fn, x.clone(), p, fallback="mmcourse.image.patchify")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the patches?")
        return
    shape = tuple(getattr(found, "shape", ()))
    if shape != (b, n, d):
        if shape == (b, d, n):
            hint = "that is `F.unfold`'s layout (B, C·P·P, N); transpose the last two axes"
        elif len(shape) == 3 and shape[0] == b and shape[2] == d and shape[1] in {
                (gh - 1) * (gw - 1), (gh + 1) * (gw + 1), n - 1, n + 1, (gh - 1) * gw, gh * (gw - 1)}:
            hint = (f"off by one in the patch count: a {h}×{w} image has {gh}×{gw} = {n} patches of {p}×{p}; "
                    f"`range(0, H, P)` gives the {gh} row starts (not `range(0, H - P, P)`)")
        elif len(shape) > 3 and int(np.prod(shape[2:])) == d:
            hint = "flatten each patch into one vector of C·P·P numbers"
        elif len(shape) == 3 and shape[1] == h * w // p:
            hint = f"a patch has P·P = {p * p} pixels: the count is (H/P)·(W/P), not H·W/P"
        else:
            hint = f"N = (H/P)·(W/P) = {n} patches, each with C·P·P = {d} numbers"
        checks.failed(name, f"shape {(b, n, d)}", f"shape {shape}", hint)
        return
    grid = x.reshape(b, c, gh, p, gw, p)
    mistakes = [
        (grid.permute(0, 2, 4, 3, 5, 1).reshape(b, n, d),
         "each patch is flattened as (row, column, channel); flatten it as (channel, row, column), the "
         "layout of a Conv2d weight (D, C, P, P) — permute to (B, gh, gw, C, P, P) before reshaping"),
        (grid.permute(0, 4, 2, 1, 3, 5).reshape(b, n, d),
         "wrong patch order: number the patches row by row (left to right, then the next row), "
         "i.e. loop over the grid rows outside and the columns inside"),
        (x.reshape(b, n, d),
         "a plain reshape does not cut the image into squares: it mixes pixels of different patches. "
         "Split H into (H/P, P) and W into (W/P, P), permute, then reshape"),
        (grid.permute(0, 2, 4, 1, 5, 3).reshape(b, n, d),
         "inside a patch, rows and columns are swapped: flatten as (channel, row, column)"),
    ]
    checks.close(name, found, image.patchify(x, p), mistakes=mistakes,
                 hint="compare with torch.nn.functional.unfold(images, P, stride=P).transpose(1, 2)")


def _token_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 12, generator=g)
    p, dim = 4, 5  # D = 5 ≠ C·P·P = 48, so a missing transpose fails loudly
    n = (8 // p) * (12 // p)
    weight = torch.randn(dim, 3 * p * p, generator=g) * 0.1
    bias = torch.randn(dim, generator=g)
    cls = torch.randn(dim, generator=g)
    pos = torch.randn(n + 1, dim, generator=g)
    return x, weight, bias, cls, pos, p


def check_vit_tokens(fn: Callable) -> None:
    """Check ``vit_tokens(images, weight, bias, cls_token, pos_embed, patch)`` → (B, N+1, D)."""
    name = "vit_tokens"
    x, weight, bias, cls, pos, p = _token_inputs()
    found = checks.attempt(name, fn, x.clone(), weight, bias, cls, pos, p, fallback="mmcourse.image.vit_tokens")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the tokens?")
        return
    b, n1, dim = x.shape[0], pos.shape[0], weight.shape[0]
    shape = tuple(getattr(found, "shape", ()))
    if shape != (b, n1, dim):
        if shape == (b, n1 - 1, dim):
            hint = (f"off by one: {n1 - 1} patch tokens plus the class token make N + 1 = {n1}; "
                    "prepend `cls_token` to the sequence (torch.cat along dim=1)")
        elif shape == (b, n1 + 1, dim):
            hint = "one token too many: prepend the class token once, before adding the position embeddings"
        else:
            hint = "patchify → project with weight.T and bias → prepend the class token → add pos_embed"
        checks.failed(name, f"shape {(b, n1, dim)}", f"shape {shape}", hint)
        return
    patches = image.patchify(x, p)
    proj = patches @ weight.T + bias
    clsb = cls.expand(b, 1, dim)
    mistakes = [
        (torch.cat([clsb, proj], 1), "you forgot to add the position embeddings `pos_embed`: without them "
                                     "attention cannot tell where a patch was"),
        (torch.cat([clsb, patches @ weight.T], 1) + pos, "the projection needs its bias: `@ weight.T + bias`"),
        (torch.cat([clsb, proj + pos[1:]], 1), "add the position embeddings to the class token too (row 0 of pos_embed)"),
        (torch.cat([clsb, proj + pos[:-1]], 1), "add pos_embed after prepending the class token: its row 0 is "
                                                "the class token's, rows 1..N the patches'"),
        (torch.cat([proj, clsb], 1) + pos, "the class token goes first (position 0), not last"),
    ]
    checks.close(name, found, image.vit_tokens(x, weight, bias, cls, pos, p), atol=1e-5, mistakes=mistakes,
                 hint="z0 = [cls; patches @ weight.T + bias] + pos_embed")


def _probe_data():
    rng = np.random.default_rng(0)
    d = 60
    w = np.zeros(d)
    w[:6] = 1.0
    scales = np.geomspace(0.1, 30, d)  # features on very different scales, as real CNN features are

    def draw(n):
        z = rng.normal(size=(n, d))
        y = (z @ w + 0.8 * rng.normal(size=n) > 0).astype(int)
        return z * scales, y

    x_tr, y_tr = draw(80)  # about as many examples as dimensions: regularisation (C) matters
    x_ev, y_ev = draw(300)
    # 100 extreme evaluation rows: a probe fitted on the training data alone scores the original rows
    # exactly as before, but a scaler that also saw the evaluation set is dominated by them
    x_out = rng.normal(size=(100, d)) * scales * 1000
    y_out = rng.integers(0, 2, size=100)
    return x_tr, y_tr, x_ev, y_ev, x_out, y_out


def _probe_at(x_tr, y_tr, x_ev, y_ev, c, scale=True, score_train=False) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = LogisticRegression(C=c, max_iter=2000)
    clf = make_pipeline(StandardScaler(), clf) if scale else clf
    clf.fit(x_tr, y_tr)
    return float(clf.score(x_tr, y_tr) if score_train else clf.score(x_ev, y_ev))


def _pair(name: str, found) -> tuple[float, float] | None:
    """(accuracy, C) from the learner's answer, or None after a ✗ verdict."""
    if isinstance(found, (tuple, list)) and len(found) == 2:
        try:
            return float(found[0]), float(found[1])
        except (TypeError, ValueError):
            pass
    if isinstance(found, (float, int, np.floating)):
        checks.failed(name, "a pair (accuracy, chosen C)", f"one number {float(found):.4g}",
                      "return the chosen C as well: `return accuracy, best_c`")
    else:
        checks.failed(name, "a pair (accuracy, chosen C) of numbers", type(found).__name__,
                      "return `accuracy, best_c`: the evaluation accuracy (a float in [0, 1]) and the C you chose")
    return None


def check_probe_accuracy(fn: Callable) -> None:
    """Check ``probe_accuracy(x_train, y_train, x_eval, y_eval, cs) -> (accuracy, C)``.

    C must be chosen on the training data only, and no step may see the evaluation set: the check
    calls the function again with the evaluation labels flipped (the chosen C must not change) and
    with extreme rows appended to the evaluation set (the accuracy must be what a probe fitted on
    the training data alone gets — a scaler fitted on train + eval fails this).
    """
    name = "probe_accuracy"
    x_tr, y_tr, x_ev, y_ev, x_out, y_out = _probe_data()
    cs = image.PROBE_CS
    found = checks.attempt(name, fn, x_tr.copy(), y_tr.copy(), x_ev.copy(), y_ev.copy(), cs=cs,
                           fallback="mmcourse.image.probe_with_cv")
    if checks.is_pending(found):
        return
    pair = _pair(name, found)
    if pair is None:
        return
    value, c = pair
    if not any(np.isclose(c, cand) for cand in cs):
        checks.failed(name + " (chosen C)", f"one of {list(cs)}", f"{c:g}",
                      "the second value is the C you chose among `cs`; return it as given")
        return
    ref = _probe_at(x_tr, y_tr, x_ev, y_ev, c)
    mistakes = [(100 * ref, "return a fraction in [0, 1], not a percentage"),
                (1 - ref, "that is the error rate; return the accuracy (fraction of correct predictions)")]
    train_acc = _probe_at(x_tr, y_tr, x_ev, y_ev, c, score_train=True)
    if abs(train_acc - ref) > 0.02:
        mistakes.insert(0, (train_acc, "that is the accuracy on the TRAINING set; after choosing C, fit on all "
                                       "training data and score on x_eval, y_eval"))
    raw = _probe_at(x_tr, y_tr, x_ev, y_ev, c, scale=False)
    if abs(raw - ref) > 0.02:
        mistakes.append((raw, "standardise the features first (a StandardScaler in a pipeline with the "
                              "logistic regression)"))
    if not checks.close(name + " (accuracy at your C)", value, ref, atol=0.02, rtol=0, mistakes=mistakes,
                        hint=f"with C = {c:g}: standardise + LogisticRegression(C, max_iter=2000) fitted on the "
                             "training set, accuracy on the evaluation set"):
        return
    flipped = checks.attempt(name, fn, x_tr.copy(), y_tr.copy(), x_ev.copy(), 1 - y_ev, cs=cs)
    if checks.is_pending(flipped) or (pair_f := _pair(name, flipped)) is None:
        return
    if not np.isclose(pair_f[1], c):
        checks.failed(name + " (C chosen without the evaluation set)", f"C = {c:g} again (the training data did "
                      "not change)", f"C = {pair_f[1]:g} when only the evaluation labels changed",
                      "C was chosen by its evaluation score, which leaks the evaluation set into the model: "
                      "choose it by cross-validation on the training data only (e.g. cross_val_score or "
                      "GridSearchCV over `cs`); if you shuffle the folds, fix random_state")
        return
    x_aug, y_aug = np.vstack([x_ev, x_out]), np.concatenate([y_ev, y_out])
    more = checks.attempt(name, fn, x_tr.copy(), y_tr.copy(), x_aug, y_aug, cs=cs)
    if checks.is_pending(more) or (pair_m := _pair(name, more)) is None:
        return
    want = _probe_at(x_tr, y_tr, x_aug, y_aug, c)
    if not np.isclose(pair_m[1], c) or abs(pair_m[0] - want) > 0.02:
        checks.failed(name + " (nothing fitted on the evaluation set)",
                      f"accuracy {want:.3f} with C = {c:g} (the training data did not change)",
                      f"accuracy {pair_m[0]:.3f} with C = {pair_m[1]:g} after extreme rows were appended to the "
                      "evaluation set",
                      "a step saw the evaluation features: fit the StandardScaler on the training data only "
                      "(put it in the pipeline, so each cross-validation fold fits its own scaler too), then "
                      "only transform/score the evaluation set")
        return
    checks.passed(name + " (C chosen on train only; eval set unseen)",
                  f"C = {c:g}, accuracy {value:.3f}")


# ---------------------------------------------------------------- quiz items (issue 11, A.3)

def check_quiz_2_1(fn: Callable) -> None:
    """Quiz 2.1: tokens of a ViT-B/16 for a 320×240 image, class token included (a number)."""
    checks.quiz(
        "quiz 2.1 (tokens of a non-square image)", fn, 301,
        "N = (H/P)·(W/P) = (240/16)·(320/16) = 15·20 = 300 patch tokens, plus one class token = 301. "
        "(A ViT trained at 224 px has 197 position embeddings, so it must interpolate them for this size.)",
        rel_tol=1e-3)


def check_quiz_2_2(fn: Callable) -> None:
    """Quiz 2.2: a scaler fitted on train + validation (multiple choice)."""
    checks.quiz(
        "quiz 2.2 (a scaler fitted on train + validation)", fn, "b",
        "no label is needed for a leak: the validation features' mean and spread shaped the inputs the "
        "probe was trained on, so the validation score no longer measures data the model never saw. With "
        "a few outlying validation images the effect is large (the check of Exercise 2.4 shows it). Fit "
        "every step — scaler, PCA, the choice of C — on training data only.",
        choices={"a": "harmless: the scaler never sees a label",
                 "b": "a leak: validation statistics shaped the training inputs, so the validation score is "
                      "no longer an honest estimate",
                 "c": "a problem only for tree-based models, which are sensitive to scale"})


def check_quiz_2_3(fn: Callable) -> None:
    """Quiz 2.3: by what factor raw 0..255 pixels spread wider than normalised ones in the red channel."""
    checks.quiz(
        "quiz 2.3 (raw pixels: how much too large?)", fn, 255 * image.IMAGENET_STD[0],
        "x̃ = (x/255 − μ)/σ, so x = 255·(σ·x̃ + μ): the spread grows by 255·σ_R = 255·0.229 ≈ 58 (57–58 for "
        "the three channels) and every value is shifted by 255·μ ≈ 104–124 — not '×255'. §8 measures what "
        "that does to the first layer.", rel_tol=0.03)
