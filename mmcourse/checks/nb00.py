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


# ---------------------------------------------------------------- quiz items (issue 11, A.3)

def check_quiz_0_1(fn: Callable) -> None:
    """Quiz 0.1: ‖a − b‖² for two unit vectors with cosine 0.6 (a number)."""
    checks.quiz(
        "quiz 0.1 (distance of unit vectors)", fn, 0.8,
        "‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b = 1 + 1 − 2·0.6 = 0.8. For unit vectors the squared Euclidean "
        "distance is 2 − 2 cos, so ranking by cosine and ranking by distance give the same order — "
        "which is why normalised embeddings can use either.")


def check_quiz_0_2(fn: Callable) -> None:
    """Quiz 0.2: cosine_similarity(a, −3a) (a number)."""
    checks.quiz(
        "quiz 0.2 (cosine of a and −3a)", fn, -1.0,
        "(−3a)·a / (‖−3a‖ ‖a‖) = −3‖a‖² / (3‖a‖²) = −1: the length 3 cancels, the minus sign flips the "
        "direction. Cosine similarity sees only directions: −1 is 'exactly opposite', 0 is 'orthogonal'.")


def check_quiz_0_3(fn: Callable) -> None:
    """Quiz 0.3: what a smoke-profile accuracy on 120 images tells you (multiple choice)."""
    from mmcourse.metrics import wilson_interval
    low, high = wilson_interval(74, 120)
    checks.quiz(
        "quiz 0.3 (reading a smoke accuracy)", fn, "b",
        f"74 correct of 120 is 0.617, but with n = 120 its 95 % Wilson interval is {low:.2f}–{high:.2f}: "
        "a smoke run shows that the code runs and gives a rough, noisy estimate. Quote full-profile "
        "numbers (and their n) for conclusions; the course prints n and the interval beside every smoke accuracy.",
        choices={"a": "the model is 62 % accurate; the full profile will confirm it",
                 "b": "the code runs; 0.62 is a noisy estimate from 120 images (its 95 % interval is about ±0.09 wide)",
                 "c": "nothing at all: smoke numbers are random"})
