"""Quiz items of notebook 00 (mmcourse.checks.nb00): right answers pass, wrong ones get the explanation."""
import pytest

from mmcourse.checks import nb00


@pytest.mark.parametrize("check, right, wrong, teaches", [
    (nb00.check_quiz_0_1, 0.8, 0.6, "2 − 2 cos"),
    (nb00.check_quiz_0_2, -1, 1, "flips the direction"),
    (nb00.check_quiz_0_3, "b", "a", "Wilson interval"),
])
def test_quiz_items(quiz_behaviour, check, right, wrong, teaches):
    quiz_behaviour(check, right, wrong, teaches)
