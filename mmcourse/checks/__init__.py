"""Exercise checks (how they work: notebook 00_welcome, "Exercises and checks").

Each exercise in a notebook is a function whose body the learner writes. The cell after it
calls ``mmcourse.checks.nbNN.check_<exercise>(the_function)``, which prints one verdict:

* ``✓`` the answer matches the reference;
* ``✗`` it does not: what was expected, what was found, and a hint for the likely mistake;
* ``… pending`` the exercise still raises ``NotImplementedError`` (not attempted yet).

In a student copy neither ✗ nor pending stops the notebook: later cells use the library's
own implementation. When ``MMCOURSE_STRICT_CHECKS=1`` both raise :class:`CheckFailed`, so CI
catches a solution that regressed. Who sets it is always an explicit choice, never the name of
a folder: ``mmcourse run --strict-checks`` (the default of ``mmcourse run`` and ``make course``,
which run the instructor sources) or ``--lenient-checks`` (student copies), and the test suite
for the kernels nbval starts (``tests/conftest.py``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


STRICT_ENV = "MMCOURSE_STRICT_CHECKS"
GRADE_MARK = "MMCOURSE-VERDICT"
# The verdicts of the check statement `mmcourse grade` is running (None: not grading).
_recorded: list[dict] | None = None


class CheckFailed(AssertionError):
    """Raised by a failed or pending check in strict mode (instructor copies, CI)."""


def strict() -> bool:
    """True when failed checks must raise (``MMCOURSE_STRICT_CHECKS=1``)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0", "false", "False")


def _record(verdict: str, name: str, message: str) -> None:
    if _recorded is not None:
        _recorded.append({"verdict": verdict, "check": name, "message": message})


def grading_begin() -> None:
    """Start recording verdicts (``mmcourse grade`` puts this before each check statement)."""
    global _recorded
    _recorded = []


def grading_emit(token: str) -> None:
    """Print the recorded verdicts as one line tagged with ``token``, then stop recording.

    ``mmcourse grade`` writes a fresh random token into each check statement it wraps and reads
    the verdicts only from this line, in that cell's output: a "✓" that student code prints is
    not a verdict (README, "Instructor guide").
    """
    global _recorded
    verdicts, _recorded = _recorded or [], None
    print(f"{GRADE_MARK} " + json.dumps({"token": token, "verdicts": verdicts}), flush=True)


def _right(name: str, text: str) -> bool:
    print(f"✓ {name}: {text}")
    _record("passed", name, text)
    return True


def passed(name: str, detail: str = "") -> bool:
    """Print a ✓ verdict."""
    return _right(name, "correct" + (f" ({detail})" if detail else ""))


def failed(name: str, expected: Any, found: Any, hint: str = "") -> bool:
    """Print a ✗ verdict with expected vs. found and a hint; raise in strict mode."""
    found = str(found).rstrip(".")  # the sentence adds its own full stop
    msg = f"✗ {name}: expected {expected}, found {found}." + (f"\n  Hint: {hint}" if hint else "")
    print(msg)
    _record("failed", name, msg)
    if strict():
        raise CheckFailed(msg)
    return False


def pending(name: str, fallback: str = "") -> bool:
    """Print that an exercise is not attempted yet; raise in strict mode."""
    msg = f"… pending {name}: not attempted yet (it still raises NotImplementedError)."
    if fallback:
        msg += f" The notebook continues with {fallback}."
    print(msg)
    _record("pending", name, msg)
    if strict():
        raise CheckFailed(msg)
    return False


_PENDING = object()


