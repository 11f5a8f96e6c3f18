"""Checks for notebook 00_welcome (the warm-up exercise)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmcourse import checks


def reference_cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """cos(a, b) = a·b / (‖a‖ ‖b‖): the reference for the warm-up exercise."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def check_cosine_similarity(fn: Callable) -> None:
    """Check the learner's ``cosine_similarity(a, b)``; prints ✓ / ✗ with a hint / pending."""
    name = "cosine_similarity"
    a = np.array([3.0, 4.0, 0.0])
    b = np.array([1.0, 2.0, 2.0])
    found = checks.attempt(name, fn, a, b, fallback="mmcourse.checks.nb00.reference_cosine_similarity")
    if checks.is_pending(found):
        return
    try:
        value = float(found)
    except (TypeError, ValueError):
        checks.failed(name, "one number (a float)", f"{type(found).__name__} {found!r}",
                      "sum the element-wise products into a single number")
        return
    mistakes = [
        (a @ b, "that is the plain dot product: divide by both vectors' lengths (L2 norms)"),
        (a @ b / np.linalg.norm(a), "you divided by ‖a‖ only; divide by ‖b‖ as well"),
        (a @ b / np.linalg.norm(b), "you divided by ‖b‖ only; divide by ‖a‖ as well"),
        (a @ b / (np.abs(a).sum() * np.abs(b).sum()), "use the L2 norm (square root of the sum of squares), not the L1 norm"),
        (a @ b / (a @ a * (b @ b)), "divide by the norms, not the squared norms: take the square root"),
    ]
    if not checks.close(name + " (3-4-0 vs 1-2-2)", value, reference_cosine_similarity(a, b),
                        mistakes=mistakes):
        return
    scale = checks.attempt(name, fn, 10 * a, b)
    if not checks.is_pending(scale):
        checks.close(name + " (scaling a by 10 must not change it)", float(scale),
                     reference_cosine_similarity(a, b),
                     hint="cosine similarity ignores the vectors' lengths; only the angle counts")
