"""``mmcourse grade`` (README, "Instructor guide"): real submissions made from the student copies.

The fast tests rebuild and screen every notebook without a kernel. The graded batches run
notebook 00 for real (about 30 s per submission): a folder of six students with two workers,
then the hostile cases (an endless loop, a crashing kernel, files that are not notebooks).
"""
from __future__ import annotations

import copy
import csv
import json
import socket
from pathlib import Path

import nbformat
import pytest

from mmcourse import grade, nbio

ROOT = Path(__file__).resolve().parent.parent
NAME = "00_welcome"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))


def _pair(name: str = NAME):
    return nbio.read(ROOT / "solutions" / f"{name}.ipynb"), nbio.read(ROOT / "notebooks" / f"{name}.ipynb")


def solved(name: str = NAME) -> nbformat.NotebookNode:
    """The student copy with every exercise filled in with the instructor's code (markers removed)."""
    source, student = _pair(name)
    answer = {c.get("id"): c.source for c in source.cells}
    out = copy.deepcopy(student)
    for cell in out.cells:
        if cell.cell_type == "code" and "# YOUR CODE HERE" in cell.source:
            cell.source = "\n".join(l for l in answer[cell.id].splitlines() if "SOLUTION" not in l)
    return out


def _cell(nb, function: str):
    return next(c for c in nb.cells if c.cell_type == "code" and f"def {function}(" in c.source)


def _put(nb, function: str, code: str):
    _cell(nb, function).source = code
    return nb


# ---------------------------------------------------------------------------- no kernel
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_exercise_has_a_check_and_the_solutions_raise_no_flag(name):
    source, student = _pair(name)
    full = grade.rebuild(source, solved(name), name)
    assert full.exercises and all(full.attempted.values())
    graded = {n for names in full.tokens.values() for n in names}
    assert {e.name for e in full.exercises} <= graded
    assert {n: grade.screen(code) for n, code in full.answers.items() if grade.screen(code)} == {}
    empty = grade.rebuild(source, student, name)
    assert not any(empty.attempted.values())


def test_rebuild_takes_only_the_exercise_code():
    source, student = _pair()
    sub = solved()
    for cell in sub.cells:  # tamper with everything that is not an exercise
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = 'PROFILE = "full"'
        elif cell.source.startswith("nb00.check_cosine_similarity"):
            cell.source = 'print("✓ cosine_similarity: correct")'
    rebuilt = grade.rebuild(source, sub, NAME)
    text = "\n".join(c.source for c in rebuilt.nb.cells)
    assert 'PROFILE = "full"' not in text and 'print("✓' not in text
    assert "nb00.check_cosine_similarity(cosine_similarity)" in text
    assert "return" in rebuilt.answers["cosine_similarity"]
    assert len(rebuilt.tokens) == 4 and len(set(rebuilt.tokens)) == 4
    # every token sits in the pristine cell of its check, right after the check statement
    for token, names in rebuilt.tokens.items():
        cell = next(c for c in rebuilt.nb.cells if token in c.source)
        assert cell.metadata.get("mmcourse_grade") != "answer"
        lines = cell.source.splitlines()
        assert f"check_{names[0]}(" in lines[lines.index(next(l for l in lines if token in l)) - 1]


def test_rebuild_survives_deleted_reordered_duplicated_and_retyped_cells():
    source, _ = _pair()
    sub = solved()
    quiz1 = copy.deepcopy(_cell(sub, "quiz_0_1"))
    wrong = copy.deepcopy(quiz1)
    wrong.source = wrong.source.replace("return", "return 99 or")  # an earlier, wrong attempt
    keep = [c for c in sub.cells if "def quiz_0_3(" not in c.source and "def quiz_0_1(" not in c.source
            and c.cell_type == "code" and "def " in c.source]
    for c in keep + [quiz1]:
        c["id"] = "retyped-" + c.get("id", "x")
    sub.cells = [wrong, *reversed(keep), quiz1]
    rebuilt = grade.rebuild(source, sub, NAME)
    assert rebuilt.answers["quiz_0_1"] == quiz1.source.replace("\nnb00.check_quiz_0_1(quiz_0_1)", "").strip()
    assert rebuilt.attempted == {"cosine_similarity": True, "quiz_0_1": True, "quiz_0_2": True,
                                 "quiz_0_3": False}
    assert "raise NotImplementedError" in rebuilt.answers["quiz_0_3"]


