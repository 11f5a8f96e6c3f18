"""Numeric gradient checking (notebook 06_gradient_derivation, "Checking gradients numerically").

A hand-derived gradient is only trusted once it agrees with a numeric one. The numeric
gradient uses *central differences* in float64,

    ∂f/∂x_i ≈ (f(x + h e_i) − f(x − h e_i)) / (2h),

whose error is O(h²) (truncation) plus O(ε_machine / h) (rounding); h = 1e-5 balances the two
in float64, and a correct gradient then agrees to a relative error of about 1e-7 or better.
The relative error is the one used in the CS231n assignments:

    rel_error(a, b) = max_i |a_i − b_i| / max(1e-8, |a_i| + |b_i|).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def rel_error(a, b) -> float:
    """Largest element-wise relative error ``|a − b| / max(1e-8, |a| + |b|)`` (notebook 06).

    Accepts NumPy arrays, torch tensors and Python numbers; shapes must match.
    """
    a = _as_float64(a)
    b = _as_float64(b)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))


def numeric_gradient(f: Callable[[np.ndarray], float | np.ndarray], x: np.ndarray,
                     h: float = 1e-5, df: np.ndarray | None = None) -> np.ndarray:
    """Central-difference gradient of ``f`` at ``x`` (notebook 06, "Checking gradients").

    ``f`` takes the array ``x`` and returns a scalar; then the result is ∂f/∂x, with the shape
    of ``x``. If ``f`` returns an array, pass the upstream gradient ``df`` (same shape as
    ``f(x)``) and the result is the vector–Jacobian product ∂(Σ df·f)/∂x.

    ``x`` is perturbed *in place* one entry at a time (so ``f`` may close over it, as a
    parameter of a model) and restored afterwards. It must be a float64 array: in float32 the
    rounding error of the difference quotient swamps the gradient.
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float64:
        raise TypeError("numeric_gradient needs a float64 NumPy array (perturbed in place); "
                        "convert with np.asarray(x, dtype=np.float64)")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old - h
        fm = np.array(f(x), dtype=np.float64, copy=True)
        x[i] = old
        diff = fp - fm
        grad[i] = (np.sum(diff * df) if df is not None else float(np.sum(diff))) / (2 * h)
        it.iternext()
    return grad


def check_gradients(f: Callable[[], float], params: Mapping[str, np.ndarray],
                    grads: Mapping[str, np.ndarray], h: float = 1e-5,
                    verbose: bool = False) -> dict[str, float]:
    """Relative error between analytic ``grads`` and numeric gradients of ``f`` (notebook 06).

    ``f()`` takes no argument and computes the loss from the arrays in ``params`` (which it
    closes over); each array is perturbed in place. Returns ``{name: rel_error}`` for every
    name in ``grads``; with ``verbose`` also prints one line per parameter.
    """
    errors: dict[str, float] = {}
    for name, analytic in grads.items():
        numeric = numeric_gradient(lambda _: f(), params[name], h=h)
        errors[name] = rel_error(analytic, numeric)
        if verbose:
            print(f"{name:>6s}: relative error {errors[name]:.2e}")
    return errors


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)
