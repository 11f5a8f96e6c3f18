"""``python -m mmcourse grade``: grade students' copies of the notebooks (README, "Instructor guide").

A submission is a student's copy of ``notebooks/NN_name.ipynb``. The grader trusts nothing in it
but the code of its exercise functions (and the text of written answers):

1. :func:`rebuild` starts from the pristine release of ``solutions/NN_name.ipynb`` and puts in
   the student's code for each exercise, found by the function's name wherever the cell now is
   (moved, duplicated, retyped: the last definition wins; a missing one counts as unattempted).
   Setup, parameters and check cells always come from the source.
2. :func:`screen` flags, for review by a person, answer code that reaches into the checks or the
   grader, patches IPython or builtins, or writes outside its working directory.
3. :func:`run_isolated` executes the rebuilt notebook in a fresh kernel, in its own process
   group, in a temporary folder, with a per-cell and a per-notebook time limit, a memory limit
   and, where the OS allows it, no network.
4. Each check statement is wrapped so that the checks' own code prints its verdicts as one line
   tagged with a random token the student's code has not seen when it runs; :func:`score` reads
   verdicts from those lines only, in the right cell, so a printed "✓" counts for nothing.

Outputs (:func:`grade`): ``grades.csv`` (one row per student), and per submission
``results.json`` (Gradescope's shape), ``feedback.md`` and the executed ``graded.ipynb``.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from mmcourse import nbio, release
from mmcourse.checks import GRADE_MARK, STRICT_ENV
from mmcourse.config import PROFILE_ENV
from mmcourse.fileio import sha256_file, write_text_atomic

DEFAULT_POINTS = 1.0
VERDICTS = ("passed", "failed", "pending", "error", "timeout", "flagged")
_CHECK_CALL = re.compile(r"\bnb\d\d\.check_\w+\s*\(")
_BEGIN = '__import__("mmcourse.checks").checks.grading_begin()'
_EMIT = '__import__("mmcourse.checks").checks.grading_emit("{token}")'


# ---------------------------------------------------------------------------- the assignment
@dataclass
class Exercise:
    """One exercise function of a notebook and the points it is worth (cell metadata
    ``{"mmcourse": {"points": N}}`` in the instructor source; default 1 each)."""
    name: str
    cell_id: str
    points: float = DEFAULT_POINTS


def _stub_functions(code: str) -> list[str]:
    """Names of the top-level functions of a released cell whose body holds the exercise stub."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and release.STUB_CODE[1] in (ast.get_source_segment(code, n) or "")]


def exercises(source: nbformat.NotebookNode) -> list[Exercise]:
    """The exercises of an instructor notebook, in order."""
    out = []
    for cell in release.release_notebook(source).cells:
        if cell.cell_type == "code":
            points = float(cell.get("metadata", {}).get("mmcourse", {}).get("points", DEFAULT_POINTS))
            out += [Exercise(name, cell.get("id", ""), points)
                    for name in _stub_functions(nbio.text(cell.source))]
    return out


# ---------------------------------------------------------------------------- rebuilding
@dataclass
class Rebuilt:
    """A rebuilt notebook and what :func:`score` needs to read it."""
    nb: nbformat.NotebookNode
    exercises: list[Exercise]
    tokens: dict[str, list[str]]          # token → exercise names its check statement grades
    answers: dict[str, str]               # exercise name → the student's code that was used
    attempted: dict[str, bool]
    written: dict[str, str] = field(default_factory=dict)  # cell id → written answer (by hand)


def _statements(code: str) -> list[tuple[ast.stmt, str]] | None:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    return [(n, ast.get_source_segment(code, n, padded=False) or "") for n in tree.body]


