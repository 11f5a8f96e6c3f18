"""Quiz items of notebook 00 (mmcourse.checks.nb00): right answers pass, wrong ones get the explanation."""
import pytest

from mmcourse import checks
from mmcourse.checks import nb00


def _stub():
    raise NotImplementedError


@pytest.mark.parametrize("check, right, wrong, teaches", [
    (nb00.check_quiz_0_1, 0.8, 0.6, "2 − 2 cos"),
    (nb00.check_quiz_0_2, -1, 1, "flips the direction"),
    (nb00.check_quiz_0_3, "b", "a", "Wilson interval"),
])
def test_quiz_items(monkeypatch, capsys, check, right, wrong, teaches):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    check(lambda: right)
    assert "✓" in capsys.readouterr().out
    with pytest.raises(checks.CheckFailed, match="quiz 0"):
        check(lambda: wrong)
    monkeypatch.delenv("MMCOURSE_STRICT_CHECKS")
    check(lambda: wrong)
    out = capsys.readouterr().out
    assert "✗" in out and teaches in out, out
    check(_stub)
    assert "pending" in capsys.readouterr().out