@pytest.mark.parametrize("code, reason", [
    ("import mmcourse.checks\ndef f(): pass", "imports mmcourse.checks"),
    ("from mmcourse import checks\ndef f(): pass", "imports mmcourse.checks"),
    ("def f():\n    nb00.check_f = lambda g: True", "uses the checks module nb00"),
    ("import builtins\nbuiltins.print = None", "imports builtins"),
    ("import sys\nsys.modules['x'] = 1", "sys.modules"),
    ("def f():\n    globals()['g'] = 1", "globals()"),
    ("def f():\n    setattr(np, 'dot', None)", "setattr"),
    ("import IPython\ndef f(): pass", "imports IPython"),
    ("import sys\nsys.excepthook = print", "sys.excepthook"),
    ("def f():\n    np.dot = lambda a, b: 1", "assigns an attribute of np"),
    ("def f():\n    return get_ipython().user_ns", "get_ipython"),
    ("def f():\n    return In[-1]", "input history"),
    ("def f():\n    open('../solutions/00_welcome.ipynb', 'w').write('x')", "outside the working directory"),
    ("def f():\n    open('/etc/passwd', mode='a')", "outside the working directory"),
    ("import shutil\ndef f():\n    shutil.rmtree('x')", "changes files"),
    ("import os\ndef f():\n    os.system('ls')", "changes files or runs programs"),
])
def test_screen_flags_code_that_reaches_into_the_grader(code, reason):
    assert any(reason in f for f in grade.screen(code)), grade.screen(code)


@pytest.mark.parametrize("code", [
    "def f(a, b):\n    a.x = 1\n    return open('notes.txt').read()",
    "def f(x):\n    out = {}\n    out['y'] = x\n    with open('scratch.txt', 'w') as fh:\n        fh.write('ok')\n    return out",
    "class Box:\n    def __init__(self):\n        self.v = 1",
    "def f(: syntax error",
])
def test_screen_leaves_ordinary_code_alone(code):
    assert grade.screen(code) == []


def _write(path: Path, nb) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nbio.dumps(nb) if not isinstance(nb, str) else nb, encoding="utf-8")
    return path


def test_unreadable_files_get_a_clear_error_row_without_a_kernel(tmp_path):
    subs = tmp_path / "subs"
    _write(subs / "mallory" / f"{NAME}.ipynb", '{"cells": [')
    _write(subs / "empty" / f"{NAME}.ipynb", "")
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    _write(subs / "oscar.ipynb", other)
    reports = grade.grade([subs], tmp_path / "out", ROOT / "solutions", jobs=2)
    by = {r["student"]: r for r in reports}
    assert "malformed JSON" in by["mallory"]["error"] and "empty" in by["empty"]["error"]
    assert "not a copy of any course notebook" in by["oscar"]["error"]
    rows = {r["student"]: r for r in csv.DictReader((tmp_path / "out" / "grades.csv").open())}
    assert set(rows) == {"mallory", "empty", "oscar"} and "malformed JSON" in rows["mallory"]["notes"]
    assert json.loads((tmp_path / "out" / "mallory" / NAME / "results.json").read_text())["score"] == 0
    assert "Could not grade" in (tmp_path / "out" / "oscar" / "oscar" / "feedback.md").read_text()


# ---------------------------------------------------------------------------- real kernels
FAKE_TICK = 'print("✓ cosine_similarity: correct")'