def attempt(name: str, fn: Callable, *args: Any, fallback: str = "", shape_hint: str = "",
            **kwargs: Any) -> Any:
    """Call the learner's function; on ``NotImplementedError`` report pending and return ``PENDING``.

    Any other exception becomes a ✗ verdict that names the exception, instead of a traceback;
    ``shape_hint`` replaces the generic hint when the error is about shapes or sizes.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        pending(name, fallback)
    except CheckFailed:
        raise
    except Exception as e:  # the learner's code crashed: say how, keep the notebook going
        msg = str(e)
        about_shapes = any(word in msg for word in ("shape", "size", "dimension"))
        hint = shape_hint if shape_hint and about_shapes else \
            "read the error above the line that raised it; run the function on the example by hand"
        failed(name, "a result", f"{type(e).__name__}: {msg.splitlines()[0] if msg else ''}", hint)
    return _PENDING


def is_pending(result: Any) -> bool:
    """True when :func:`attempt` could not get a result."""
    return result is _PENDING


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def shape_mistake(name: str, found: Any, expected: Any, hints: dict[tuple[int, ...], str]) -> bool:
    """Print ✗ with ``hints[shape]`` when the answer has a shape a typical mistake gives; True if it did.

    ``hints`` maps wrong shapes (e.g. the transposed result) to what the learner likely did.
    """
    if found is None:
        return False
    shape, want = tuple(np.shape(_as_array(found))), tuple(np.shape(_as_array(expected)))
    if shape == want or shape not in hints:
        return False
    failed(name, f"shape {want}", f"shape {shape}", hints[shape])
    return True


def close(name: str, found: Any, expected: Any, *, atol: float = 1e-6, rtol: float = 1e-5,
          mistakes: Iterable[tuple[Any, str]] = (), hint: str = "") -> bool:
    """Compare an array-like answer with the reference; recognise typical mistakes.

    ``mistakes`` pairs the value a typical mistake would produce with the hint to give when the
    answer equals it (e.g. the dot product without normalisation → "divide by the norms").
    """
    if found is None:
        return failed(name, "an array", "None", "did you forget to `return` the result?")
    got, want = _as_array(found), _as_array(expected)
    if got.shape != want.shape:
        extra = " — the axes look swapped; check which axis you reduce or transpose" \
            if sorted(got.shape) == sorted(want.shape) else ""
        return failed(name, f"shape {want.shape}", f"shape {got.shape}", hint + extra)
    if not np.issubdtype(got.dtype, np.number) and got.dtype != bool:
        return failed(name, f"numbers ({want.dtype})", f"dtype {got.dtype}", hint)
    if np.allclose(got, want, atol=atol, rtol=rtol, equal_nan=False):
        err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if got.size else 0.0
        return passed(name, f"max abs difference {err:.1e}")
    for wrong, why in mistakes:
        w = _as_array(wrong)
        if w.shape == got.shape and np.allclose(got, w, atol=atol, rtol=rtol):
            return failed(name, _short(want), _difference(got, want, atol, rtol), why)
    return failed(name, _short(want), _difference(got, want, atol, rtol), hint)


def _short(x: np.ndarray) -> str:
    """A value for a verdict line: small arrays in full, larger ones as their shape and range."""
    x = np.asarray(x)
    if x.size <= 6:
        with np.printoptions(precision=4, suppress=True):
            return np.array2string(x, separator=", ").replace("\n", "")
    return f"an array of shape {x.shape} (values {float(np.nanmin(x)):.4g} … {float(np.nanmax(x)):.4g})"


def _difference(got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> str:
    """Where an answer of the right shape differs: max abs difference and the first differing entry."""
    if got.size <= 6:
        return _short(got)
    g, w = got.astype(np.float64), want.astype(np.float64)
    bad = ~np.isclose(g, w, atol=atol, rtol=rtol)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    diff = np.abs(g - w)
    worst = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
    return (f"max abs difference {worst:.3g}; first differing entry {first}: "
            f"{g[first]:.4g} instead of {w[first]:.4g}")


def quiz(name: str, fn: Callable, correct: Any, explanation: str, choices: dict[str, str] | None = None,
         rel_tol: float = 0.02) -> bool:
    """An auto-checked quiz item: ``fn()`` returns a choice (``"a"``, ``"b"``…) or a number.

    ``choices`` maps each letter to its text (a multiple-choice item); without it the answer is a
    number, right within ``rel_tol``. Either way the verdict explains the right answer, because a
    quiz is there to teach: ✓ confirms why, ✗ says why the pick is wrong and what is right.
    """
    given = attempt(name, fn)
    if is_pending(given):
        return False
    if choices is not None:
        pick = str(given).strip().lower().rstrip(")")
        if pick not in choices:
            return failed(name, f"one of {', '.join(sorted(choices))}", repr(given),
                          "return the letter of your choice, e.g. \"a\"")
        if pick == correct:
            return _right(name, f"{pick}) {choices[pick]} — right. {explanation}")
        return failed(name, "another choice", f"{pick}) {choices[pick]}", explanation)
    try:
        value = float(given)
    except (TypeError, ValueError):
        return failed(name, "a number", repr(given), "return a number")
    if abs(value - correct) <= rel_tol * abs(correct) + 1e-12:
        return _right(name, f"{value:g} — right. {explanation}")
    return failed(name, f"a number within {100 * rel_tol:g} % of the right one", f"{value:g}", explanation)


def quiz_with_hints(name: str, fn: Callable, correct: float, explanation: str, rel_tol: float,
                    hints: Sequence[tuple[float, str]]) -> bool:
    """A number :func:`quiz` whose explanation starts with a specific hint when the answer is a known
    wrong one (``hints``: (wrong value, hint) pairs, matched within 0.1 %)."""
    given = attempt(name, fn)
    if is_pending(given):
        return False
    try:
        value = float(given)
    except (TypeError, ValueError):
        value = None
    for wrong, hint in hints:
        if value is not None and abs(value - wrong) <= 1e-3 * abs(wrong):
            explanation = f"{hint} {explanation}"
            break
    return quiz(name, lambda: given, correct, explanation, rel_tol=rel_tol)
