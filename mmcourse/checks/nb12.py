"""Checks for notebook 12 (responsible multimodal ML): mixing noise at a requested SNR (exercise 12.1), the
relative robustness of a curve (12.2), a grouped split (12.3), CHAIR for hallucinated objects (12.4).

Each check compares the learner's function with the library version (:func:`mmcourse.robustness.mix_at_snr`,
:func:`mmcourse.robustness.relative_robustness`, :func:`mmcourse.hallucination.chair`) or, for the split, with the
properties :func:`mmcourse.leakage.grouped_folds` has (sklearn's own assignment need not be reproduced), and
recognises the typical mistakes to give a specific hint. The cases are built so that every typical mistake
changes the answer (tests/test_checks_nb12.py keeps them so):

- mix: a voiced clean signal with a DC offset (0.3) and noise with a mean of -0.5 that grows louder along its
  length, at 10 and -5 dB with noise as long as the clean signal, at 20 and 0 dB with shorter noise (400 samples
  for 1,000: tiled 2.5 times) and at 10 and -5 dB with longer noise (1,700: cropped). The measured SNR
  (:func:`mmcourse.robustness.snr_db`) must be within 0.1 dB of the request: amplitude dB (20·log10) halves or
  doubles it and an inverted ratio flips its sign (both at SNR ≠ 0), std instead of the RMS power shifts it by
  about 4 dB (the means), the power of the whole noise instead of the tiled or cropped segment by 0.6 and 3 dB
  (the growing loudness), no gain at all leaves the SNR of the raw signals. The output is fitted on the clean
  signal and the noise repeated from its start: a scaled clean part (the gain on the clean signal, a mixture
  renormalised by its peak or power), no clean part (the scaled noise returned) or another noise segment (not
  tiled, zero-padded, cropped from the end) shows, and so does a wrong length; the inputs are compared after the
  call (an in-place ``noise *= g`` shows);
- relative robustness: unevenly spaced levels whose span is not 1 (0 to 8, then 2 to 7), so that the plain mean,
  the area not divided by the span, a left or right Riemann sum, dividing by the number of points or intervals,
  dropping the clean point, ignoring the levels (unit steps) and, in the second case, dividing by the last level
  all give different numbers;
- grouped split: 172 examples of 60 speakers (2 to 4 each) in shuffled order, 5 folds, then 17 X-rays of 4
  patients in 4 folds. A split that ignores the groups (random, or by index modulo n_folds) cuts groups, one fold
  per group leaves the range 0..n_folds-1, everything in one fold leaves folds empty, index arrays per fold are
  not one id per example; then the fold sizes (largest ≤ 2 × smallest in the first case: with 2 to 4 examples
  per group, any split that deals 12 groups to each fold meets it), the same folds for the same seed (an
  unseeded generator shows) and other folds for another seed (a seed left unused shows);
- CHAIR: five captions, one naming a dog twice (multiplicity changes CHAIR_i's denominator), one whose bicycle
  and car only the second reference names (checking the first reference only hallucinates both), one naming no
  object (skipping it in CHAIR_s's denominator shows), one hallucinating a kite and an umbrella (CHAIR_s counts
  it once), one with a hotdog (substring matching finds a dog; it also misses "bike" for a bicycle). Every
  mistake gives its own (CHAIR_i, CHAIR_s) pair, and swapped keys and percentages show too.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmcourse import checks, hallucination, leakage, robustness


# --------------------------------------------------------------------------- exercise 12.1: mix_at_snr

def reference_mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``clean + g·noise``, the noise tiled or cropped from its start to ``len(clean)`` and ``g`` chosen so that
    ``10·log10(power(clean) / power(g·noise)) == snr_db`` (notebook 12, §Robustness curves):
    :func:`mmcourse.robustness.mix_at_snr`."""
    return robustness.mix_at_snr(clean, noise, snr_db)


MIX_N = 1000  # samples of the clean signal
CLEAN_OFFSET, NOISE_MEAN = 0.3, -0.5  # non-zero means: the variance is not the power

#: (noise length, SNR in dB, what the case shows), checked in this order
MIX_CASES: list[tuple[int, float, str]] = [
    (1000, 10.0, " (10 dB, noise as long as the clean signal)"),
    (1000, -5.0, " (-5 dB, noise as long as the clean signal)"),
    (400, 20.0, " (20 dB, noise shorter than the clean signal)"),
    (400, 0.0, " (0 dB, noise shorter than the clean signal)"),
    (1700, 10.0, " (10 dB, noise longer than the clean signal)"),
    (1700, -5.0, " (-5 dB, noise longer than the clean signal)"),
]