def _defines(code: str) -> set[str]:
    """Top-level function names a submitted cell defines (a regex when it does not parse)."""
    stmts = _statements(code)
    if stmts is None:
        return set(re.findall(r"^def\s+(\w+)\s*\(", code, flags=re.M))
    return {n.name for n, _ in stmts if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _answer_cells(submission: nbformat.NotebookNode, names: list[str]) -> dict[str, int]:
    """For each exercise name, the index of the last submitted code cell that defines it."""
    where: dict[str, int] = {}
    for index, cell in enumerate(submission.get("cells", [])):
        if cell.get("cell_type") == "code":
            for name in _defines(nbio.text(cell.get("source", ""))) & set(names):
                where[name] = index
    return where


def _without(code: str, pristine: list[str]) -> str:
    """``code`` minus its top-level statements that equal (as syntax trees) one of ``pristine``
    (the check calls around an exercise, which the grader takes from the source)."""
    stmts = _statements(code)
    if stmts is None:
        return code
    drop = set()
    for p in pristine:
        try:
            drop.add(ast.dump(ast.parse(p).body[0]))
        except (SyntaxError, IndexError):
            pass
    lines = code.splitlines(keepends=True)
    for node, _ in reversed(stmts):
        if ast.dump(node) in drop:
            del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines).strip("\n")


def _wrap_checks(code: str, exercise_names: set[str], tokens: dict[str, list[str]]) -> str:
    """Put ``grading_begin()`` before and ``grading_emit(token)`` after each top-level statement
    of a pristine cell that calls a check; record which exercises each token grades."""
    stmts = _statements(code)
    if stmts is None or not _CHECK_CALL.search(code):
        return code
    in_cell = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)} & exercise_names
    lines = code.splitlines()
    for node, text in reversed(stmts):
        if not _CHECK_CALL.search(text):
            continue
        named = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} & exercise_names
        token = secrets.token_hex(16)
        tokens[token] = sorted(named or in_cell)
        lines[node.end_lineno:node.end_lineno] = [_EMIT.format(token=token)]
        lines[node.lineno - 1:node.lineno - 1] = [_BEGIN]
    return "\n".join(lines)


def _changed(code: str, stmts: list[tuple[ast.stmt, str]], name: str) -> bool:
    """Whether the student's code differs from the released stub of ``name``."""
    stub = next(node for node, _ in stmts if getattr(node, "name", None) == name)
    mine = _statements(code)
    return mine is None or [ast.dump(n) for n, _ in mine if getattr(n, "name", None) == name] \
        != [ast.dump(stub)]


def _code_cell(source: str, cell_id: str, role: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source)
    cell["id"] = cell_id
    cell.metadata["mmcourse_grade"] = role
    return cell


def rebuild(source: nbformat.NotebookNode, submission: nbformat.NotebookNode,
            label: str = "<notebook>") -> Rebuilt:
    """The pristine student copy of ``source`` with the student's exercise code put in.

    Only exercise functions (by name; the last definition in the submission wins) and the
    written answers of markdown answer cells (by cell id) are taken from ``submission``.
    """
    base = release.release_notebook(source, source=label)
    exs = exercises(source)
    names = {e.name for e in exs}
    sub_cells = submission.get("cells", [])
    where = _answer_cells(submission, sorted(names))
    written_src = {c.get("id"): nbio.text(c.get("source", "")) for c in sub_cells
                   if c.get("cell_type") == "markdown" and c.get("id")}
    tokens: dict[str, list[str]] = {}
    answers: dict[str, str] = {}
    attempted: dict[str, bool] = {}
    written: dict[str, str] = {}
    taken: dict[int, str] = {}  # submitted cell index → its code, once placed
    cells = []
    for cell in base.cells:
        text = nbio.text(cell.get("source", ""))
        if cell.cell_type == "markdown" and release.STUB_MARKDOWN in text:
            answer = written_src.get(cell.get("id"), text)
            written[cell.get("id", "")] = answer
            new = nbformat.v4.new_markdown_cell(answer)
            new["id"] = cell.get("id")
            cells.append(new)
            continue
        own = _stub_functions(text) if cell.cell_type == "code" else []
        if not own:
            if cell.cell_type == "code":
                cell["source"] = _wrap_checks(text, names, tokens)
            cells.append(cell)
            continue
        stmts = _statements(text) or []
        rest = [seg for node, seg in stmts if not (isinstance(node, ast.FunctionDef) and node.name in own)]
        for name in own:
            index = where.get(name)
            if index in taken:  # one submitted cell defines several exercises: place it once
                answers[name] = taken[index]
                attempted[name] = _changed(taken[index], stmts, name)
                continue
            if index is None:  # unattempted: the released stub, which reports "pending"
                code = next(seg for node, seg in stmts if getattr(node, "name", None) == name)
            else:
                code = taken[index] = _without(nbio.text(sub_cells[index].get("source", "")), rest)
            answers[name] = code
            attempted[name] = index is not None and _changed(code, stmts, name)
            cells.append(_code_cell(code, f"answer-{name}", "answer"))
        if rest:
            cells.append(_code_cell(_wrap_checks("\n".join(rest), names, tokens),
                                    f"checks-{cell.get('id', '')}", "checks"))
    base["cells"] = cells
    base.metadata["mmcourse"] = {"copy": "graded", "generated_from": label}
    return Rebuilt(base, exs, tokens, answers, attempted, written)


