"""The classroom workflow: release of student copies (mmcourse.release), running notebooks
(mmcourse.runner, the `mmcourse run` command) and the build report (mmcourse.report)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from mmcourse import cli, nbio
from mmcourse.release import check_release, release, release_notebook, strip_outputs
from mmcourse.report import summary_table
from mmcourse.runner import run

EXERCISE = textwrap.dedent('''\
    import math

    def area(r):
        """Area of a circle of radius r."""
        ### BEGIN SOLUTION
        squared = r ** 2
        return math.pi * squared
        ### END SOLUTION

    class Box:
        def volume(self, side):
            ### BEGIN SOLUTION
            return side ** 3
            ### END SOLUTION
    ''')

ANSWER = ("Why?\n<!-- BEGIN SOLUTION -->\nBecause the gradient vanishes.\n"
          "<!-- END SOLUTION -->\nNext.")


def make_nb(*cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def course_nb() -> nbformat.NotebookNode:
    return make_nb(
        new_code_cell('PROFILE = "smoke"', metadata={"tags": ["parameters"]}),
        new_code_cell(EXERCISE),
        new_markdown_cell(ANSWER),
        new_code_cell("print(area(2.0))", metadata={"tags": ["solution_only"]}),
        new_code_cell("x = 1"),
    )


def write(nb, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# ---------------------------------------------------------------------------- release

def test_stub_replaces_solution_inside_functions():
    student = release_notebook(course_nb(), source="solutions/01_x.ipynb")
    code = student.cells[1].source
    assert "    # YOUR CODE HERE\n    raise NotImplementedError\n" in code
    assert "        # YOUR CODE HERE\n        raise NotImplementedError\n" in code
    assert "math.pi" not in code and "side ** 3" not in code and "SOLUTION" not in code
    assert '"""Area of a circle of radius r."""' in code  # text around the block is kept
    namespace: dict = {}
    exec(compile(code, "<student>", "exec"), namespace)  # defining does not raise
    with pytest.raises(NotImplementedError):
        namespace["area"](1.0)
    with pytest.raises(NotImplementedError):
        namespace["Box"]().volume(2)


def test_top_level_marker_is_an_error():
    nb = make_nb(new_code_cell("x = 1"),
                 new_code_cell("### BEGIN SOLUTION\ny = 2\n### END SOLUTION\n"))
    with pytest.raises(ValueError, match=r"solutions/02_y\.ipynb, cell 1.*inside a function"):
        release_notebook(nb, source="solutions/02_y.ipynb")


def test_indented_marker_outside_function_is_an_error():
    body = "if True:\n    ### BEGIN SOLUTION\n    y = 2\n    ### END SOLUTION\n"
    nb = make_nb(new_code_cell(body))
    with pytest.raises(ValueError, match="inside a function"):
        release_notebook(nb)


@pytest.mark.parametrize("body, message", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    ### END SOLUTION\n", "without a matching"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    return 1\n"
     "    ### END SOLUTION\n    ### END SOLUTION\n", "nested"),
])
def test_unbalanced_or_nested_markers_are_errors(body, message):
    with pytest.raises(ValueError, match=message):
        release_notebook(make_nb(new_code_cell(body)))


def test_markdown_answers_and_solution_only_cells():
    student = release_notebook(course_nb())
    assert len(student.cells) == 4  # the solution_only cell is dropped
    assert student.cells[2].source == "Why?\n*Your answer here.*\nNext."
    assert all("print(area" not in c.source for c in student.cells)
    with pytest.raises(ValueError, match="never closed"):
        release_notebook(make_nb(new_markdown_cell("<!-- BEGIN SOLUTION -->\nanswer")))


def test_outputs_cleared_metadata_set_and_input_untouched():
    nb = course_nb()
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="1\n")]
    nb.cells[4].execution_count = 7
    nb.metadata["papermill"] = {"duration": 1.0}
    before = nbformat.writes(nb)
    student = release_notebook(nb, source="solutions/01_x.ipynb")
    assert nbformat.writes(nb) == before  # pure
    code = [c for c in student.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert student.metadata["mmcourse"] == {"copy": "student",
                                            "generated_from": "solutions/01_x.ipynb"}
    assert student.metadata["kernelspec"]["name"] == "python3"
    assert "papermill" not in student.metadata
    nbformat.validate(student)


def test_release_is_deterministic_and_atomic(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "notebooks"
    write(course_nb(), src / "01_x.ipynb")
    write(make_nb(new_code_cell("print('hi')")), src / "02_y.ipynb")
    paths = release(src, dst)
    assert paths == [dst / "01_x.ipynb", dst / "02_y.ipynb"]
    first = [p.read_bytes() for p in paths]
    release(src, dst)
    assert [p.read_bytes() for p in paths] == first
    assert first[0].endswith(b"\n")
    student = nbformat.read(str(paths[0]), as_version=4)
    assert student.metadata["mmcourse"]["generated_from"] == "solutions/01_x.ipynb"
    assert not list(dst.glob(".*"))  # no temp files left
    assert release(src, dst, names=["02*"]) == [dst / "02_y.ipynb"]
    assert release(src, dst, names=["01"]) == [dst / "01_x.ipynb"]
    with pytest.raises(FileNotFoundError):
        release(src, dst, names=["99_nope"])


def test_release_writes_nothing_when_a_source_is_broken(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "notebooks"
    write(course_nb(), src / "01_x.ipynb")
    write(make_nb(new_code_cell("### BEGIN SOLUTION\n1\n### END SOLUTION")), src / "02_bad.ipynb")
    with pytest.raises(ValueError, match="02_bad"):
        release(src, dst)
    assert not dst.exists() or not list(dst.iterdir())


def test_check_release_detects_problems(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "notebooks"
    source = write(course_nb(), src / "01_x.ipynb")
    write(make_nb(new_code_cell("x = 2")), src / "02_y.ipynb")
    (student,) = release(src, dst, names=["01_x"])
    problems = check_release(src, dst)
    assert len(problems) == 1 and "02_y.ipynb: missing" in problems[0]
    release(src, dst)
    assert check_release(src, dst) == []

    # stale: the source changed after the release
    nb = course_nb()
    nb.cells[4].source = "x = 2"
    write(nb, source)
    assert any("01_x.ipynb: stale" in p for p in check_release(src, dst))
    release(src, dst)

    # a solution line leaked into the student copy (edited by hand)
    good = student.read_text()
    leaked = nbformat.read(str(student), as_version=4)
    leaked.cells[1].source = leaked.cells[1].source.replace(
        "    # YOUR CODE HERE\n    raise NotImplementedError", "    squared = r ** 2")
    write(leaked, student)
    problems = check_release(src, dst)
    assert any("solution line leaked: 'squared = r ** 2'" in p for p in problems)
    assert any("stale" in p for p in problems)

    # a marker left in the student copy
    marked = nbformat.reads(good, as_version=4)
    marked.cells[1].source += "\ndef g():\n    ### BEGIN SOLUTION\n    pass\n"
    write(marked, student)
    assert any("marker left" in p for p in check_release(src, dst))
    student.write_text(good)
    assert check_release(src, dst) == []

    # outputs in the instructor source; strip_outputs cleans them
    nb = nbformat.read(str(source), as_version=4)
    nb.cells[4].outputs = [new_output("stream", name="stdout", text="1\n")]
    nb.cells[4].execution_count = 3
    write(nb, source)
    assert any("outputs or execution counts in cells [4]" in p for p in check_release(src, dst))
    assert strip_outputs(source) is True
    assert strip_outputs(source) is False
    assert check_release(src, dst) == []

    # an extra student notebook with no source
    write(make_nb(), dst / "03_orphan.ipynb")
    assert any("03_orphan.ipynb: extra" in p for p in check_release(src, dst))


def test_summary_table():
    rows = [{"notebook": "00_welcome", "status": "ok", "seconds": 3.21, "peak_rss_mb": 512.4,
             "profile": "smoke", "data_sources": {"fsdd": "real"}, "metrics": {"acc": 0.98765},
             "error": None},
            {"notebook": "01_long_name", "status": "failed", "seconds": 10.0, "peak_rss_mb": None,
             "profile": "smoke", "data_sources": {}, "metrics": {}, "error": "ValueError: bad"}]
    lines = summary_table(rows).splitlines()
    assert lines[0].split() == ["notebook", "status", "seconds", "peak", "MiB", "profile",
                                "data", "metrics"]
    assert lines[2].split() == ["00_welcome", "ok", "3.2", "512", "smoke", "fsdd=real",
                                "acc=0.9877"]
    assert lines[2].index("ok") == lines[3].index("failed")  # aligned
    assert lines[-1] == "01_long_name: failed: ValueError: bad"


# ---------------------------------------------------------------------------- run

OK_CELL = textwrap.dedent('''\
    import os
    import mmcourse.config, mmcourse.report
    mmcourse.report.log_metric("acc", 0.5)
    mmcourse.report.log_data_source("toy", "synthetic")
    mmcourse.report.log_metric("strict", os.environ.get("MMCOURSE_STRICT_CHECKS", "unset"))
    print("profile:", PROFILE, mmcourse.config.profile())
    blob = b"x" * (200 * 2**20)  # the kernel's peak memory must show in the report
    del blob
    ''')

SLEEP_CELL = textwrap.dedent('''\
    import os, subprocess
    helper = subprocess.Popen(["sleep", "300"])
    strict = os.environ.get("MMCOURSE_STRICT_CHECKS", "unset")
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(f"{os.getpid()} {helper.pid} {strict}")
    ''')


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead, only not yet reaped by its new parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def solutions_run(tmp_path_factory):
    """One strict run over a tmp folder of instructor notebooks: one that works, one that raises.

    The folder is deliberately not named ``solutions``: strictness is the caller's choice.
    """
    root = tmp_path_factory.mktemp("course")
    src, build = root / "instructor", root / "build"
    write(make_nb(new_code_cell('PROFILE = "smoke"', metadata={"tags": ["parameters"]}),
                  new_code_cell(OK_CELL)), src / "a_ok.ipynb")
    write(make_nb(new_code_cell("x = 1"), new_code_cell("raise ValueError('boom: wrong shape')")),
          src / "b_fail.ipynb")
    build.mkdir()
    old = {"notebook": "zz_old", "status": "ok", "seconds": 1.0, "peak_rss_mb": None,
           "profile": "smoke", "data_sources": {}, "metrics": {}, "error": None, "started": "x"}
    stale = dict(old, notebook="a_ok", status="failed")
    (build / "report.json").write_text(json.dumps({"notebooks": [old, stale]}))
    rows = run(src_dir=src, build_dir=build, profile="full", timeout=180, strict_checks=True)
    return {row["notebook"]: row for row in rows}, build


@pytest.mark.notebooks
def test_run_ok_notebook(solutions_run):
    rows, build = solutions_run
    row = rows["a_ok"]
    assert row["status"] == "ok", row["error"]
    assert row["error"] is None and row["profile"] == "full"
    assert row["metrics"] == {"acc": 0.5, "strict": "1"}  # strict_checks=True
    assert row["data_sources"] == {"toy": "synthetic"}
    assert row["peak_rss_mb"] and row["peak_rss_mb"] >= 200  # the kernel's 200 MiB, measured
    # by the runner (nothing is registered in the kernel at import)
    assert row["seconds"] > 0 and row["started"].startswith("20")

    executed = nbformat.read(str(build / "a_ok.ipynb"), as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'PROFILE = "full"' in injected[0].source
    out = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code"
                  for o in c.outputs)
    assert "profile: full full" in out

    page = (build / "index.html").read_text()
    assert 'href="a_ok.html"' in page and 'href="a_ok.ipynb"' in page
    assert (build / "a_ok.html").stat().st_size > 1000
    assert "profile: full full" in (build / "a_ok.log").read_text()

    report = json.loads((build / "report.json").read_text())
    by_name = {r["notebook"]: r for r in report["notebooks"]}
    assert sorted(by_name) == ["a_ok", "b_fail", "zz_old"]  # old rows kept, re-run replaced
    assert by_name["a_ok"] == row
    assert by_name["a_ok"]["peak_rss_mb"] >= 200 and by_name["b_fail"]["peak_rss_mb"] > 10
    assert not list(build.glob(".*"))  # no temp files left


@pytest.mark.notebooks
def test_run_failing_notebook(solutions_run):
    rows, build = solutions_run
    row = rows["b_fail"]
    assert row["status"] == "failed"
    assert row["error"] == "ValueError: boom: wrong shape"
    assert (build / "b_fail.html").exists()
    assert "b_fail: failed: ValueError: boom: wrong shape" in summary_table(list(rows.values()))


@pytest.mark.notebooks
def test_run_timeout_kills_kernel(tmp_path, monkeypatch):
    src, build = tmp_path / "notebooks", tmp_path / "build"
    pid_file = tmp_path / "pids.txt"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")  # must not leak into a lenient run
    write(make_nb(new_code_cell(SLEEP_CELL), new_code_cell("import time\ntime.sleep(600)")),
          src / "c_sleep.ipynb")
    t0 = time.monotonic()
    (row,) = run(["c_sleep"], src_dir=src, build_dir=build, timeout=15, strict_checks=False)
    assert time.monotonic() - t0 < 60
    assert row["status"] == "timeout"
    assert "killed after 15 s in cell 1" in row["error"]
    assert row["peak_rss_mb"] and row["peak_rss_mb"] > 10  # seen just before the kill
    assert (build / "c_sleep.html").exists()  # the partial notebook is still rendered
    kernel_pid, helper_pid, strict = pid_file.read_text().split()
    assert strict == "unset"  # strict_checks=False removes the inherited variable
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_alive(int(kernel_pid)) or _alive(int(helper_pid))):
        time.sleep(0.2)
    assert not _alive(int(kernel_pid)), "kernel left running"
    assert not _alive(int(helper_pid)), "kernel's child process left running"


@pytest.mark.notebooks
def test_terminated_runner_takes_the_kernel_down(tmp_path):
    src, build = tmp_path / "notebooks", tmp_path / "build"
    pid_file = tmp_path / "pids.txt"
    write(make_nb(new_code_cell(SLEEP_CELL), new_code_cell("import time\ntime.sleep(600)")),
          src / "d_sleep.ipynb")
    env = dict(os.environ, PID_FILE=str(pid_file))
    runner = subprocess.Popen([sys.executable, "-m", "mmcourse", "run", "d_sleep", "--src", str(src),
                               "--build", str(build)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not pid_file.exists():
        time.sleep(0.2)
    kernel_pid, helper_pid, _ = pid_file.read_text().split()
    runner.terminate()  # SIGTERM, as `kill` or a cancelled CI job sends
    assert runner.wait(timeout=30) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (_alive(int(kernel_pid)) or _alive(int(helper_pid))):
        time.sleep(0.2)
    assert not _alive(int(kernel_pid)), "kernel left running after SIGTERM"
    assert not _alive(int(helper_pid)), "kernel's child process left running after SIGTERM"


def test_run_rejects_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match="unknown profile"):
        run(src_dir=tmp_path, build_dir=tmp_path / "build", profile="huge", strict_checks=True)


def test_select_names(tmp_path):
    for stem in ["00_welcome", "01_text", "02_image"]:
        write(make_nb(), tmp_path / f"{stem}.ipynb")
    pick = lambda names: [p.stem for p in nbio.select(tmp_path, names)]  # noqa: E731
    assert pick(None) == ["00_welcome", "01_text", "02_image"]
    assert pick(["02_image", "0[01]*", "01"]) == ["02_image", "00_welcome", "01_text"]
    assert pick(["solutions/01_text.ipynb"]) == ["01_text"]


# ---------------------------------------------------------------------------- mmcourse run (CLI)

@pytest.mark.notebooks
def test_cli_profile_argument_beats_environment(tmp_path, monkeypatch, capsys):
    """`make course PROFILE=full` with MMCOURSE_PROFILE=smoke exported runs full, and says so."""
    src, build = tmp_path / "nbs", tmp_path / "build"
    write(make_nb(new_code_cell('PROFILE = "smoke"', metadata={"tags": ["parameters"]}),
                  new_code_cell(OK_CELL)), src / "e_profile.ipynb")
    monkeypatch.setenv("MMCOURSE_PROFILE", "smoke")
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    status = cli.main(["run", "e_profile", "--src", str(src), "--build", str(build),
                       "--profile", "full", "--lenient-checks", "--timeout", "180"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "profile: full (from --profile; MMCOURSE_PROFILE=smoke ignored)" in out
    assert "checks: lenient" in out and "(--lenient-checks)" in out
    assert "[e_profile] profile: full full" in out  # PROFILE parameter and the kernel's variable
    assert "wins over" not in out  # the kernel's environment agrees with its parameter
    (row,) = json.loads((build / "report.json").read_text())["notebooks"]
    assert row["profile"] == "full" and row["metrics"]["strict"] == "unset"


@pytest.mark.parametrize("argv, env, printed, kwargs", [
    ([], "", ["profile: smoke (the default; choose with --profile or MMCOURSE_PROFILE)",
              "checks: strict", "(default; --lenient-checks for student copies)"],
     {"profile": "smoke", "strict_checks": True}),
    (["--strict-checks"], "full", ["profile: full (from MMCOURSE_PROFILE)", "(--strict-checks)"],
     {"profile": "full", "strict_checks": True}),
    (["--profile", "smoke", "--lenient-checks"], "full",
     ["profile: smoke (from --profile; MMCOURSE_PROFILE=full ignored)", "checks: lenient"],
     {"profile": "smoke", "strict_checks": False}),
])
def test_cli_run_says_which_profile_and_checks(monkeypatch, capsys, argv, env, printed, kwargs):
    from mmcourse import runner
    calls = []
    monkeypatch.setattr(runner, "run", lambda *a, **kw: calls.append(kw) or [{"status": "ok"}])
    monkeypatch.setenv("MMCOURSE_PROFILE", env)
    assert cli.main(["run", "00_welcome", *argv]) == 0
    out = capsys.readouterr().out
    for line in printed:
        assert line in out
    assert {k: calls[0][k] for k in kwargs} == kwargs


def test_cli_strict_and_lenient_are_exclusive(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--strict-checks", "--lenient-checks"])


def test_report_does_nothing_at_import(tmp_path):
    """Importing mmcourse.report in a kernel registers nothing: no record is written at exit."""
    record = tmp_path / "record.jsonl"
    env = dict(os.environ, MMCOURSE_RECORD_FILE=str(record))
    subprocess.run([sys.executable, "-c", "import mmcourse.report"], env=env, check=True)
    assert not record.exists()


QUESTIONNAIRE = ("**Q1.** Why divide by √d?\n\n<details><summary>Answer</summary>\n\nThe variance of a dot "
                 "product grows with d.\n\n</details>\n\n**Q2.** Name a pitfall.\n\n"
                 "<details>\n<summary>Answer</summary>\nLeakage.\n</details>\n")


def test_questionnaire_answers_stay_for_self_study_and_strip_for_a_class(tmp_path):
    src, dst, cls = tmp_path / "src", tmp_path / "dst", tmp_path / "class"
    src.mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell(QUESTIONNAIRE)]), src / "01_x.ipynb")
    release(src, dst)
    kept = nbio.read(dst / "01_x.ipynb").cells[0].source
    assert kept.count("<summary>Answer</summary>") == 2 and "variance" in kept
    assert cli.main(["release", "--src", str(src), "--dst", str(cls), "--strip-answers"]) == 0
    stripped = nbio.read(cls / "01_x.ipynb")
    text = stripped.cells[0].source
    assert "Q1." in text and "Q2." in text and "variance" not in text and "Leakage" not in text
    assert "<details>" not in text and stripped.metadata["mmcourse"]["answers"] == "stripped"


def test_summary_table_shortens_long_metric_lists():
    metrics = {f"m{i}": float(i) for i in range(9)}
    row = {"notebook": "08_x", "status": "ok", "seconds": 1.0, "peak_rss_mb": 1.0, "profile": "smoke",
           "data_sources": {}, "metrics": metrics, "error": None}
    line = summary_table([row]).splitlines()[2]
    assert "m5=5" in line and "m6=" not in line and "3 more in report.json" in line
