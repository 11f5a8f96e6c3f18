"""Checks for notebook 06_gradient_derivation, and its golden values.

The *golden problem* (in the style of the CS231n assignments) is a tiny fusion head with
every input and parameter taken from ``np.linspace``, so its loss and gradient norm are
fixed numbers that the notebook prints and these checks assert.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmcourse import checks, losses

# ----------------------------------------------------------------------------------------
# golden values
# ----------------------------------------------------------------------------------------

#: mean BCE loss of the golden problem (float64)
GOLDEN_LOSS = 0.7571328001888581
#: ‖(∂L/∂W1, ∂L/∂b1, ∂L/∂W2, ∂L/∂b2)‖₂ of the golden problem
GOLDEN_GRAD_NORM = 0.3080271263833086
PARAM_NAMES = ("W1", "b1", "W2", "b2")


def golden_problem() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """``(img, txt, params, d)``: 4 pairs, 3-d image and 2-d text features, 5 hidden units."""
    n, du, dv, hidden = 4, 3, 2, 5
    img = np.linspace(-1.0, 1.0, n * du).reshape(n, du)
    txt = np.linspace(-0.3, 0.7, n * dv).reshape(n, dv)
    params = {
        "W1": np.linspace(-0.4, 0.6, (du + dv) * hidden).reshape(du + dv, hidden),
        "b1": np.linspace(-0.1, 0.1, hidden),
        "W2": np.linspace(-0.7, 0.5, hidden),
        "b2": np.array(0.05),
    }
    d = np.array([1.0, 0.0, 1.0, 0.0])
    return img, txt, params, d


def grad_norm(grads: dict[str, np.ndarray]) -> float:
    """The L2 norm of all parameter gradients taken together."""
    return float(np.sqrt(sum(float(np.sum(np.asarray(grads[k], dtype=np.float64) ** 2))
                             for k in PARAM_NAMES)))


def check_golden(loss: float, grads: dict[str, np.ndarray]) -> None:
    """Compare a computed golden loss and gradient norm with the stated golden values."""
    if checks.close("golden loss", float(loss), GOLDEN_LOSS, atol=1e-10, rtol=1e-9,
                    hint="compute the loss in float64 with bce_with_logits on the golden problem"):
        checks.close("golden gradient norm", grad_norm(grads), GOLDEN_GRAD_NORM,
                     atol=1e-10, rtol=1e-9,
                     hint="the gradients must come from ∂L/∂z = (d̂ − d)/N pushed through the head")


# ----------------------------------------------------------------------------------------
# exercise 6.1: ∂L/∂z for BCE
# ----------------------------------------------------------------------------------------


def check_bce_grad_z(fn: Callable) -> None:
    """Check ``bce_grad_z(d_hat, d)`` = (d̂ − d)/N."""
    name = "bce_grad_z"
    d_hat = losses.sigmoid(np.linspace(-2.0, 3.0, 6))
    d = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])  # a soft label too: the seeds allow d ∈ [0, 1]
    found = checks.attempt(name, fn, d_hat.copy(), d.copy(), fallback="mmcourse.losses.bce_grad_z")
    if checks.is_pending(found):
        return
    n = len(d)
    sig_prime = d_hat * (1 - d_hat)
    mistakes = [
        ((d - d_hat) / n, "sign error: ∂L/∂z = d̂ − d (the loss falls when z moves towards the label)"),
        (d_hat - d, "forgot to divide by the batch size N: the loss is a mean over the batch"),
        ((d_hat - d) * sig_prime / n, "you multiplied by σ'(z) = d̂(1 − d̂) once too often: it already "
                                      "cancelled the denominators d̂(1 − d̂) of ∂ℓ/∂d̂"),
        (losses.bce_grad_dhat(d_hat, d), "that is ∂L/∂d̂ (the seeds' bracket); multiply by "
                                         "∂d̂/∂z = σ'(z) = d̂(1 − d̂) and simplify"),
        ((d_hat - d) / d_hat.size / sig_prime, "you divided by σ'(z) instead of multiplying"),
        ((d_hat - d).sum() / n * np.ones(n), "return one gradient per example, not the batch sum"),
    ]
    checks.close(name, found, losses.bce_grad_z(d_hat, d), atol=1e-12, rtol=1e-9, mistakes=mistakes,
                 hint="chain rule: ∂L/∂z_i = (1/N)·∂ℓ/∂d̂_i·σ'(z_i); with σ'(z) = d̂(1 − d̂) the denominators of "
                      "∂ℓ/∂d̂ cancel and leave (d̂_i − d_i)/N, one value per example")


# ----------------------------------------------------------------------------------------
# exercise 6.2: backprop through the fusion head
# ----------------------------------------------------------------------------------------


def check_fusion_head_backward(fn: Callable) -> None:
    """Check ``fusion_head_backward(cache, dz)`` on the golden problem, gradient by gradient."""
    name = "fusion_head_backward"
    img, txt, params, d = golden_problem()
    z, cache = losses.fusion_head_forward(img, txt, params)
    dz = losses.bce_grad_z(losses.sigmoid(z), d)
    found = checks.attempt(name, fn, {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                      for k, v in cache.items()}, dz.copy(),
                           fallback="mmcourse.losses.fusion_head_backward")
    if checks.is_pending(found):
        return
    if not isinstance(found, dict):
        checks.failed(name, "a dict of gradients", type(found).__name__,
                      "return {'W1': dW1, 'b1': db1, 'W2': dW2, 'b2': db2, 'img': dimg, 'txt': dtxt}")
        return
    missing = [k for k in (*PARAM_NAMES, "img", "txt") if k not in found]
    if missing:
        checks.failed(name, "keys W1, b1, W2, b2, img, txt", f"missing {missing}",
                      "return the gradient of every parameter and of both inputs")
        return
    want = losses.fusion_head_backward(cache, dz)
    x, h, W1, W2 = cache["x"], cache["h"], cache["W1"], cache["W2"]
    dh = np.outer(dz, W2)
    a = x @ W1 + params["b1"]
    da = dh * (1 - h**2)
    no_tanh = "you skipped the tanh: multiply dh by tanh'(a) = 1 − h² before going through W1"
    mistakes = {
        "W2": [(-want["W2"], "sign error"),
               (h.T @ dz / len(dz), "dz already carries the 1/N of the mean: do not divide again"),
               (h.mean(0) * dz.sum(), "∂L/∂W2 = hᵀ dz: multiply each example's h by its own dz, then sum")],
        "b2": [(np.asarray(dz.mean()), "sum dz over the batch; dz already carries the 1/N"),
               (np.asarray(-dz.sum()), "sign error")],
        "b1": [(da.mean(0), "sum da over the batch (axis 0); dz already carries the 1/N"),
               (dh.sum(0), no_tanh),
               ((dh * (1 - a**2)).sum(0), "tanh'(a) is 1 − tanh(a)² = 1 − h², not 1 − a²")],
        "W1": [(x.T @ dh, no_tanh),
               (x.T @ (dh * (1 - a**2)), "tanh'(a) is 1 − tanh(a)² = 1 − h², not 1 − a²"),
               (x.T @ (dh * h * (1 - h)), "that is the sigmoid's derivative; for tanh it is 1 − h²"),
               (da.T @ x, "transposed weight gradient: ∂L/∂W1 = xᵀ da (inputs on the left), "
                          "not daᵀ x"),
               (x.T @ da / len(dz), "dz already carries the 1/N of the mean: do not divide again")],
        "img": [((dh @ W1.T)[:, :img.shape[1]], no_tanh),
                ((da @ W1)[:, :img.shape[1]], "multiply by the transposed weight: dx = da W1ᵀ, not da W1"),
                (-want["img"], "sign error")],
        "txt": [((dh @ W1.T)[:, img.shape[1]:], no_tanh),
                ((da @ W1.T)[:, :txt.shape[1]], "the text gradient is the *last* columns of dx = da W1ᵀ "
                                                "(x = [img ; txt])")],
    }
    hints = {"W1": "∂L/∂W1 = xᵀ da has the shape of W1, (D, K)",
             "W2": "∂L/∂W2 = hᵀ dz has the shape of W2, (K,)",
             "b1": "∂L/∂b1 = Σ_i da_i, shape (K,)",
             "b2": "∂L/∂b2 = Σ_i dz_i, a scalar",
             "img": "dx = da W1ᵀ, then split its columns: the first D_img belong to the image",
             "txt": "dx = da W1ᵀ, then split its columns: the last D_txt belong to the text"}
    for key in ("W2", "b2", "b1", "W1", "img", "txt"):
        if not checks.close(f"{name}: ∂L/∂{key}", np.asarray(found[key]), want[key], atol=1e-12, rtol=1e-8,
                            mistakes=mistakes[key], hint=hints[key]):
            return
    checks.close(f"{name}: golden gradient norm", grad_norm(found), GOLDEN_GRAD_NORM,
                 atol=1e-10, rtol=1e-9)


# ----------------------------------------------------------------------------------------
# exercise 6.3: softmax cross-entropy
# ----------------------------------------------------------------------------------------


def _onehot(y: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[y]


def check_softmax_ce_grad(fn: Callable) -> None:
    """Check ``softmax_ce_grad(z, y)`` = (softmax(z) − onehot(y))/N, also for huge logits."""
    name = "softmax_ce_grad"
    z = np.linspace(-2.0, 2.5, 12).reshape(3, 4)
    y = np.array([3, 0, 2])
    found = checks.attempt(name, fn, z.copy(), y.copy(), fallback="mmcourse.losses.softmax_ce_grad")
    if checks.is_pending(found):
        return
    n, c = z.shape
    p, Y = losses.softmax(z, axis=1), _onehot(y, c)
    mistakes = [
        ((losses.softmax(z, axis=0) - Y) / n, "wrong axis in softmax: normalise each row (over the "
                                              "classes, axis=1), not each column"),
        (p - Y, "forgot to divide by the batch size N: the loss is a mean over the batch"),
        ((Y - p) / n, "sign error: the gradient is softmax(z) − y"),
        (p / n, "subtract the one-hot label: ∂L/∂z = softmax(z) − y"),
        ((p - Y) * p * (1 - p) / n, "do not multiply by the softmax derivative again: the log "
                                    "already cancelled it"),
    ]
    if not checks.close(name, found, losses.softmax_ce_grad(z, y), atol=1e-12, rtol=1e-9,
                        mistakes=mistakes):
        return
    big = checks.attempt(name, fn, z + 1000.0, y.copy())
    if not checks.is_pending(big):
        checks.close(name + " (logits + 1000: same gradient)", big, losses.softmax_ce_grad(z, y),
                     atol=1e-12, rtol=1e-9,
                     hint="softmax is shift-invariant: subtract each row's maximum before np.exp, "
                          "or exp overflows to inf and the result becomes nan")


# ----------------------------------------------------------------------------------------
# exercise 6.4: InfoNCE gradient
# ----------------------------------------------------------------------------------------


def check_infonce_grad(fn: Callable) -> None:
    """Check ``infonce_grad(S)`` for the symmetric InfoNCE loss on a logit matrix."""
    name = "infonce_grad"
    S = np.linspace(-1.5, 2.0, 16).reshape(4, 4)[:, [2, 0, 3, 1]]  # not symmetric, on purpose
    found = checks.attempt(name, fn, S.copy(), fallback="mmcourse.losses.infonce_grad")
    if checks.is_pending(found):
        return
    n = S.shape[0]
    eye = np.eye(n)
    pr, pc = losses.softmax(S, axis=1), losses.softmax(S, axis=0)
    mistakes = [
        ((pr - eye) / (2 * n), "you kept only the image→text (row) term; add the text→image term "
                               "(softmax over each column, axis=0) − I"),
        ((pr - eye) / n, "that is the one-directional InfoNCE; CLIP's loss averages both directions: "
                         "add ½(softmax over columns − I)/N and halve the row term"),
        ((pc - eye) / (2 * n), "you kept only the text→image (column) term; add the row term"),
        (((pr - eye) + (pc - eye)) / 2, "forgot to divide by the batch size N"),
        (((pr - eye) + (pc - eye)) / n, "forgot the ½: the loss is the mean of the two directions"),
        (((pr - eye) + (pc - eye).T) / (2 * n), "your text→image term is laid out like Sᵀ (softmax of S.T "
                                                "over rows): transpose it back, or take softmax(S, axis=0) "
                                                "directly, so that entry (i, j) belongs to S[i, j]"),
        (((pr - eye) + (pr - eye)) / (2 * n), "wrong axis: the second term normalises each column "
                                              "(axis=0), not each row"),
        ((2 * eye - pr - pc) / (2 * n), "sign error: the gradient is softmax − I"),
    ]
    checks.close(name, found, losses.infonce_grad(S), atol=1e-12, rtol=1e-9, mistakes=mistakes)


# ----------------------------------------------------------------------------------------
# exercise 6.5: one step of Adam + L2 or AdamW
# ----------------------------------------------------------------------------------------


def _adam_step(theta, grad, state, lr, lam, decoupled, betas=(0.9, 0.999), eps=1e-8, slip=None):
    """The reference step, or (``slip``) the step a typical mistake computes."""
    b1, b2 = betas
    theta, grad = np.asarray(theta, dtype=np.float64), np.asarray(grad, dtype=np.float64)
    in_gradient = decoupled if slip == "swapped" else not decoupled
    if slip == "no_decay":
        lam = 0.0
    if in_gradient:
        grad = grad + lam * theta
    state["t"] += 1
    state["m"] = b1 * state["m"] + (1 - b1) * grad
    state["v"] = b2 * state["v"] + (1 - b2) * grad ** 2
    if slip == "no_bias_correction":
        m_hat, v_hat = state["m"], state["v"]
    else:
        m_hat, v_hat = state["m"] / (1 - b1 ** state["t"]), state["v"] / (1 - b2 ** state["t"])
    step = lr * m_hat / (np.sqrt(v_hat) + eps)
    if in_gradient:
        return theta - step
    if slip == "decay_without_lr":
        return theta * (1 - lam) - step
    if slip == "decay_after":
        return (theta - step) * (1 - lr * lam)
    return theta * (1 - lr * lam) - step


def reference_adam_step(theta, grad, state, lr, lam, decoupled, betas=(0.9, 0.999), eps=1e-8):
    """One step of Adam + L2 (``decoupled=False``) or AdamW (``decoupled=True``), as PyTorch's
    ``torch.optim.Adam`` / ``torch.optim.AdamW`` take it; updates ``state`` ("t", "m", "v") in place
    and returns the new θ (notebook 06, §7)."""
    return _adam_step(theta, grad, state, lr, lam, decoupled, betas, eps)


#: the test problem of exercise 6.5: gradient c·(θ − target); the third weight has no loss gradient
_ADAM_THETA0 = np.array([2.0, -1.0, 1.5, 0.5, -0.5])
_ADAM_C = np.array([100.0, 1.0, 0.0, 0.01, 10.0])
_ADAM_TARGET = np.array([1.0, 0.0, 0.0, 0.0, 1.0])


def _adam_run(fn: Callable, decoupled: bool, lr: float = 0.1, lam: float = 0.5, steps: int = 3):
    theta, state = _ADAM_THETA0.copy(), {"t": 0, "m": 0.0, "v": 0.0}
    for _ in range(steps):
        grad = _ADAM_C * (theta - _ADAM_TARGET)
        theta = fn(theta.copy(), grad, state, lr, lam, decoupled)
        if theta is None:
            return None, state
        theta = np.asarray(theta, dtype=np.float64)
    return theta, state


def check_adam_step(fn: Callable) -> None:
    """Check ``adam_step(theta, grad, state, lr, lam, decoupled)`` over 3 steps of Adam + L2 and AdamW."""
    base = "adam_step"
    first = checks.attempt(base, _adam_run, fn, False, fallback="mmcourse.checks.nb06.reference_adam_step")
    if checks.is_pending(first):
        return
    slips = {
        "swapped": {False: "that is AdamW: with decoupled=False (Adam + L2) the decay is part of the gradient, "
                           "g = ∇L + λθ, and goes through the moments m and v",
                    True: "that is Adam + L2: with decoupled=True (AdamW) the decay must not go through "
                          "m̂/√v̂; shrink the weights directly, outside the adaptive step"},
        "no_decay": {False: "λ plays no part in your step: Adam + L2 adds λθ to the gradient",
                     True: "λ plays no part in your step: AdamW shrinks every weight each step"},
        "no_bias_correction": {d: "divide m by (1 − β1^t) and v by (1 − β2^t) (bias correction; t counts "
                                  "from 1 at the first step)" for d in (False, True)},
        "decay_without_lr": {True: "the decoupled decay is multiplied by the learning rate in PyTorch's "
                                   "AdamW: θ·(1 − lr·λ), not θ·(1 − λ)"},
        "decay_after": {True: "shrink θ_{t−1}, the weights before this step's update (as PyTorch does), "
                              "not the already updated weights"},
    }
    for decoupled, label in ((False, "decoupled=False: Adam + L2"), (True, "decoupled=True: AdamW")):
        name = f"{base} ({label}, 3 steps)"
        result = first if not decoupled else checks.attempt(name, _adam_run, fn, True)
        if checks.is_pending(result):
            return
        found, state = result
        if found is None:
            checks.failed(name, "the new θ", "None", "return the updated weights")
            return
        if not isinstance(state, dict) or state.get("t") != 3:
            checks.failed(name, "state['t'] == 3 after 3 steps", f"state {state!r:.80}",
                          "update `state` in place (state['t'] += 1, state['m'] = …, state['v'] = …): the "
                          "caller passes the same dict at every step, so a new dict is lost")
            return
        want, _ = _adam_run(reference_adam_step, decoupled)
        mistakes = [(_adam_run(lambda *a, s=slip: _adam_step(*a, slip=s), decoupled)[0], hint[decoupled])
                    for slip, hint in slips.items() if decoupled in hint]
        if not checks.close(name, found, want, atol=1e-10, rtol=1e-8, mistakes=mistakes,
                            hint="follow the update rules of §7 line by line; the only difference between "
                                 "the two is where λθ enters"):
            return


# ----------------------------------------------------------------------------------------
# quizzes
# ----------------------------------------------------------------------------------------


def check_quiz_6_1(fn: Callable) -> None:
    """∂L/∂z of one pair in a batch of N = 4 (d = 1, d̂ = 0.9)."""
    checks.quiz("quiz 6.1", fn, -0.025,
                       "∂L/∂z_i = (d̂_i − d_i)/N = (0.9 − 1)/4 = −0.025. Negative, so gradient descent raises z_i "
                       "towards the label; the 1/N is there because the risk is the mean over the batch "
                       "(−0.1 forgets it).")


def check_quiz_6_2(fn: Callable) -> None:
    """What a float32 gradient check with h = 1e-5 tells you."""
    checks.quiz(
        "quiz 6.2", fn, "b",
        "the rounding term of the central difference is about ε|L|/h; with float32's ε ≈ 1.2e-7 and "
        "h = 1e-5 that is about 1e-2·|L| — as large as the error you measured, whatever the gradient. "
        "A smaller h makes it worse (the term grows as 1/h). Redo the check in float64, where the same "
        "h gives about 1e-10.",
        choices={"a": "the hand-derived gradient is wrong",
                 "b": "nothing about the gradient yet: float32 rounding noise dominates; redo the check in float64",
                 "c": "h is too large: a check with h = 1e-8 in float32 will settle it"})


def check_quiz_6_3(fn: Callable) -> None:
    """The change of θ in one AdamW step on a weight with no loss gradient."""
    checks.quiz("quiz 6.3", fn, -0.02,
                       "AdamW shrinks θ by the factor (1 − ηλ) per step, outside the adaptive scaling, and its "
                       "Adam step is 0 (no loss gradient): θ changes by −ηλθ = −0.01 · 1 · 2 = −0.02. Adam + L2 "
                       "would move it by −η = −0.01 whatever λ is, since m̂/√v̂ = λθ/|λθ| = 1 at the first step.")