SNR_TOL = 0.1  # dB: a right answer's measured SNR lies this close to the request
_MATCH_DB = 0.05  # dB: a measured SNR this close to what a mistake gives is that mistake


def mix_inputs(noise_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(clean, noise)``, float32: a voiced sound (220 Hz and two harmonics at 8 kHz) on a DC offset, and
    Gaussian noise with a negative mean whose loudness grows along it (a fixed generator per length)."""
    t = np.arange(MIX_N) / 8000
    clean = (CLEAN_OFFSET + 0.25 * np.sin(2 * np.pi * 220 * t) + 0.12 * np.sin(2 * np.pi * 440 * t + 0.7)
             + 0.06 * np.sin(2 * np.pi * 660 * t + 1.9))
    rng = np.random.default_rng(1200 + noise_len)
    noise = NOISE_MEAN + np.linspace(0.3, 1.7, noise_len) * rng.standard_normal(noise_len)
    return clean.astype(np.float32), noise.astype(np.float32)


def noise_segment(noise: np.ndarray, n: int) -> np.ndarray:
    """The noise repeated (tiled) or cropped from its start to ``n`` samples, in float64."""
    return np.resize(np.asarray(noise, dtype=np.float64), n)


def _mix_gain(clean: np.ndarray, noise: np.ndarray, snr: float, how: str) -> float:
    """The gain on the noise segment that the right rule (``how == "right"``) or a typical mistake computes."""
    c, seg = np.asarray(clean, dtype=np.float64), noise_segment(noise, len(clean))
    pc, pn, ratio = robustness.power(c), robustness.power(seg), 10.0 ** (snr / 10.0)
    gains = {
        "right": lambda: math.sqrt(pc / (pn * ratio)),
        "amplitude dB": lambda: math.sqrt(pc / (pn * 10.0 ** (snr / 20.0))),
        "amplitude dB on RMS": lambda: math.sqrt(pc / pn) / ratio,
        "inverted": lambda: math.sqrt(pc * ratio / pn),
        "std": lambda: math.sqrt(np.var(c) / (np.var(seg) * ratio)),
        "std of the noise": lambda: math.sqrt(pc / (np.var(seg) * ratio)),
        "std of the clean": lambda: math.sqrt(np.var(c) / (pn * ratio)),
        "whole noise": lambda: math.sqrt(pc / (robustness.power(noise) * ratio)),
        "no gain": lambda: 1.0,
    }
    return gains[how]()


def mix_variant_snr(clean: np.ndarray, noise: np.ndarray, snr: float, how: str) -> float:
    """The SNR (dB) that :func:`robustness.snr_db` measures on ``clean + g·segment`` with a mistake's gain."""
    c = np.asarray(clean, dtype=np.float64)
    seg = noise_segment(noise, len(c))
    return robustness.snr_db(c, c + _mix_gain(clean, noise, snr, how) * seg)


_DB = ("SNR in dB is 10·log10 of a POWER ratio: power(clean) / power(g·noise) = 10**(snr_db / 10), so "
       "g = sqrt(power(clean) / (power(noise) · 10**(snr_db / 10))). 20·log10 is for amplitude (RMS) ratios: "
       "g = rms(clean) / (rms(noise) · 10**(snr_db / 20)) is the same gain. Mixing the two halves or doubles the "
       "SNR in dB")
_STD = ("power is the mean square, np.mean(x**2) (robustness.power), not the variance np.std(x)**2: they differ "
        f"when a signal has a non-zero mean (here the clean signal sits on a DC offset of {CLEAN_OFFSET:g} and the "
        f"noise has a mean of {NOISE_MEAN:g}), and snr_db measures mean squares")

#: (variant of :func:`_mix_gain`, hint) for an output that is the clean signal plus a multiple of the noise
MIX_MISTAKES: list[tuple[str, str]] = [
    ("amplitude dB", _DB),
    ("amplitude dB on RMS", _DB),
    ("inverted", "the SNR is inverted (the noise gets LOUDER as the SNR rises): a high SNR means quiet noise, "
                 "g = sqrt(power(clean) / (power(noise) · 10**(snr_db / 10))) with 10**(snr_db / 10) in the "
                 "denominator"),
    ("std", _STD),
    ("std of the noise", _STD),
    ("std of the clean", _STD),
    ("whole noise", "compute the noise's power on the segment you add (tiled or cropped to len(clean)), not on the "
                    "whole noise: here the noise gets louder along its length, so the two powers differ and the "
                    "measured SNR misses the request"),
    ("no gain", "scale the noise before adding it: out = clean + g · noise with "
                "g = sqrt(power(clean) / (power(noise) · 10**(snr_db / 10)))"),
]

_TILE = ("the noise is repeated (tiled) when it is shorter than clean and cropped when longer, from its start, to "
         "exactly len(clean) samples: np.resize(noise, len(clean)), or np.tile(noise, reps)[:len(clean)]")
_IN_PLACE = ("you changed clean or noise in place (clean += ..., noise *= g, or a write into a slice, which is a "
             "view): the caller's arrays are used again for the next SNR. Compute a new array: out = clean + g * "
             "segment")


def check_mix_at_snr(fn: Callable) -> None:
    """Check ``mix_at_snr(clean, noise, snr_db) -> array`` (notebook 12, §Robustness curves) against
    :func:`mmcourse.robustness.mix_at_snr` on :data:`MIX_CASES`."""
    name = "mix_at_snr"
    for noise_len, snr, what in MIX_CASES:
        clean, noise = mix_inputs(noise_len)
        if not _mix_case(name + what, fn, clean, noise, snr):
            return
    checks.passed(name, f"{len(MIX_CASES)} cases: 20 to -5 dB within {SNR_TOL:g} dB; noise shorter than, as long "
                        "as and longer than the clean signal; the clean part unchanged; the inputs left as they were")


def _mix_case(name: str, fn: Callable, clean: np.ndarray, noise: np.ndarray, snr: float) -> bool:
    """One case of :func:`check_mix_at_snr`; True when right, else a ✗ (or pending) was printed."""
    n = len(clean)
    given_clean, given_noise = clean.copy(), noise.copy()
    found = checks.attempt(name, fn, given_clean, given_noise, snr, fallback="mmcourse.robustness.mix_at_snr",
                           shape_hint="the output has len(clean) samples: " + _TILE)
    if checks.is_pending(found):
        return False
    if not (np.array_equal(given_clean, clean) and np.array_equal(given_noise, noise)):
        return checks.failed(name, "clean and noise left as they were", "they were changed by the call", _IN_PLACE)
    if found is None:
        return checks.failed(name, "an array", "None", "did you forget to `return` the result?")
    try:
        out = np.asarray(found.detach().cpu().numpy() if hasattr(found, "detach") else found, dtype=np.float64)
    except (TypeError, ValueError):
        return checks.failed(name, f"an array of {n} samples", f"{type(found).__name__} {found!r:.60}",
                             "return the mixture as an array: clean + g * segment")
    if out.shape != (n,):
        if out.shape == (len(noise),):
            hint = f"the output has the noise's length ({len(noise)}), not the clean signal's ({n}): " + _TILE
        else:
            hint = "the output has len(clean) samples (a 1-D array, as clean): " + _TILE
        return checks.failed(name, f"shape ({n},)", f"shape {out.shape}", hint)
    if not np.isfinite(out).all():
        return checks.failed(name, "finite samples", "NaN or inf in the output",
                             "check the gain: a division by a zero power, or the log of a negative number?")
    c, seg = clean.astype(np.float64), noise_segment(noise, n)
    if not np.any(out - c):
        return checks.failed(name, f"an SNR of {snr:g} dB", "the clean signal unchanged (no noise added)",
                             "add the scaled noise: out = clean + g * segment")
    coef, *_ = np.linalg.lstsq(np.stack([c, seg], axis=1), out, rcond=None)
    b, d = (float(v) for v in coef)
    resid = float(np.linalg.norm(out - b * c - d * seg) / np.linalg.norm(out))
    if resid > 1e-4:
        return checks.failed(name, "clean + g · (the noise tiled or cropped from its start)",
                             "out - clean is not a multiple of that noise segment",
                             _TILE + ". Zero padding, cropping from the end or a random offset add another segment")
    if abs(b) < 1e-3:
        return checks.failed(name, "clean + g · noise", f"{d:.3g} · noise without the clean signal",
                             "you returned the scaled noise alone: return the mixture, clean + g * segment")
    if abs(b - 1) > 1e-4:
        if abs(d - 1) < 1e-3:
            hint = ("the gain goes on the noise, not on the clean signal: out = clean + g * segment, the clean "
                    "signal as it is, so that only the noise changes from one SNR to the next")
        else:
            hint = ("the clean part changed: do not renormalise the mixture (by its peak or its power). out = clean + "
                    "g * segment keeps the clean signal as it is, as snr_db(clean, out) assumes: rescaling counts "
                    "the change of the clean signal as noise")
        return checks.failed(name, "clean + g · noise (the clean signal unchanged)",
                             f"{b:.4g} · clean + {d:.4g} · noise", hint)
    measured = robustness.snr_db(c, out)
    if abs(measured - snr) <= SNR_TOL:
        return True
    for how, hint in MIX_MISTAKES:
        if abs(measured - mix_variant_snr(clean, noise, snr, how)) <= _MATCH_DB:
            return checks.failed(name, f"a measured SNR of {snr:g} dB (± {SNR_TOL:g})", f"{measured:.2f} dB", hint)
    return checks.failed(name, f"a measured SNR of {snr:g} dB (± {SNR_TOL:g})", f"{measured:.2f} dB",
                         "g = sqrt(power(clean) / (power(segment) · 10**(snr_db / 10))), power = np.mean(x**2) of "
                         "the segment you add")


# --------------------------------------------------------------------------- exercise 12.2: relative_robustness

def reference_relative_robustness(levels: Sequence[float], accuracies: Sequence[float]) -> float:
    """Trapezoid area under accuracy vs level, divided by the span of the levels (notebook 12, §Robustness
    curves): :func:`mmcourse.robustness.relative_robustness`."""
    return robustness.relative_robustness(levels, accuracies)


#: (levels, accuracies, what the case shows), checked in this order: unevenly spaced levels, spans of 8 and 5
RR_CASES: list[tuple[list[float], list[float], str]] = [
    ([0.0, 1.0, 3.0, 4.0, 8.0], [0.92, 0.85, 0.61, 0.58, 0.20], " (levels 0, 1, 3, 4, 8: uneven, span 8)"),
    ([2.0, 2.5, 4.0, 7.0], [0.80, 0.74, 0.50, 0.35], " (levels 2, 2.5, 4, 7: from 2, span 5)"),
]


def _area(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[:-1] + y[1:]) / 2))


