"""Evaluation metrics and their uncertainty (first used in notebooks 02–05; notebooks 08–09 add more).

A smoke run evaluates on a few hundred examples, so its accuracy is a noisy estimate: every
accuracy the course prints comes with n and a 95 % interval (:func:`wilson_interval`).
"""
from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion of ``k`` successes in ``n`` trials.

    Better than the normal ("Wald") interval p ± z√(p(1−p)/n) for small n or p near 0 or 1,
    where Wald can leave [0, 1] or shrink to zero width (Wilson 1927; Brown, Cai & DasGupta 2001).
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= k <= n:
        raise ValueError(f"k must be between 0 and n={n}, got {k}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends: rounding must not exclude p̂
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def accuracy_with_interval(correct: int, n: int) -> str:
    """``"0.707 (n = 300, 95 % CI 0.653–0.756)"``: an accuracy as the course prints it."""
    low, high = wilson_interval(correct, n)
    return f"{correct / n:.3f} (n = {n}, 95 % CI {low:.3f}–{high:.3f})"
