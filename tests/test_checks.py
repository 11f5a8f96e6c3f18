"""The exercise-check framework (mmcourse.checks) on the warm-up exercise of notebook 00."""
import numpy as np
import pytest

from mmcourse import checks
from mmcourse.checks import nb00


def test_correct_answer_passes(lenient, capsys):
    nb00.check_cosine_similarity(nb00.reference_cosine_similarity)
    out = capsys.readouterr().out
    assert out.count("✓") == 2 and "✗" not in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda a, b: float(a @ b), "plain dot product"),
    (lambda a, b: float(a @ b / np.linalg.norm(a)), "divided by ‖a‖ only"),
    (lambda a, b: float(a @ b / (np.abs(a).sum() * np.abs(b).sum())), "not the L1 norm"),
    (lambda a, b: float(a @ b / ((a @ a) * (b @ b))), "squared norms"),
    (lambda a, b: np.array([1.0, 2.0]), "one number"),
    (lambda a, b: 1 / 0, "ZeroDivisionError"),
])
def test_typical_mistakes_get_specific_hints(lenient, capsys, wrong, hint):
    nb00.check_cosine_similarity(wrong)  # student mode: reports, does not raise
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def test_unattempted_exercise_is_pending_not_a_crash(lenient, capsys):
    def stub(a, b):
        # YOUR CODE HERE
        raise NotImplementedError

    nb00.check_cosine_similarity(stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def test_strict_mode_raises_on_wrong_and_pending(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="dot product"):
        nb00.check_cosine_similarity(lambda a, b: float(a @ b))

    def stub(a, b):
        raise NotImplementedError

    with pytest.raises(checks.CheckFailed, match="pending"):
        nb00.check_cosine_similarity(stub)


def test_close_reports_swapped_axes_and_shapes(lenient, capsys):
    ref = np.arange(6.0).reshape(2, 3)
    assert not checks.close("t", ref.T, ref)
    assert "axes look swapped" in capsys.readouterr().out
    assert not checks.close("t", None, ref)
    assert "return" in capsys.readouterr().out
    assert checks.close("t", ref + 1e-9, ref)


def test_a_wrong_large_array_is_reported_compactly(lenient, capsys):
    want = np.arange(4 * 6 * 8, dtype=float).reshape(4, 6, 8)
    got = want.copy()
    got[1, 2, 3] += 0.5
    got[3, 5, 7] -= 2.0
    checks.close("big", got, want)
    out = capsys.readouterr().out
    assert "first differing entry (1, 2, 3): 67.5 instead of 67" in out
    assert "max abs difference 2" in out and "shape (4, 6, 8)" in out
    assert len(out) < 300, out  # never the whole tensor


def test_verdict_has_one_full_stop(lenient, capsys):
    checks.failed("count", 12, "11.")
    assert "found 11.\n" in capsys.readouterr().out + "\n"


CHOICES = {"a": "the mean", "b": "the median", "c": "the mode"}


def test_quiz_multiple_choice_explains_right_and_wrong(lenient, capsys):
    assert checks.quiz("q", lambda: "B", "b", "It ignores outliers.", CHOICES)
    assert "✓ q: b) the median — right. It ignores outliers." in capsys.readouterr().out
    assert not checks.quiz("q", lambda: "a", "b", "It ignores outliers.", CHOICES)
    out = capsys.readouterr().out
    assert "✗ q" in out and "a) the mean" in out and "It ignores outliers." in out
    assert not checks.quiz("q", lambda: "d", "b", "x", CHOICES)
    assert "one of a, b, c" in capsys.readouterr().out


def test_quiz_number_tolerance_and_pending(lenient, capsys):
    assert checks.quiz("n", lambda: 101, 100.0, "Because.")
    assert not checks.quiz("n", lambda: 110, 100.0, "Because.")
    assert not checks.quiz("n", lambda: "many", 100.0, "Because.")
    def unanswered():
        raise NotImplementedError
    assert not checks.quiz("n", unanswered, 100.0, "Because.")
    out = capsys.readouterr().out
    assert out.count("✓") == 1 and out.count("✗") == 2 and "pending n" in out


def test_quiz_wrong_answer_raises_in_strict_mode(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed):
        checks.quiz("q", lambda: "a", "b", "x", CHOICES)