def rr_variant(levels: Sequence[float], accuracies: Sequence[float], how: str) -> float:
    """The number a typical mistake (``how``) gives."""
    x, y = np.asarray(levels, dtype=np.float64), np.asarray(accuracies, dtype=np.float64)
    span, dx = x[-1] - x[0], np.diff(x)
    values = {
        "mean": lambda: float(y.mean()),
        "not divided": lambda: _area(x, y),
        "left": lambda: float(np.sum(dx * y[:-1]) / span),
        "right": lambda: float(np.sum(dx * y[1:]) / span),
        "per point": lambda: _area(x, y) / len(x),
        "per interval": lambda: _area(x, y) / (len(x) - 1),
        "clean dropped": lambda: _area(x[1:], y[1:]) / float(x[-1] - x[1]),
        "clean dropped, full span": lambda: _area(x[1:], y[1:]) / float(span),
        "unit steps": lambda: _area(np.arange(len(y), dtype=np.float64), y) / (len(y) - 1),
        "last level": lambda: _area(x, y) / float(x[-1]),
    }
    return values[how]()


_SPAN = "divide the area by the span of the levels, levels[-1] - levels[0], so that a flat curve at accuracy a gives a"
_TRAPEZOID = ("the trapezoid rule: each interval contributes (l[i+1] - l[i]) · (a[i] + a[i+1]) / 2, the mean of BOTH "
              "ends (np.trapezoid(accuracies, levels)); ")