@pytest.fixture(scope="module")
def loopback_port():
    """A listening socket on this machine's loopback: reachable only without isolation."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, loopback_port):
    """Six students graded by two workers."""
    root = tmp_path_factory.mktemp("grade")
    subs = root / "subs"
    _write(subs / "alice" / f"{NAME}.ipynb", solved())
    _write(subs / "bob" / f"{NAME}.ipynb", _pair()[1])
    carol = _put(solved(), "cosine_similarity",
                 "nb00.check_cosine_similarity = lambda f: print('✓ cosine_similarity: correct')\n"
                 "def cosine_similarity(a, b):\n    return 0.0")
    _write(subs / "carol" / f"{NAME}.ipynb", carol)
    dave = _put(solved(), "cosine_similarity",
                "def cosine_similarity(a, b):\n"
                f"    {FAKE_TICK}\n"
                "    print('MMCOURSE-VERDICT {\"token\": \"0\" , \"verdicts\": []}')\n"
                "    return 0.0\n"
                f"{FAKE_TICK}")
    _write(subs / "dave" / f"{NAME}.ipynb", dave)
    erin = solved()
    probe = ("def quiz_0_2():\n    import socket\n    try:\n"
             f"        socket.create_connection(('127.0.0.1', {loopback_port}), timeout=2).close()\n"
             "        print('network probe: connected')\n    except OSError as exc:\n"
             "        print('network probe: refused', type(exc).__name__)\n    return -1.0")
    _put(erin, "quiz_0_2", probe)
    erin.cells = [c for c in erin.cells if c.cell_type == "code" and "def " in c.source
                  and "def quiz_0_3(" not in c.source][::-1]
    _write(subs / "erin" / f"{NAME}.ipynb", erin)
    frank = _put(solved(), "cosine_similarity",
                 "def cosine_similarity(a, b):\n"
                 "    open('../solutions/00_welcome.ipynb', 'w').write('overwritten')\n"
                 "    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))")
    _write(subs / "frank" / f"{NAME}.ipynb", frank)
    before = (ROOT / "solutions" / f"{NAME}.ipynb").read_bytes()
    reports = grade.grade([subs], root / "out", ROOT / "solutions", jobs=2, cell_timeout=120,
                          timeout=400)
    assert (ROOT / "solutions" / f"{NAME}.ipynb").read_bytes() == before
    return root, {r["student"]: r for r in reports}


def _verdicts(report):
    return {e["exercise"]: e["verdict"] for e in report["exercises"]}


def _score(report):
    return sum(e["score"] for e in report["exercises"])


def test_correct_submission_scores_full_marks(batch):
    root, by = batch
    assert set(_verdicts(by["alice"]).values()) == {"passed"} and _score(by["alice"]) == 4
    results = json.loads((root / "out" / "alice" / NAME / "results.json").read_text())
    assert results["score"] == 4 and len(results["tests"]) == 4
    assert {t["max_score"] for t in results["tests"]} == {1.0}
    assert {t["visibility"] for t in results["tests"]} == {"visible"}
    assert "Score: 4 / 4" in (root / "out" / "alice" / NAME / "feedback.md").read_text()


def test_untouched_copy_scores_zero_with_everything_pending(batch):
    _, by = batch
    assert set(_verdicts(by["bob"]).values()) == {"pending"} and _score(by["bob"]) == 0


def test_redefining_a_check_is_flagged_and_earns_nothing(batch):
    _, by = batch
    carol = next(e for e in by["carol"]["exercises"] if e["exercise"] == "cosine_similarity")
    assert carol["verdict"] == "flagged" and carol["score"] == 0
    assert any("nb00" in f for f in carol["feedback"])
    assert _score(by["carol"]) == 3  # the other exercises are still graded


def test_a_printed_tick_or_a_forged_verdict_line_earns_nothing(batch):
    _, by = batch
    assert _verdicts(by["dave"])["cosine_similarity"] == "failed"
    assert _score(by["dave"]) == 3


def test_deleted_and_reordered_cells_are_graded_by_name(batch):
    _, by = batch
    assert _verdicts(by["erin"]) == {"cosine_similarity": "passed", "quiz_0_1": "passed",
                                     "quiz_0_2": "passed", "quiz_0_3": "pending"}


def test_network_is_isolated_or_the_report_says_it_is_not(batch):
    root, by = batch
    executed = (root / "out" / "erin" / NAME / "graded.ipynb").read_text()
    if by["erin"]["network"].startswith("isolated"):
        assert "network probe: refused" in executed
    else:
        assert "NOT isolated" in by["erin"]["network"] and "network probe: connected" in executed


def test_writing_to_the_sources_is_flagged_and_changes_nothing(batch):
    _, by = batch
    frank = next(e for e in by["frank"]["exercises"] if e["exercise"] == "cosine_similarity")
    assert frank["verdict"] == "flagged" and any("outside the working directory" in f
                                                 for f in frank["feedback"])


def test_two_workers_write_one_gradebook_row_per_student(batch):
    root, by = batch
    rows = list(csv.DictReader((root / "out" / "grades.csv").open()))
    assert [r["student"] for r in rows] == sorted(by) == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert {r["student"]: r["score"] for r in rows} == {"alice": "4", "bob": "0", "carol": "3",
                                                        "dave": "3", "erin": "3", "frank": "3"}
    assert "flagged" in next(r for r in rows if r["student"] == "carol")["notes"]


def test_endless_loop_and_dead_kernel_are_stopped_and_the_batch_goes_on(tmp_path):
    subs = tmp_path / "subs"
    gina = _put(solved(), "quiz_0_1",
                "def quiz_0_1():\n    import time\n    while True:\n        try:\n"
                "            time.sleep(0.1)\n        except KeyboardInterrupt:\n            pass\n"
                "nb00.check_quiz_0_1(quiz_0_1)")
    _write(subs / "gina" / f"{NAME}.ipynb", gina)
    judy = _put(solved(), "quiz_0_2", "def quiz_0_2():\n    import os\n    os._exit(3)")
    _put(judy, "quiz_0_1", "def quiz_0_1():\n    while True:\n        pass")  # the interrupt stops it
    _write(subs / "judy" / f"{NAME}.ipynb", judy)
    reports = {r["student"]: r for r in grade.grade([subs], tmp_path / "out", ROOT / "solutions",
                                                     jobs=1, cell_timeout=15, timeout=90)}
    gina_v, judy_v = _verdicts(reports["gina"]), _verdicts(reports["judy"])
    assert gina_v["cosine_similarity"] == "passed" and gina_v["quiz_0_1"] == "timeout"
    assert reports["gina"]["seconds"] < 150
    assert judy_v == {"cosine_similarity": "passed", "quiz_0_1": "timeout", "quiz_0_2": "error",
                      "quiz_0_3": "error"}
    assert (tmp_path / "out" / "judy" / NAME / "feedback.md").exists()


def test_points_come_from_cell_metadata_and_written_answers_are_kept_for_a_person():
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("from mmcourse.checks import nb00"),
        nbformat.v4.new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
                                  "nb00.check_double(double)", metadata={"mmcourse": {"points": 2.5}}),
        nbformat.v4.new_markdown_cell("Why?\n\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
    ])
    for i, c in enumerate(source.cells):
        c["id"] = f"c{i}"
    assert [(e.name, e.points) for e in grade.exercises(source)] == [("double", 2.5)]
    student = nbformat.from_dict(copy.deepcopy(dict(grade.release.release_notebook(source))))
    student.cells[2].source = "Why?\n\nBecause doubling is linear."
    student.cells[1].source = "def double(x):\n    return x + x\nnb00.check_double(double)"
    rebuilt = grade.rebuild(source, student, "toy.ipynb")
    assert rebuilt.written == {"c2": "Why?\n\nBecause doubling is linear."}
    assert rebuilt.answers == {"double": "def double(x):\n    return x + x"} and rebuilt.attempted["double"]
    assert "Because." not in "\n".join(c.source for c in rebuilt.nb.cells)  # no solution leaks in
