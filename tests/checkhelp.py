"""Helpers shared by the tests of the notebook checks (tests/test_checks_nb*.py)."""
from __future__ import annotations


def verdict(check, fn, capsys) -> str:
    """What ``check(fn)`` printed."""
    check(fn)
    return capsys.readouterr().out


def stub(*args, **kwargs):
    """An unattempted exercise, as the student copy has it."""
    raise NotImplementedError