#: (variant of :func:`rr_variant`, hint), tried in this order
RR_MISTAKES: list[tuple[str, str]] = [
    ("mean", "the plain mean of the accuracies weights every level alike, but the levels are unevenly spaced: each "
             "accuracy counts by the width of the intervals next to it. Use the area under the curve, "
             + _TRAPEZOID + "then divide it by the span of the levels, levels[-1] - levels[0]"),
    ("not divided", _SPAN + "; the area alone grows with the range of the levels"),
    ("left", "a left Riemann sum (each interval at its left end's accuracy) overestimates a falling curve: use "
             + _TRAPEZOID + _SPAN),
    ("right", "a right Riemann sum (each interval at its right end's accuracy) underestimates a falling curve: use "
              + _TRAPEZOID + _SPAN),
    ("per point", _SPAN + ", not by the number of points"),
    ("per interval", _SPAN + ", not by the number of intervals (that is the span only for unit steps)"),
    ("clean dropped", "keep the clean (first) point: the curve starts at levels[0] with the clean accuracy, and the "
                      "area and the span run from there"),
    ("clean dropped, full span", "keep the clean (first) point: the first interval, from the clean accuracy to the "
                                 "next, is part of the area"),
    ("unit steps", "use the levels as the x coordinates (np.trapezoid(accuracies, levels)): they are unevenly "
                   "spaced here, so unit steps misweight the intervals"),
    ("last level", _SPAN + ", not by the last level (here the levels start at 2)"),
]


def _number(x: Any) -> float | None:
    """``x`` as a float (a Python or numpy number, a 0-d or one-element array or tensor), or None."""
    if x is None or isinstance(x, (str, bytes, dict)):
        return None
    try:
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        a = np.asarray(x, dtype=np.float64)
        return float(a.reshape(())) if a.size == 1 else None
    except (TypeError, ValueError):
        return None


