"""Student copies of the instructor notebooks (README "Classroom workflow"; notebook 00_welcome,
"How exercises, checks and solutions work").

``solutions/NN_name.ipynb`` is the instructor source. :func:`release` writes the student copy
``notebooks/NN_name.ipynb`` with each exercise replaced by a stub; :func:`check_release` says
whether the two folders are in sync; :func:`strip_outputs` cleans an instructor source.
"""
from __future__ import annotations

import ast
import copy
import os
import re
from pathlib import Path
from typing import Any

import nbformat

from mmcourse import nbio
from mmcourse.fileio import write_text_atomic

STUB_CODE = ("# YOUR CODE HERE", "raise NotImplementedError")
STUB_MARKDOWN = "*Your answer here.*"
SOLUTION_ONLY_TAG = "solution_only"

# nbgrader's markers (any number of '#', trailing text tolerated so a sloppy marker never leaks).
_CODE_MARKER = re.compile(r"^(?P<indent>[ \t]*)#+[ \t]*(?P<kind>BEGIN|END)[ \t]+SOLUTION\b")
_MD_MARKER = re.compile(r"<!--\s*(?P<kind>BEGIN|END)\s+SOLUTION\s*-->")
# A questionnaire's model answer: <details><summary>Answer</summary> … </details> (COURSE_DESIGN §4).
_ANSWER_BLOCK = re.compile(r"\n?[ \t]*<details>\s*<summary>\s*Answer\s*</summary>.*?</details>[ \t]*",
                           re.DOTALL | re.IGNORECASE)


def strip_answers(markdown: str) -> str:
    """Remove the model answers (``<details><summary>Answer</summary>…</details>``) from markdown."""
    return _ANSWER_BLOCK.sub("", markdown)


def _release_code(source: str, where: str) -> tuple[str, list[int]]:
    """Replace each marked block of a code cell by the two-line stub.

    Returns the new source and the line numbers of its ``raise NotImplementedError`` stubs.
    """
    out: list[str] = []
    stubs: list[int] = []
    begin: tuple[int, str] | None = None  # (line number, indentation) of the open BEGIN
    lines = source.splitlines(keepends=True)
    for lineno, line in enumerate(lines, 1):
        m = _CODE_MARKER.match(line)
        if not m:
            if begin is None:
                out.append(line)
            continue
        indent = m["indent"]
        if m["kind"] == "BEGIN":
            if begin is not None:
                raise ValueError(f"{where}, line {lineno}: nested '### BEGIN SOLUTION' "
                                 f"(the block opened on line {begin[0]} is not closed)")
            if not indent:
                raise ValueError(f"{where}, line {lineno}: '### BEGIN SOLUTION' at indentation 0; "
                                 "put the exercise inside a function so defining it does not "
                                 "raise and its check can report it as pending")
            begin = (lineno, indent)
        else:
            if begin is None:
                raise ValueError(f"{where}, line {lineno}: '### END SOLUTION' without a "
                                 "matching '### BEGIN SOLUTION'")
            newline = "\n" if line.endswith("\n") else ""
            out.append(f"{begin[1]}{STUB_CODE[0]}\n{begin[1]}{STUB_CODE[1]}{newline}")
            stubs.append(sum(chunk.count("\n") for chunk in out) + (not newline))
            begin = None
    if begin is not None:
        raise ValueError(f"{where}, line {begin[0]}: '### BEGIN SOLUTION' is never closed "
                         "by '### END SOLUTION'")
    return "".join(out), stubs


