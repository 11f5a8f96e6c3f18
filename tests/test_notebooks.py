"""Every notebook runs: solutions in smoke with strict checks, student copies to the end with
pending exercises; notebooks/ is exactly what `release` produces; sources are clean.
(nbval runs the solutions a second time: `make test` passes `--nbval-lax solutions`.)"""
from __future__ import annotations

import json

import nbformat
import pytest

from mmcourse import release, runner

pytestmark = pytest.mark.notebooks


def _names(repo, folder):
    return sorted(p.stem for p in (repo / folder).glob("*.ipynb"))


def test_there_are_notebooks(repo):
    assert "00_welcome" in _names(repo, "solutions")
    assert _names(repo, "solutions") == _names(repo, "notebooks")


def test_notebooks_folder_is_exactly_the_release(repo):
    assert release.check_release(repo / "solutions", repo / "notebooks") == []


def test_student_copies_have_no_solution_code_or_markers(repo):
    for path in (repo / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "BEGIN SOLUTION" not in code and "END SOLUTION" not in code, path
        assert "raise NotImplementedError" in code, f"{path}: no exercise stub"
        assert nb.metadata["mmcourse"]["copy"] == "student"


def test_sources_carry_no_outputs(repo):
    for folder in ("solutions", "notebooks"):
        for path in (repo / folder).glob("*.ipynb"):
            nb = json.loads(path.read_text())
            for cell in nb["cells"]:
                if cell["cell_type"] == "code":
                    assert not cell["outputs"] and cell["execution_count"] is None, path
            first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
            assert "parameters" in first_code["metadata"].get("tags", []), f"{path}: parameters cell first"
            assert "PROFILE" in "".join(first_code["source"])


@pytest.fixture(scope="module")
def solution_runs(repo, tmp_path_factory):
    build = tmp_path_factory.mktemp("build-solutions")
    rows = runner.run(None, src_dir=repo / "solutions", build_dir=build, profile="smoke", timeout=600,
                      strict_checks=True)
    return build, {r["notebook"]: r for r in rows}


@pytest.fixture(scope="module")
def student_runs(repo, tmp_path_factory):
    build = tmp_path_factory.mktemp("build-students")
    rows = runner.run(None, src_dir=repo / "notebooks", build_dir=build, profile="smoke", timeout=600,
                      strict_checks=False)
    return build, {r["notebook"]: r for r in rows}


def test_every_solution_runs_in_smoke_with_strict_checks(solution_runs, repo):
    build, rows = solution_runs
    assert set(rows) == set(_names(repo, "solutions"))
    for name, row in rows.items():
        assert row["status"] == "ok", f"{name}: {row['error']}"
        assert row["profile"] == "smoke" and row["seconds"] > 0 and row["peak_rss_mb"] > 0
        executed = nbformat.read(build / f"{name}.ipynb", as_version=4)
        text = json.dumps([c.get("outputs", []) for c in executed.cells])
        assert "✗" not in text and "pending" not in text, f"{name}: a check did not pass"
        assert (build / f"{name}.html").is_file()
    report = json.loads((build / "report.json").read_text())
    assert {r["notebook"] for r in report["notebooks"]} == set(rows)
    assert "00_welcome.html" in (build / "index.html").read_text()


def test_welcome_reports_its_metrics(solution_runs):
    _, rows = solution_runs
    metrics = rows["00_welcome"]["metrics"]
    assert metrics["cos_cat_kitten"] > metrics["cos_cat_stocks"] + 0.3


def test_every_student_copy_runs_to_the_end_with_pending_exercises(student_runs, repo):
    build, rows = student_runs
    for name, row in rows.items():
        assert row["status"] == "ok", f"{name}: {row['error']}"
        executed = nbformat.read(build / f"{name}.ipynb", as_version=4)
        outputs = json.dumps([c.get("outputs", []) for c in executed.cells], ensure_ascii=False)
        assert "… pending" in outputs, f"{name}: no exercise reported as pending"
        assert "✗" not in outputs