def check_relative_robustness(fn: Callable) -> None:
    """Check ``relative_robustness(levels, accuracies) -> float`` (notebook 12, §Robustness curves) against
    :func:`mmcourse.robustness.relative_robustness` on :data:`RR_CASES` (numpy arrays in)."""
    name = "relative_robustness"
    for levels, accs, what in RR_CASES:
        x, y = np.array(levels), np.array(accs)
        found = checks.attempt(name + what, fn, x, y, fallback="mmcourse.robustness.relative_robustness")
        if checks.is_pending(found):
            return
        if not (np.array_equal(x, levels) and np.array_equal(y, accs)):
            checks.failed(name + what, "levels and accuracies left as they were", "they were changed by the call",
                          "compute from the arrays without writing into them (no in-place sort or +=)")
            return
        value = _number(found)
        if value is None:
            checks.failed(name + what, "a number", f"{type(found).__name__} {found!r:.60}",
                          "return one float: the area under the curve divided by the span of the levels")
            return
        want = robustness.relative_robustness(levels, accs)
        if math.isclose(value, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        hint = next((h for how, h in RR_MISTAKES
                     if math.isclose(value, rr_variant(levels, accs, how), rel_tol=1e-6, abs_tol=1e-9)),
                    _TRAPEZOID + _SPAN)
        checks.failed(name + what, f"{want:.4f}", f"{value:.4f}", hint)
        return
    checks.passed(name, f"{len(RR_CASES)} curves: unevenly spaced levels, spans of 8 and 5, a curve starting at 2")


# --------------------------------------------------------------------------- exercise 12.3: grouped_split

def reference_grouped_split(groups: Sequence, n_folds: int, seed: int) -> np.ndarray:
    """A fold id in 0..n_folds-1 per example, every group in one fold, folds about the same size (notebook 12,
    §Leakage in evaluation): :func:`mmcourse.leakage.grouped_folds` (sklearn's ``GroupKFold(shuffle=True)``)."""
    return leakage.grouped_folds(groups, n_folds, seed)


def split_groups(case: int) -> np.ndarray:
    """The group of each example of :data:`SPLIT_CASES` ``[case]``, in shuffled order (a fixed generator):
    case 0, 60 speakers "spk00" … "spk59" with 2 to 4 recordings each (172 examples: 12 groups dealt to each of 5
    folds give 24 to 48 examples, within a factor 2); case 1, 4 patients with 5, 3, 7 and 2 X-rays."""
    rng = np.random.default_rng(1230 + case)
    if case == 0:
        sizes = np.random.default_rng(123).integers(2, 5, size=60)
        groups = np.repeat([f"spk{i:02d}" for i in range(60)], sizes)
    else:
        groups = np.repeat([101, 205, 307, 409], [5, 3, 7, 2])
    return groups[rng.permutation(len(groups))]


#: (case of :func:`split_groups`, n_folds, seed, what the case shows, whether fold sizes must be balanced)
SPLIT_CASES: list[tuple[int, int, int, str, bool]] = [
    (0, 5, 0, " (60 speakers with 2 to 4 recordings, 5 folds)", True),
    (1, 4, 3, " (4 patients, 4 folds)", False),
]

_LEAK = ("examples of one group (one speaker's recordings, one patient's X-rays) then sit in training and test folds "
         "at once, so the test score also rewards recognising the speaker or the patient: the leak a grouped split "
         "exists to prevent. Give each UNIQUE group a fold (np.unique(groups), shuffled with "
         "np.random.default_rng(seed), dealt out in turn: k % n_folds), then give every example its group's fold")


def _fold_ids(name: str, found: Any, n: int, n_folds: int) -> np.ndarray | None:
    """``found`` as an int array of one fold id per example, or None after a ✗ about its form."""
    if found is None:
        checks.failed(name, f"an array of {n} fold ids", "None", "did you forget to `return` the result?")
        return None
    expected = f"an array of {n} fold ids (one per example, in 0..{n_folds - 1})"
    if isinstance(found, (list, tuple)) and len(found) == n_folds and n != n_folds \
            and all(hasattr(part, "__len__") and not isinstance(part, str) for part in found):
        checks.failed(name, expected, f"a list of {len(found)} index arrays (or pairs)",
                      "return one fold id per example: folds[i] is the fold of example i, an array of len(groups) "
                      "ints, not the examples of each fold. From index arrays: folds = np.empty(len(groups), int); "
                      "then folds[idx] = k for the k-th array")
        return None
    try:
        arr = np.asarray(found.detach().cpu().numpy() if hasattr(found, "detach") else found)
        numeric = arr.dtype.kind in "iuf" or arr.dtype == bool
    except (TypeError, ValueError):
        arr, numeric = None, False
    if arr is None or arr.shape != (n,) or not numeric:
        what = f"shape {arr.shape}, dtype {arr.dtype}" if arr is not None else type(found).__name__
        checks.failed(name, expected, what,
                      "return a 1-D array with one integer fold id per example, in the order of groups")
        return None
    if not np.array_equal(arr, np.round(arr)):
        checks.failed(name, expected, f"non-integer values such as {arr[arr != np.round(arr)][0]:g}",
                      "fold ids are whole numbers 0..n_folds-1")
        return None
    return arr.astype(int)


def _split_case(name: str, fn: Callable, groups: np.ndarray, n_folds: int, seed: int, balanced: bool) -> bool:
    """One case of :func:`check_grouped_split`; True when every property holds."""
    n, unique = len(groups), np.unique(groups)
    given = groups.copy()
    found = checks.attempt(name, fn, given, n_folds, seed, fallback="mmcourse.leakage.grouped_folds")
    if checks.is_pending(found):
        return False
    if not np.array_equal(given, groups):
        return checks.failed(name, "groups left as they were", "groups reordered or changed by the call",
                             "you shuffled groups in place (rng.shuffle(groups)): the caller's labels no longer "
                             "match their examples. Shuffle the unique groups instead: "
                             "rng.permutation(np.unique(groups))")
    folds = _fold_ids(name, found, n, n_folds)
    if folds is None:
        return False
    if folds.min() < 0 or folds.max() >= n_folds:
        if folds.min() == 1 and folds.max() == n_folds:
            hint = "fold ids start at 0: use 0..n_folds-1 (k % n_folds), not 1..n_folds"
        elif len(np.unique(folds)) == len(unique) and not leakage.crossing_groups(groups, folds):
            hint = (f"each group got its own fold ({len(unique)} groups, so ids up to {len(unique) - 1}): deal the "
                    f"groups out to the n_folds folds instead, the k-th shuffled group to fold k % n_folds")
        else:
            hint = "every fold id is in 0..n_folds-1"
        return checks.failed(name, f"fold ids in 0..{n_folds - 1}", f"ids from {folds.min()} to {folds.max()}", hint)
    cross = leakage.crossing_groups(groups, folds)
    if cross:
        where = f"{len(cross)} of {len(unique)} groups in more than one fold (e.g. {', '.join(map(str, cross[:3]))})"
        if np.array_equal(folds, np.arange(n) % n_folds):
            hint = ("folds by example index (i % n_folds) ignore the groups: a group's examples sit at different "
                    "indices, so they land in different folds; " + _LEAK)
        else:
            hint = "the split ignores the groups (a plain random split): " + _LEAK
        return checks.failed(name, "every group in one fold", where, hint)
    sizes = np.bincount(folds, minlength=n_folds)
    empty = [k for k in range(n_folds) if sizes[k] == 0]
    if empty:
        if len(empty) == n_folds - 1:
            hint = (f"everything is in fold {int(np.argmax(sizes))}: the other folds have no test examples. Deal the "
                    "shuffled groups out to all folds in turn (the k-th group to fold k % n_folds)")
        else:
            hint = ("every fold needs examples, or it has nothing to test on: deal the shuffled groups out in turn "
                    "(the k-th group to fold k % n_folds) rather than drawing a random fold per group, which can "
                    "leave folds empty")
        return checks.failed(name, f"every fold 0..{n_folds - 1} used", f"fold(s) {empty} empty", hint)
    if balanced and sizes.max() > 2 * sizes.min():
        return checks.failed(name, "fold sizes within a factor 2 of each other", f"sizes {sizes.tolist()}",
                             "the folds are unbalanced: deal the shuffled groups out in turn (k % n_folds), or give "
                             "each next group to the currently smallest fold; a tiny fold gives a noisy score")
    again = checks.attempt(name, fn, groups.copy(), n_folds, seed)
    if checks.is_pending(again):
        return False
    if not _same_ids(again, folds):
        return checks.failed(name, f"the same folds for the same seed ({seed})", "other folds on a second call",
                             "use the seed: rng = np.random.default_rng(seed) and draw from rng, not from the global "
                             "np.random or an unseeded generator, so a split can be reproduced")
    if balanced:
        other = checks.attempt(name, fn, groups.copy(), n_folds, seed + 1)
        if checks.is_pending(other):
            return False
        if _same_ids(other, folds):
            return checks.failed(name, f"other folds for seed {seed + 1} than for seed {seed}", "the same folds",
                                 "the seed changes nothing: shuffle the unique groups with "
                                 "np.random.default_rng(seed).permutation before dealing them out, so that another "
                                 "seed gives another split (to see how much a score depends on the split)")
    return True


def _same_ids(found: Any, folds: np.ndarray) -> bool:
    try:
        arr = np.asarray(found.detach().cpu().numpy() if hasattr(found, "detach") else found)
        return arr.shape == folds.shape and bool(np.array_equal(arr, folds))
    except (TypeError, ValueError):
        return False


def check_grouped_split(fn: Callable) -> None:
    """Check ``grouped_split(groups, n_folds, seed) -> fold ids`` (notebook 12, §Leakage in evaluation) by the
    properties of :func:`mmcourse.leakage.grouped_folds` on :data:`SPLIT_CASES` (groups as numpy arrays)."""
    name = "grouped_split"
    for case, n_folds, seed, what, balanced in SPLIT_CASES:
        if not _split_case(name + what, fn, split_groups(case), n_folds, seed, balanced):
            return
    checks.passed(name, f"{len(SPLIT_CASES)} cases: no group in two folds, every fold used, fold sizes within a "
                        "factor 2, the same folds for the same seed and others for another")


# --------------------------------------------------------------------------- exercise 12.4: chair

def reference_chair(captions: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """CHAIR_i (hallucinated objects / objects named, each caption's objects a set) and CHAIR_s (captions with a
    hallucinated object / all captions), an object being in the image when any reference caption names it
    (notebook 12, §Generation harms): :func:`mmcourse.hallucination.chair`."""
    r = hallucination.chair(captions, refs)
    return {"CHAIR_i": r["CHAIR_i"], "CHAIR_s": r["CHAIR_s"]}


#: generated captions and each image's reference captions: a dog named twice (0), a bicycle and a car only the
#: second reference names (1), no object (2), a kite and an umbrella hallucinated together (3), a hotdog (4)
CHAIR_CAPTIONS: list[str] = [
    "A brown dog chases a ball while another dog watches.",
    "A man rides a bicycle past a car.",
    "A woman smiles in the sun.",
    "A cat sits on a bench next to a kite and an umbrella.",
    "A boy eats a hotdog on a bench.",
]
CHAIR_REFS: list[list[str]] = [
    ["Two dogs play in a park.", "A dog runs on the grass."],
    ["A man on a city street.", "A cyclist rides a bike next to a parked car."],
    ["A woman outdoors.", "A smiling woman in the sunshine."],
    ["A cat sits on a bench.", "A cat on a wooden bench."],
    ["A child eats lunch on a park bench.", "A boy sitting on a bench."],
]

_WORDS = {obj: re.compile(rf"\b(?:{words})\b", re.IGNORECASE) for obj, words in hallucination.OBJECTS.items()}


def _named(text: str, how: str) -> dict[str, int]:
    """Objects a text names with how often: a set (count 1) or, for ``how`` "multiplicity" and "substring"
    (object names found anywhere in the lower-cased text), the mistakes' ways."""
    if how == "substring":
        return {obj: 1 for obj in hallucination.OBJECTS if obj in text.lower()}
    if how == "multiplicity":
        return {obj: len(rx.findall(text)) for obj, rx in _WORDS.items() if rx.search(text)}
    return {obj: 1 for obj in hallucination.objects_in(text)}


def chair_variant(captions: Sequence[str], refs: Sequence[Sequence[str]], how: str) -> tuple[float, float]:
    """``(CHAIR_i, CHAIR_s)`` as the right rule (``how == "right"``) or a typical mistake computes them."""
    counting = how if how in ("substring", "multiplicity") else "set"
    mentions = bad = bad_captions = with_objects = 0
    for caption, ref in zip(captions, refs):
        named = _named(caption, counting)
        present = set().union(*(_named(r, counting) for r in (ref[:1] if how == "first reference" else ref)))
        wrong = sum(k for obj, k in named.items() if obj not in present)
        mentions, bad = mentions + sum(named.values()), bad + wrong
        bad_captions, with_objects = bad_captions + (wrong > 0), with_objects + bool(named)
    n = len(captions)
    ci, cs = bad / mentions, bad_captions / n
    return {"right": (ci, cs), "multiplicity": (ci, cs), "substring": (ci, cs), "first reference": (ci, cs),
            "i per caption": (bad / n, cs), "s per mention": (ci, bad_captions / mentions),
            "s counts hallucinations": (ci, bad / n),
            "s without objectless captions": (ci, bad_captions / with_objects),
            "swapped": (cs, ci), "percent": (100 * ci, 100 * cs)}[how]


#: (variant of :func:`chair_variant`, hint), tried in this order
CHAIR_MISTAKES: list[tuple[str, str]] = [
    ("percent", "return fractions in [0, 1], not percentages (format them as percentages when you print)"),
    ("swapped", "CHAIR_i and CHAIR_s are swapped: CHAIR_i is per object (hallucinated objects / objects named), "
                "CHAIR_s per caption (captions with a hallucinated object / all captions)"),
    ("first reference", "an object is in the image when ANY of its reference captions names it, not only the first: "
                        "here only the second reference of image 1 names the bike and the car. Take the union over "
                        "refs[i]: set().union(*(objects_in(r) for r in refs[i]))"),
    ("substring", "match whole words, not substrings: a \"hotdog\" is no dog, and \"bike\" names a bicycle. "
                  "hallucination.objects_in(text) does both (whole words, synonyms and plurals)"),
    ("multiplicity", "each caption's objects are a SET: \"a dog … another dog\" names the object dog once "
                     "(hallucination.objects_in(caption) is a set); counting every mention inflates CHAIR_i's "
                     "denominator"),
    ("i per caption", "CHAIR_i is per object: divide the hallucinated objects by all objects named (summed over the "
                      "captions), not by the number of captions"),
    ("s per mention", "CHAIR_s is per caption: divide the captions with a hallucinated object by the number of "
                      "captions, not by the objects named"),
    ("s counts hallucinations", "CHAIR_s counts a CAPTION once however many objects it hallucinates (here caption 3 "
                                "invents a kite and an umbrella): captions with at least one hallucinated object / "
                                "all captions"),
    ("s without objectless captions", "every caption counts in CHAIR_s's denominator, also one that names no object "
                                      "(it hallucinates nothing): divide by len(captions)"),
]


def _chair_values(found: Any) -> tuple[float, float] | None:
    if not isinstance(found, dict) or not {"CHAIR_i", "CHAIR_s"} <= set(found):
        return None
    ci, cs = _number(found["CHAIR_i"]), _number(found["CHAIR_s"])
    return None if ci is None or cs is None else (ci, cs)


def check_chair(fn: Callable) -> None:
    """Check ``chair(captions, refs) -> {"CHAIR_i", "CHAIR_s"}`` (notebook 12, §Generation harms) against
    :func:`mmcourse.hallucination.chair` on :data:`CHAIR_CAPTIONS` and :data:`CHAIR_REFS`."""
    name = "chair"
    captions, refs = list(CHAIR_CAPTIONS), [list(r) for r in CHAIR_REFS]
    found = checks.attempt(name, fn, captions, refs, fallback="mmcourse.hallucination.chair")
    if checks.is_pending(found):
        return
    if captions != CHAIR_CAPTIONS or refs != CHAIR_REFS:
        checks.failed(name, "captions and refs left as they were", "they were changed by the call",
                      "read the captions without writing into the lists")
        return
    got = _chair_values(found)
    if got is None:
        checks.failed(name, "a dict {'CHAIR_i': number, 'CHAIR_s': number}", f"{type(found).__name__} {found!r:.60}",
                      "return {'CHAIR_i': hallucinated objects / objects named, 'CHAIR_s': captions with a "
                      "hallucinated object / all captions}")
        return
    want = chair_variant(CHAIR_CAPTIONS, CHAIR_REFS, "right")
    same = [math.isclose(g, w, abs_tol=1e-6) for g, w in zip(got, want)]
    if all(same):
        checks.passed(name, f"{len(CHAIR_CAPTIONS)} captions: an object named twice, one only a second reference "
                            "names, a caption naming none, two hallucinations in one caption, a hotdog that is no dog")
        return
    expected, given = (f"CHAIR_i {want[0]:.4f}, CHAIR_s {want[1]:.4f}", f"CHAIR_i {got[0]:.4f}, CHAIR_s {got[1]:.4f}")
    variants = [(chair_variant(CHAIR_CAPTIONS, CHAIR_REFS, how), hint) for how, hint in CHAIR_MISTAKES]
    for v, hint in variants:  # a mistake that explains both numbers
        if all(math.isclose(g, w, abs_tol=1e-6) for g, w in zip(got, v)):
            checks.failed(name, expected, given, hint)
            return
    for k in (0, 1):  # else one that explains the first wrong number
        if not same[k]:
            for v, hint in variants:
                if math.isclose(got[k], v[k], abs_tol=1e-6) and not math.isclose(v[k], want[k], abs_tol=1e-6):
                    checks.failed(name, expected, given, hint)
                    return
    checks.failed(name, expected, given,
                  "per caption, named = objects_in(caption) and present = the union of objects_in(r) over its "
                  "references; CHAIR_i = Σ |named - present| / Σ |named|, CHAIR_s = (captions with named - present "
                  "non-empty) / len(captions)")
