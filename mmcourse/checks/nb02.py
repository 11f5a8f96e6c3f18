"""Checks for notebook 02_image_encoders (references: :mod:`mmcourse.image`)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mmcourse import checks, image

reference_to_model_input = image.to_model_input
reference_patchify = image.patchify
reference_vit_tokens = image.vit_tokens
reference_probe_accuracy = image.probe_accuracy

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

    x_tr, y_tr = draw(40)  # fewer examples than dimensions: the training set is fitted perfectly
    x_ev, y_ev = draw(300)
    return x_tr, y_tr, x_ev, y_ev


def check_probe_accuracy(fn: Callable) -> None:
    """Check ``probe_accuracy(x_train, y_train, x_eval, y_eval)``: standardise + logistic regression, eval accuracy."""
    name = "probe_accuracy"
    x_tr, y_tr, x_ev, y_ev = _probe_data()
    found = checks.attempt(name, fn, x_tr.copy(), y_tr.copy(), x_ev.copy(), y_ev.copy(),
                           fallback="mmcourse.image.probe_accuracy")
    if checks.is_pending(found):
        return
    try:
        value = float(found)
    except (TypeError, ValueError):
        checks.failed(name, "one number (the accuracy, a float in [0, 1])", f"{type(found).__name__}",
                      "return `clf.score(x_eval, y_eval)`, not the predictions")
        return
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref = image.probe_accuracy(x_tr, y_tr, x_ev, y_ev)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_tr, y_tr)
    train_acc = clf.score(x_tr, y_tr)
    raw = LogisticRegression(max_iter=2000).fit(x_tr, y_tr).score(x_ev, y_ev)
    mistakes = [
        (100 * ref, "return a fraction in [0, 1], not a percentage"),
        (1 - ref, "that is the error rate; return the accuracy (fraction of correct predictions)"),
    ]
    if abs(train_acc - ref) > 0.02:
        mistakes.insert(0, (train_acc, "that is the accuracy on the TRAINING set (a probe with more features than "
                                       "examples fits it perfectly); score on x_eval, y_eval"))
    if abs(raw - ref) > 0.02:
        mistakes.append((raw, "standardise the features first (StandardScaler fitted on x_train only)"))
    checks.close(name, value, ref, atol=0.02, rtol=0, mistakes=mistakes,
                 hint="make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x_train, y_train)"
                      ".score(x_eval, y_eval)")