# ---------------------------------------------------------------------------- static screen
_REACH = {"sys.modules": "touches sys.modules", "builtins": "touches builtins",
          "__builtins__": "touches __builtins__", "setattr": "calls setattr",
          "delattr": "calls delattr", "globals": "calls globals()", "get_ipython": "uses get_ipython",
          "In": "reads the input history (In)", "Out": "reads the output history (Out)",
          "_ih": "reads the input history (_ih)", "_oh": "reads the output history (_oh)",
          "__import__": "calls __import__", "importlib": "uses importlib",
          "sys.stdout": "touches sys.stdout", "sys.stderr": "touches sys.stderr",
          "sys.excepthook": "patches sys.excepthook", "sys.displayhook": "patches sys.displayhook",
          "ctypes": "uses ctypes", "gc": "uses gc", "inspect": "uses inspect"}
_MUTATORS = {"remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "rmtree",
             "move", "copy", "copy2", "copyfile", "copytree", "write_text", "write_bytes", "touch",
             "mkdir", "makedirs", "chmod", "chown", "symlink_to", "symlink", "link", "truncate",
             "save", "savez", "savetxt", "to_csv", "savefig", "system", "popen", "Popen", "run",
             "call", "check_call", "check_output"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _inside_cwd(node: ast.AST) -> bool:
    """True when ``node`` is a literal relative path that stays in the working directory."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    path = node.value
    return bool(path) and not os.path.isabs(path) and ".." not in Path(path).parts and \
        not path.startswith("~")


def screen(code: str) -> list[str]:
    """Reasons to review ``code`` by hand (empty: nothing suspicious). Static and best effort:
    a net for a person to look at, not a sandbox (README, "Instructor guide")."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # it cannot run either; the check reports the error
    flags = []

    def flag(node: ast.AST, why: str) -> None:
        flags.append(f"line {getattr(node, 'lineno', '?')}: {why}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for mod in mods:
                if re.match(r"mmcourse\.(checks|grade)\b|mmcourse\.checks$", mod) or mod in \
                        ("builtins", "importlib", "ctypes", "gc", "inspect", "IPython", "traceback"):
                    flag(node, f"imports {mod}")
                    break
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = _dotted(node)
            if isinstance(node, ast.Name) and re.fullmatch(r"nb\d\d|checks", node.id):
                flag(node, f"uses the checks module {node.id}")
            for key, why in _REACH.items():
                if name == key or name.startswith(key + "."):
                    flag(node, why)
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) and \
                    isinstance(node.value, (ast.Name, ast.Attribute)) and \
                    not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                root = _dotted(node.value).split(".")[0]
                if root and not _is_local(tree, node, root):
                    flag(node, f"assigns an attribute of {_dotted(node.value)} (patching a module?)")
        elif isinstance(node, ast.Call):
            fn = _dotted(node.func)
            last = fn.rsplit(".", 1)[-1]
            if fn == "open" or last == "open" and fn.split(".")[0] in ("io", "os", "codecs"):
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                writes = mode is not None and not (isinstance(mode, ast.Constant) and
                                                  isinstance(mode.value, str) and
                                                  not set(mode.value) & set("wax+"))
                if writes and not (node.args and _inside_cwd(node.args[0])):
                    flag(node, "opens a file for writing outside the working directory")
            elif fn.split(".")[0] in ("os", "shutil", "subprocess", "pathlib", "Path") and \
                    last in _MUTATORS or isinstance(node.func, ast.Attribute) and last in \
                    ("write_text", "write_bytes", "unlink", "rmdir", "rename", "touch", "symlink_to"):
                flag(node, f"changes files or runs programs ({fn or last})")
    return list(dict.fromkeys(flags))


def _is_local(tree: ast.AST, target: ast.AST, name: str) -> bool:
    """Whether ``name`` is a parameter or a local assignment of the function around ``target``."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and \
                any(n is target for n in ast.walk(fn)):
            args = fn.args
            params = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
            params |= {a.arg for a in (args.vararg, args.kwarg) if a}
            stores = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and
                      isinstance(n.ctx, ast.Store)}
            if name in params | stores:
                return True
    return False


# ---------------------------------------------------------------------------- running
def network_isolation() -> list[str] | None:
    """The command prefix that gives a process no network (``unshare -n``, or ``unshare -rn``
    without root), or None where the OS does not allow it (said in every report)."""
    exe = shutil.which("unshare")
    if not exe or not sys.platform.startswith("linux"):
        return None
    for flags in (["-n"], ["-rn"]):
        try:
            ok = subprocess.run([exe, *flags, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return [exe, *flags]
    return None


def _limits(memory_gb: float):
    def apply() -> None:
        if memory_gb:
            limit = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def run_isolated(nb: nbformat.NotebookNode, workdir: Path, *, cell_timeout: int, timeout: int,
                 memory_gb: float, isolate: list[str] | None) -> dict[str, Any]:
    """Execute ``nb`` in ``workdir`` (fresh kernel, own process group, lenient checks, smoke
    profile); errors do not stop it and a cell over ``cell_timeout`` is interrupted. Returns the
    run's status and the executed notebook (None when nothing was written)."""
    from mmcourse import runner

    workdir.mkdir(parents=True, exist_ok=True)
    src, out = workdir / "rebuilt.ipynb", workdir / "graded.ipynb"
    write_text_atomic(src, nbio.dumps(nb))
    env = {k: v for k, v in os.environ.items() if k != STRICT_ENV and not k.startswith("MMCOURSE_RECORD")}
    env.update({PROFILE_ENV: "smoke", "PYTHONUNBUFFERED": "1", "JUPYTER_PLATFORM_DIRS": "1",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1", "MPLBACKEND": "Agg"})
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    config = {"input": str(src), "output": str(out), "profile": "smoke", "kernel_name": "python3",
              "cwd": str(workdir), "cell_timeout": int(cell_timeout),
              "result": str(workdir / ".result.json"), "loopback_up": bool(isolate),
              "engine_kwargs": {"allow_errors": True, "interrupt_on_timeout": True,
                                "error_on_timeout": {"ename": "CellTimeoutError", "evalue":
                                                     f"interrupted after {cell_timeout} s",
                                                     "traceback": []}}}
    result, timed_out, _, seconds, code = runner.execute(
        config, env, timeout, workdir / "run.log", "", wrapper=isolate,
        preexec_fn=_limits(memory_gb), echo=False)
    executed = None
    if out.exists():
        try:
            executed = nbio.read(out)
        except Exception:  # noqa: BLE001 - half-written after a kill
            executed = None
    # a cell that ignores the interrupt (it catches KeyboardInterrupt) stops the notebook there
    stuck = str(result.get("error") or "").startswith("CellTimeoutError")
    status = "timeout" if timed_out or stuck else ("ok" if result else f"crashed (exit {code})")
    return {"status": status, "seconds": seconds, "executed": executed, "cell_timeout": cell_timeout,
            "error": None if timed_out else result.get("error")}


# ---------------------------------------------------------------------------- scoring
def _outputs_text(cell: dict) -> tuple[str, list[dict]]:
    text, errors = [], []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            text.append(nbio.text(o.get("text", "")))
        elif o.get("output_type") == "error":
            errors.append(o)
    return "".join(text), errors


def score(rebuilt: Rebuilt, run: dict[str, Any], flags: dict[str, list[str]]) -> list[dict]:
    """One row per exercise: verdict, points and feedback, from the tagged verdict lines only."""
    found: dict[str, list[dict]] = {}   # token → records found in its own cell
    forged: set[str] = set()
    problems: dict[str, str] = {}       # token → why no record
    cells = run["executed"].cells if run["executed"] is not None else []
    for cell in cells:
        source = nbio.text(cell.get("source", ""))
        own = [t for t in rebuilt.tokens if t in source]
        text, errors = _outputs_text(cell)
        for line in text.splitlines():
            if not line.startswith(GRADE_MARK + " "):
                continue
            try:
                record = json.loads(line[len(GRADE_MARK) + 1:])
                token = str(record["token"])
            except (ValueError, KeyError, TypeError):
                continue
            if token not in rebuilt.tokens:
                continue
            if token in own:
                found.setdefault(token, []).append(record)
            else:
                forged.add(token)
        for token in own:
            if token not in found and errors:
                e = errors[0]
                if e.get("ename") in ("CellTimeoutError", "KeyboardInterrupt"):
                    problems[token] = f"timeout: interrupted after {run.get('cell_timeout')} s, the " \
                                      "limit per cell (an endless loop?)"
                else:
                    problems[token] = f"error: {e.get('ename')}: {e.get('evalue', '')}"[:400]
    rows = []
    for ex in rebuilt.exercises:
        tokens = [t for t, names in rebuilt.tokens.items() if ex.name in names]
        verdicts, notes, status = [], [], None
        for t in tokens:
            records = found.get(t, [])
            if len(records) > 1 or t in forged:
                status = "flagged"
                notes.append("a verdict line for this check was printed by something other than "
                             "the check (forged output)")
            elif records:
                verdicts += records[0]["verdicts"]
            elif t in problems:
                status = status or problems[t].split(":")[0]
                notes.append(problems[t].split(": ", 1)[1])
            elif run["status"] == "timeout":
                status = status or "timeout"
                notes.append("the check did not run: the notebook was stopped when a cell ran over "
                             "its time limit and ignored the interrupt, or the notebook over its own")
            else:
                status = status or "error"
                why = str(run.get("error") or "").splitlines()[0][:200] if run.get("error") else ""
                notes.append("the check did not run" + (f": the notebook stopped with {why}" if why else ""))
        if not tokens:
            status, notes = "error", ["no check statement grades this exercise"]
        if status is None:
            kinds = {v["verdict"] for v in verdicts}
            status = ("failed" if "failed" in kinds else "pending" if "pending" in kinds
                      else "passed" if verdicts else "error")
            if not verdicts:
                notes.append("the check recorded no verdict")
        if flags.get(ex.name):
            notes = [f"flagged for review: {f}" for f in flags[ex.name]] + \
                [f"(the check said: {status})"] + notes
            status = "flagged"
        earned = ex.points if status == "passed" else 0.0
        rows.append({"exercise": ex.name, "verdict": status, "score": earned, "max_score": ex.points,
                     "attempted": rebuilt.attempted.get(ex.name, False),
                     "feedback": [v["message"] for v in verdicts if v["verdict"] != "passed"] + notes,
                     "checks": verdicts})
    return rows


# ---------------------------------------------------------------------------- submissions
@dataclass
class Submission:
    path: Path
    student: str


def find_submissions(paths: list[str | os.PathLike], course: set[str]) -> list[Submission]:
    """Every ``.ipynb`` under ``paths``. The student is the folder name when the file is named
    after a course notebook (``alice/00_welcome.ipynb``), else the file stem (``alice.ipynb``)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
        else:
            files.append(p)
    subs = []
    for f in files:
        student = f.parent.name if f.stem in course and f.parent.name else f.stem
        subs.append(Submission(f, student or "unknown"))
    return subs


def _assignment(path: Path, nb: nbformat.NotebookNode, sources: dict[str, Any]) -> str | None:
    meta = (nb.get("metadata") or {}).get("mmcourse") or {}
    origin = Path(str(meta.get("generated_from", ""))).stem
    if origin in sources:
        return origin
    return path.stem if path.stem in sources else None


@dataclass
class Options:
    out: Path
    cell_timeout: int = 120
    timeout: int = 600
    memory_gb: float = 8.0
    isolate: list[str] | None = None


def grade_one(sub: Submission, sources: dict[str, tuple[nbformat.NotebookNode, str]],
              opts: Options) -> dict[str, Any]:
    """Grade one submission; always returns a report (and writes its files), never raises."""
    t0 = time.monotonic()
    report: dict[str, Any] = {"student": sub.student, "file": str(sub.path), "assignment": None,
                              "status": "graded", "error": None, "exercises": [], "written": {},
                              "network": "isolated (" + " ".join(opts.isolate) + ")" if opts.isolate
                              else "NOT isolated: unshare is not available here"}
    try:
        raw = sub.path.read_text(encoding="utf-8")
        if not raw.strip():
            raise ValueError("the file is empty")
        try:
            nb = nbformat.reads(raw, as_version=4)
        except Exception as exc:  # noqa: BLE001 - any parse problem is the student's file
            raise ValueError(f"not a readable notebook (malformed JSON?): {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200]}") from None
        assignment = _assignment(sub.path, nb, sources)
        if assignment is None:
            raise ValueError(f"not a copy of any course notebook (name {sub.path.name!r}, "
                             f"metadata {((nb.get('metadata') or {}).get('mmcourse') or {})!r})")
        report["assignment"] = assignment
        source, label = sources[assignment]
        rebuilt = rebuild(source, nb, label)
        flags = {name: screen(code) for name, code in rebuilt.answers.items()
                 if rebuilt.attempted.get(name)}
        folder = opts.out / sub.student / assignment
        scratch = Path(tempfile.mkdtemp(prefix="mmcourse-grade-"))
        try:
            run = run_isolated(rebuilt.nb, scratch / "work", cell_timeout=opts.cell_timeout,
                               timeout=opts.timeout, memory_gb=opts.memory_gb, isolate=opts.isolate)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        report["exercises"] = score(rebuilt, run, flags)
        report["written"] = {k: v for k, v in rebuilt.written.items() if release.STUB_MARKDOWN not in v}
        report["run"] = {"status": run["status"], "seconds": run["seconds"], "error": run["error"]}
        folder.mkdir(parents=True, exist_ok=True)
        if run["executed"] is not None:
            write_text_atomic(folder / "graded.ipynb", nbio.dumps(run["executed"]))
    except Exception as exc:  # noqa: BLE001 - a report for every submission, the batch goes on
        report["status"], report["error"] = "error", f"{exc}"
    report["seconds"] = round(time.monotonic() - t0, 1)
    _write_reports(report, opts.out)
    return report


def results_json(report: dict[str, Any]) -> dict[str, Any]:
    """Gradescope's ``results.json``: score, execution time, output and one test per exercise."""
    tests = [{"name": e["exercise"], "score": e["score"], "max_score": e["max_score"],
              "status": "passed" if e["verdict"] == "passed" else "failed",
              "output": f"{e['verdict']}" + "".join(f"\n{f}" for f in e["feedback"]),
              "visibility": "visible"} for e in report["exercises"]]
    out = {"score": sum(t["score"] for t in tests), "execution_time": report.get("seconds", 0),
           "output": report["error"] or f"graded {report['assignment']} ({report['network']})",
           "visibility": "visible", "tests": tests}
    return out


def feedback_markdown(report: dict[str, Any]) -> str:
    """The feedback page a student gets back."""
    lines = [f"# Feedback: {report['assignment'] or 'unknown assignment'} — {report['student']}", ""]
    if report["error"]:
        return "\n".join(lines + [f"**Could not grade this submission:** {report['error']}", ""])
    total = sum(e["score"] for e in report["exercises"])
    best = sum(e["max_score"] for e in report["exercises"])
    lines += [f"**Score: {total:g} / {best:g}**", "", "| exercise | verdict | points |", "|---|---|---:|"]
    lines += [f"| `{e['exercise']}` | {e['verdict']} | {e['score']:g} / {e['max_score']:g} |"
              for e in report["exercises"]]
    for e in report["exercises"]:
        if e["feedback"]:
            lines += ["", f"## `{e['exercise']}`: {e['verdict']}", ""] + \
                [f"    {line}" for f in e["feedback"] for line in str(f).splitlines()]
    for cell_id, text in report.get("written", {}).items():
        lines += ["", f"## Written answer (cell {cell_id}), graded by hand", "", text]
    lines += ["", f"_Network during the run: {report['network']}._", ""]
    return "\n".join(lines)


def _write_reports(report: dict[str, Any], out: Path) -> None:
    folder = out / report["student"] / (report["assignment"] or Path(report["file"]).stem)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "results.json", json.dumps(results_json(report), indent=1))
    write_text_atomic(folder / "report.json", json.dumps(report, indent=1, default=str))
    write_text_atomic(folder / "feedback.md", feedback_markdown(report))


def gradebook_csv(reports: list[dict[str, Any]]) -> str:
    """``grades.csv``: one row per student, a column per assignment exercise, totals and notes."""
    columns: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for r in reports:
        row = rows.setdefault(r["student"], {"student": r["student"], "score": 0.0,
                                             "max_score": 0.0, "notes": []})
        for e in r["exercises"]:
            col = f"{r['assignment']}:{e['exercise']}"
            if col not in columns:
                columns.append(col)
            row[col] = f"{e['score']:g} ({e['verdict']})"
            row["score"] += e["score"]
            row["max_score"] += e["max_score"]
        if r["error"]:
            row["notes"].append(f"{Path(r['file']).name}: {r['error']}")
        if any(e["verdict"] == "flagged" for e in r["exercises"]):
            row["notes"].append(f"{r['assignment']}: flagged for review")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["student", "score", "max_score", *columns, "notes"], lineterminator="\n")
    writer.writeheader()
    for row in rows.values():
        writer.writerow({**row, "score": f"{row['score']:g}", "max_score": f"{row['max_score']:g}",
                         "notes": "; ".join(row["notes"])})
    return buf.getvalue()


def _tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def grade(paths: list[str | os.PathLike], out: str | os.PathLike = "build/grades",
          src_dir: str | os.PathLike = "solutions", jobs: int = 1, cell_timeout: int = 120,
          timeout: int = 600, memory_gb: float = 8.0) -> list[dict[str, Any]]:
    """Grade every submission under ``paths`` with ``jobs`` workers; write ``out/grades.csv`` and
    per-submission reports. The instructor sources are read once, before any student code runs,
    and hashed before and after: a change is reported loudly."""
    src = Path(src_dir)
    before = _tree_hash(src)
    sources = {p.stem: (nbio.read(p), f"{src.resolve().name}/{p.name}") for p in nbio.select(src, None)}
    opts = Options(Path(out), cell_timeout, timeout, memory_gb, network_isolation())
    opts.out.mkdir(parents=True, exist_ok=True)
    subs = find_submissions(paths, set(sources))
    print(f"grading {len(subs)} submission(s) with {jobs} worker(s); per cell {cell_timeout} s, per "
          f"notebook {timeout} s, memory {memory_gb:g} GiB, network "
          f"{'isolated by ' + ' '.join(opts.isolate) if opts.isolate else 'NOT isolated (no unshare)'}",
          flush=True)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        reports = []
        for r in pool.map(lambda s: grade_one(s, sources, opts), subs):
            total = sum(e["score"] for e in r["exercises"])
            best = sum(e["max_score"] for e in r["exercises"])
            print(f"  {r['student']:16s} {r['assignment'] or '?':24s} "
                  + (f"ERROR {r['error']}" if r["error"] else
                     f"{total:g}/{best:g}  " + " ".join(f"{e['exercise']}={e['verdict']}"
                                                       for e in r["exercises"]))
                  + f"  ({r['seconds']:.0f} s)", flush=True)
            reports.append(r)
    write_text_atomic(opts.out / "grades.csv", gradebook_csv(reports))
    changed = sorted(k for k, v in _tree_hash(src).items() if before.get(k) != v) + \
        sorted(set(before) - set(_tree_hash(src)))
    if changed:
        print(f"WARNING: files in {src}/ changed while grading: {', '.join(changed)}. "
              "The grades used the copies read before; restore the sources (git checkout).", flush=True)
    print(f"wrote {opts.out / 'grades.csv'} and a report per submission under {opts.out}/", flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    """``python -m mmcourse grade SUBMISSION [...] [-o DIR] [-j N]``."""
    p = argparse.ArgumentParser(prog="mmcourse grade", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("submissions", nargs="+", help="student notebooks or folders of them")
    p.add_argument("-o", "--out", default="build/grades", help="output folder (default build/grades)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="parallel workers (default 1)")
    p.add_argument("--src", default="solutions", help="instructor sources (default solutions)")
    p.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell (default 120)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook (default 600)")
    p.add_argument("--memory-gb", type=float, default=8.0,
                   help="address-space limit per process in GiB (default 8; 0: none)")
    a = p.parse_args(argv)
    reports = grade(a.submissions, a.out, a.src, a.jobs, a.cell_timeout, a.timeout, a.memory_gb)
    return 0 if reports and not any(r["error"] for r in reports) else 1
