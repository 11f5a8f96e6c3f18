"""Shared fixtures. Solutions run with strict checks: a wrong answer in solutions/ fails CI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Strict checks for the kernels nbval starts: `make test` runs `--nbval-lax tests solutions`, and
# those kernels inherit this process's environment, so a wrong answer in solutions/ fails CI.
# (`mmcourse.runner.run` sets or removes the variable itself from its `strict_checks` argument,
# so this does not leak into the runs of student copies.) MMCOURSE_STRICT_CHECKS=0 in the
# environment turns it off for a local look at failing checks.
os.environ.setdefault("MMCOURSE_STRICT_CHECKS", "1")

pytest_plugins = ["conftest_data"]  # the data fixtures (fake upstreams, caches, real-data guards)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    """The prepared real datasets: MMCOURSE_DATA_DIR, else ../shared/datasets, else None."""
    env = os.environ.get("MMCOURSE_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if cand.is_dir():
            return cand.resolve()
    return None


@pytest.fixture(scope="session")
def models_ready() -> None:
    """Skip-free guard: the model tests need `make models` to have run (make test does it)."""
    from mmcourse import pretrained
    missing = [r for r in pretrained.ROLES if not (pretrained.role_dir(r) / "hf" / "manifest.json").is_file()]
    if missing:
        pytest.fail(f"pretrained models not fetched: {missing}; run `make models` first")


@pytest.fixture
def lenient(monkeypatch):
    """Checks print ✗ / pending instead of raising (as in a student copy)."""
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "0")


@pytest.fixture(autouse=True)
def no_leaked_deterministic_mode():
    """Fail a test that leaves deterministic kernels switched on (or off) for the tests after it."""
    from mmcourse import runtime
    before = runtime.deterministic_state()
    yield
    after = runtime.deterministic_state()
    if after != before:
        runtime.restore_deterministic(before)
        pytest.fail(f"this test changed the process-wide deterministic mode: {before} -> {after}; "
                    "use `with runtime.deterministic():` or restore it")


@pytest.fixture
def quiz_behaviour(monkeypatch, capsys):
    """What every quiz item (checks.quiz) must do; call it with (check, right, wrong, teaches):
    the right answer passes strict, a wrong one raises in strict mode and, lenient, is explained
    (``teaches`` appears in the verdict), and an unattempted item is pending."""
    from mmcourse import checks

    def stub():
        raise NotImplementedError

    def run(check, right, wrong, teaches: str = "") -> None:
        monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
        check(lambda: right)
        out = capsys.readouterr().out
        assert "✓" in out and "✗" not in out, out
        with pytest.raises(checks.CheckFailed):
            check(lambda: wrong)
        monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "0")
        capsys.readouterr()
        check(lambda: wrong)
        out = capsys.readouterr().out
        assert "✗" in out and teaches in out and len(out) > 80, out  # the explanation comes with it
        check(stub)
        out = capsys.readouterr().out
        assert "pending" in out and "✗" not in out, out
    return run