def _check_stubs_in_functions(released: str, stub_lines: list[int], where: str) -> None:
    """Every stub must sit inside a function body (best effort: skipped if not plain Python)."""
    try:
        tree = ast.parse(released)
    except SyntaxError:
        return  # IPython magics etc.: the indentation rule already applied
    spans = [(n.lineno, n.end_lineno or n.lineno) for n in ast.walk(tree)
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for lineno in stub_lines:
        if not any(a < lineno <= b for a, b in spans):
            raise ValueError(f"{where}: the exercise stub on line {lineno} is not inside a "
                             "function body; put the exercise inside a function")


def _md_blocks(source: str, where: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the markdown answer blocks, markers included."""
    spans, start = [], None
    for m in _MD_MARKER.finditer(source):
        if m["kind"] == "BEGIN":
            if start is not None:
                raise ValueError(f"{where}: nested '<!-- BEGIN SOLUTION -->'")
            start = m.start()
        else:
            if start is None:
                raise ValueError(f"{where}: '<!-- END SOLUTION -->' without a matching BEGIN")
            spans.append((start, m.end()))
            start = None
    if start is not None:
        raise ValueError(f"{where}: '<!-- BEGIN SOLUTION -->' is never closed")
    return spans


def _release_markdown(source: str, where: str) -> str:
    out, pos = [], 0
    for a, b in _md_blocks(source, where):
        out += [source[pos:a], STUB_MARKDOWN]
        pos = b
    out.append(source[pos:])
    return "".join(out)


def release_notebook(nb: nbformat.NotebookNode, source: str | None = None,
                     answers: bool = True) -> nbformat.NotebookNode:
    """Return the student copy of instructor notebook ``nb`` (``nb`` is not modified).

    ``answers=False`` also removes the questionnaires' model answers (a class that is graded on
    them); by default self-paced learners keep them, collapsed.

    ``source`` labels the instructor notebook (e.g. ``"solutions/05_fusion_math.ipynb"``) in
    error messages and in ``metadata["mmcourse"]["generated_from"]``. Raises ``ValueError``
    for unbalanced, nested or top-level solution markers.
    """
    label = source or "<notebook>"
    new = nbformat.from_dict(copy.deepcopy(dict(nb)))
    cells = []
    for index, cell in enumerate(new.get("cells", [])):
        if SOLUTION_ONLY_TAG in nbio.tags(cell):
            continue
        where = f"{label}, cell {index}"
        if cell.get("cell_type") == "code":
            released, stubs = _release_code(nbio.text(cell.get("source", "")), where)
            if stubs:
                _check_stubs_in_functions(released, stubs, where)
            cell["source"] = released
        elif cell.get("cell_type") == "markdown":
            cell["source"] = _release_markdown(nbio.text(cell.get("source", "")), where)
            if not answers:
                cell["source"] = strip_answers(cell["source"])
        nbio.clean_cell(cell)
        if "id" not in cell and (new.get("nbformat", 4), new.get("nbformat_minor", 0)) >= (4, 5):
            cell["id"] = f"cell-{index}"
        cells.append(cell)
    new["cells"] = cells
    for key in nbio.RUN_NB_METADATA:
        new.metadata.pop(key, None)
    info: dict[str, Any] = {"copy": "student"}
    if not answers:
        info["answers"] = "stripped"
    if source:
        info["generated_from"] = source
    new.metadata["mmcourse"] = info
    return new


def _release_text(path: Path, src_dir: Path, answers: bool = True) -> str:
    label = f"{src_dir.resolve().name}/{path.name}"
    return nbio.dumps(release_notebook(nbio.read(path), source=label, answers=answers))


def release(src_dir: str | os.PathLike = "solutions", dst_dir: str | os.PathLike = "notebooks",
            names: list[str] | None = None, answers: bool = True) -> list[Path]:
    """Write the student copy of each selected instructor notebook; return the written paths.

    ``answers=False`` (``mmcourse release --strip-answers``) leaves out the questionnaires' model
    answers; the committed ``notebooks/`` keep them (a test checks they are in sync).

    All notebooks are released in memory first, so a marker error writes nothing. Files whose
    content is unchanged are left untouched.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    texts, errors = {}, []
    for path in nbio.select(src, names):
        try:
            texts[dst / path.name] = _release_text(path, src, answers)
        except ValueError as exc:
            errors.append(str(exc))
    if errors:
        raise ValueError("\n".join(errors))
    for out, text in texts.items():
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            write_text_atomic(out, text)
    return list(texts)


def _has_outputs(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"
            and (c.get("outputs") or c.get("execution_count") is not None)]


def _solution_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Stripped non-blank lines found only inside solution blocks (or solution_only cells)."""
    inside, outside = set(), set()
    for cell in nb.cells:
        text = nbio.text(cell.get("source", ""))
        if SOLUTION_ONLY_TAG in nbio.tags(cell):
            inside.update(text.splitlines())
            continue
        if cell.get("cell_type") == "code":
            in_block = False
            for line in text.splitlines():
                m = _CODE_MARKER.match(line)
                if m:
                    in_block = m["kind"] == "BEGIN"
                else:
                    (inside if in_block else outside).add(line)
        elif cell.get("cell_type") == "markdown":
            pos = 0
            for m in _MD_MARKER.finditer(text):
                (inside if m["kind"] == "END" else outside).update(text[pos:m.start()].splitlines())
                pos = m.end()
            outside.update(text[pos:].splitlines())
    strip = lambda lines: {s.strip() for s in lines if s.strip()}  # noqa: E731
    return strip(inside) - strip(outside) - set(STUB_CODE) - {STUB_MARKDOWN}


def check_release(src_dir: str | os.PathLike = "solutions",
                  dst_dir: str | os.PathLike = "notebooks") -> list[str]:
    """Problems keeping ``dst_dir`` from being the exact release of ``src_dir`` ([] = in sync).

    Reports missing, stale and extra student copies, markers or solution lines leaked into a
    student copy, marker errors, and outputs or execution counts left in instructor sources.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    problems: list[str] = []
    sources = nbio.select(src, None)
    for path in sources:
        out = dst / path.name
        try:
            nb = nbio.read(path)
        except Exception as exc:  # noqa: BLE001 - report, keep checking the others
            problems.append(f"{path}: unreadable notebook ({type(exc).__name__}: {exc})")
            continue
        cells = _has_outputs(nb)
        if cells:
            problems.append(f"{path}: outputs or execution counts in cells {cells} "
                            "(instructor sources must be clean; strip them)")
        try:
            expected = _release_text(path, src)
        except ValueError as exc:
            problems.append(str(exc))
            expected = None
        if not out.exists():
            problems.append(f"{out}: missing (release {path})")
            continue
        student_text = out.read_text(encoding="utf-8")
        if expected is not None and student_text != expected:
            problems.append(f"{out}: stale, differs from the release of {path}")
        try:
            student = nbformat.reads(student_text, as_version=4)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{out}: unreadable notebook ({type(exc).__name__}: {exc})")
            continue
        leaked = _solution_lines(nb)
        for index, cell in enumerate(student.cells):
            text = nbio.text(cell.get("source", ""))
            kind = cell.get("cell_type")
            if (kind == "code" and any(_CODE_MARKER.match(l) for l in text.splitlines())) or \
               (kind == "markdown" and _MD_MARKER.search(text)):
                problems.append(f"{out}, cell {index}: solution marker left in the student copy")
            for line in text.splitlines():
                if line.strip() in leaked:
                    problems.append(f"{out}, cell {index}: solution line leaked: {line.strip()!r}")
    known = {p.name for p in sources}
    for extra in sorted(dst.glob("*.ipynb")):
        if extra.name not in known:
            problems.append(f"{extra}: extra student notebook with no source in {src}/")
    return problems


def strip_outputs(path: str | os.PathLike) -> bool:
    """Clear outputs, execution counts and run metadata of a notebook in place; True if changed."""
    path = Path(path)
    before = path.read_text(encoding="utf-8")
    nb = nbformat.reads(before, as_version=4)
    for cell in nb.cells:
        nbio.clean_cell(cell)
    for key in nbio.RUN_NB_METADATA:
        nb.metadata.pop(key, None)
    after = nbio.dumps(nb)
    if after != before:
        write_text_atomic(path, after)
    return after != before
