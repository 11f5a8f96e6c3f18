"""The notebook pipeline: release student copies, run notebooks, report (notebook 00_welcome,
"How exercises, checks and solutions work" and "Build report").

``solutions/NN_name.ipynb`` is the instructor source. :func:`release` writes the student copy
``notebooks/NN_name.ipynb`` with each exercise replaced by a stub; :func:`check_release` says
whether the two folders are in sync; :func:`run` executes notebooks with papermill in a
separate, killable process and writes ``build/`` (executed notebooks, HTML, ``report.json``).
"""
from __future__ import annotations

import ast
import contextlib
import copy
import fnmatch
import html
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nbformat

from mmcourse.fileio import write_text_atomic

STUB_CODE = ("# YOUR CODE HERE", "raise NotImplementedError")
STUB_MARKDOWN = "*Your answer here.*"
SOLUTION_ONLY_TAG = "solution_only"
STRICT_ENV = "MMCOURSE_STRICT_CHECKS"

# nbgrader's markers (any number of '#', trailing text tolerated so a sloppy marker never leaks).
_CODE_MARKER = re.compile(r"^(?P<indent>[ \t]*)#+[ \t]*(?P<kind>BEGIN|END)[ \t]+SOLUTION\b")
_MD_MARKER = re.compile(r"<!--\s*(?P<kind>BEGIN|END)\s+SOLUTION\s*-->")
# Cell/notebook metadata that records a run, not the notebook itself.
_RUN_CELL_METADATA = ("execution", "papermill", "ExecuteTime")
_RUN_NB_METADATA = ("papermill", "widgets")


# --------------------------------------------------------------------------------------------
# release
# --------------------------------------------------------------------------------------------

def _text(source: str | list[str]) -> str:
    return "".join(source) if isinstance(source, list) else source


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


def _clean_cell(cell: nbformat.NotebookNode) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    for key in _RUN_CELL_METADATA:
        cell.get("metadata", {}).pop(key, None)


def _tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def release_notebook(nb: nbformat.NotebookNode, source: str | None = None) -> nbformat.NotebookNode:
    """Return the student copy of instructor notebook ``nb`` (``nb`` is not modified).

    ``source`` labels the instructor notebook (e.g. ``"solutions/05_fusion_math.ipynb"``) in
    error messages and in ``metadata["mmcourse"]["generated_from"]``. Raises ``ValueError``
    for unbalanced, nested or top-level solution markers.
    """
    label = source or "<notebook>"
    new = nbformat.from_dict(copy.deepcopy(dict(nb)))
    cells = []
    for index, cell in enumerate(new.get("cells", [])):
        if SOLUTION_ONLY_TAG in _tags(cell):
            continue
        where = f"{label}, cell {index}"
        if cell.get("cell_type") == "code":
            released, stubs = _release_code(_text(cell.get("source", "")), where)
            if stubs:
                _check_stubs_in_functions(released, stubs, where)
            cell["source"] = released
        elif cell.get("cell_type") == "markdown":
            cell["source"] = _release_markdown(_text(cell.get("source", "")), where)
        _clean_cell(cell)
        if "id" not in cell and (new.get("nbformat", 4), new.get("nbformat_minor", 0)) >= (4, 5):
            cell["id"] = f"cell-{index}"
        cells.append(cell)
    new["cells"] = cells
    for key in _RUN_NB_METADATA:
        new.metadata.pop(key, None)
    info: dict[str, str] = {"copy": "student"}
    if source:
        info["generated_from"] = source
    new.metadata["mmcourse"] = info
    return new


def _dumps(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"




def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _select(src_dir: str | os.PathLike, names: list[str] | None) -> list[Path]:
    """Notebooks in ``src_dir`` chosen by stem, glob pattern or ``NN`` prefix (default: all)."""
    src = Path(src_dir)
    available = sorted(p for p in src.glob("*.ipynb") if not p.name.startswith("."))
    if not names:
        return available
    by_stem = {p.stem: p for p in available}
    chosen: list[Path] = []
    for raw in names:
        name = Path(raw).name
        name = name[:-len(".ipynb")] if name.endswith(".ipynb") else name
        if name in by_stem:
            hits = [by_stem[name]]
        elif any(ch in name for ch in "*?["):
            hits = [p for p in available if fnmatch.fnmatch(p.stem, name)]
        else:
            hits = [p for p in available if p.stem.startswith(name + "_")]
        if not hits:
            raise FileNotFoundError(f"no notebook matches {raw!r} in {src}/ "
                                    f"(have: {', '.join(by_stem) or 'none'})")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def _release_text(path: Path, src_dir: Path) -> str:
    label = f"{src_dir.resolve().name}/{path.name}"
    return _dumps(release_notebook(_read(path), source=label))


def release(src_dir: str | os.PathLike = "solutions", dst_dir: str | os.PathLike = "notebooks",
            names: list[str] | None = None) -> list[Path]:
    """Write the student copy of each selected instructor notebook; return the written paths.

    All notebooks are released in memory first, so a marker error writes nothing. Files whose
    content is unchanged are left untouched.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    texts, errors = {}, []
    for path in _select(src, names):
        try:
            texts[dst / path.name] = _release_text(path, src)
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
        text = _text(cell.get("source", ""))
        if SOLUTION_ONLY_TAG in _tags(cell):
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
    sources = _select(src, None)
    for path in sources:
        out = dst / path.name
        try:
            nb = _read(path)
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
            text = _text(cell.get("source", ""))
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
        _clean_cell(cell)
    for key in _RUN_NB_METADATA:
        nb.metadata.pop(key, None)
    after = _dumps(nb)
    if after != before:
        write_text_atomic(path, after)
    return after != before


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------

def _papermill_child(config_json: str) -> int:
    """Subprocess entry point: run papermill in-process, write a result file, exit.

    The kernel is this process's child, so after papermill shuts it down its peak memory is in
    ``RUSAGE_CHILDREN``. The launcher blocks ``rfc3987_syntax`` before importing anything:
    jsonschema imports it (if installed) only to check "iri" formats, which nbformat's schema
    never uses, and building its grammar costs ~4 s per process.
    """
    import logging
    import resource

    import papermill
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    cfg = json.loads(config_json)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    result: dict[str, Any] = {"status": "ok", "error": None}
    try:
        language = KernelSpecManager().get_kernel_spec(cfg["kernel_name"]).language
        papermill.execute_notebook(
            cfg["input"], cfg["output"], parameters={"PROFILE": cfg["profile"]},
            kernel_name=cfg["kernel_name"], language=language, cwd=cfg["cwd"], progress_bar=False,
            log_output=True, execution_timeout=cfg["cell_timeout"], start_timeout=120)
    except PapermillExecutionError as exc:
        result = {"status": "failed", "error": f"{exc.ename}: {exc.evalue}"}
    except CellTimeoutError as exc:
        result = {"status": "timeout", "error": f"CellTimeoutError: {exc}"}
    except DeadKernelError as exc:
        result = {"status": "failed", "error": f"DeadKernelError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - everything else is a failed run, reported
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["children_peak_rss_mb"] = round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
    with open(cfg["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


def _descendants(pid: int) -> list[int]:
    """PIDs of all descendants of ``pid`` (psutil if available, else ``ps``)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - process already gone
        return []
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return []
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _peak_rss_of(pids: list[int]) -> float | None:
    """Largest peak RSS (Linux ``VmHWM``) among live ``pids``, in MiB; None elsewhere."""
    peaks = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            pass
    return round(max(peaks), 1) if peaks else None


def _kill_tree(proc: subprocess.Popen) -> float | None:
    """SIGKILL ``proc``, its process group, and the process group of every descendant.

    jupyter_client starts each kernel in a new session, so killing the wrapper's group alone
    would leave the kernel (and its workers) running. Returns the tree's peak RSS (MiB) seen
    just before the kill, where the platform tells.
    """
    pids = [proc.pid] + _descendants(proc.pid)
    peak = _peak_rss_of(pids)
    own = os.getpgrp()
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except OSError:
            pass
    for group in groups - {own}:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    return peak


# papermill's cell boundaries and ipykernel's TCP notice go to the log file only.
_QUIET = re.compile(r"^(Executing|Ending) Cell \d+-+$|Kernel is running over TCP without encryption")


def _pump(stream, log_path: Path, prefix: str) -> None:
    with open(log_path, "w", encoding="utf-8") as log:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            log.write(line + "\n")
            log.flush()
            if _QUIET.search(line):
                continue
            text = f"{prefix}{line}"
            try:  # never let printing stop the draining of the pipe
                try:
                    print(text, flush=True)
                except UnicodeEncodeError:
                    enc = getattr(sys.stdout, "encoding", None) or "ascii"
                    print(text.encode(enc, "replace").decode(enc), flush=True)
            except Exception:  # noqa: BLE001 - e.g. a closed stdout
                pass


def _running_cell(executed: Path) -> int | None:
    try:
        nb = _read(executed)
    except Exception:  # noqa: BLE001 - a half-written notebook
        return None
    # count source cells only: papermill inserts an "injected-parameters" cell
    cells = [c for c in nb.cells if "injected-parameters" not in _tags(c)]
    for index, cell in enumerate(cells):
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return index
    return None


def _short_error(text: str | None, max_lines: int = 6, max_chars: int = 1500) -> str | None:
    if not text:
        return text
    text = re.sub(r"\x1b\[[0-9;]*m", "", text).strip()
    text = "\n".join(text.splitlines()[-max_lines:])
    return text[-max_chars:]


def _run_one(path: Path, build: Path, profile: str, timeout: int, kernel_name: str,
             strict: bool) -> dict[str, Any]:
    from mmcourse.report import RECORD_ENV, read_record

    name = path.stem
    record = build / f"{name}.record.jsonl"
    executed = build / f"{name}.ipynb"
    for stale in (record, executed, build / f"{name}.html"):
        stale.unlink(missing_ok=True)
    fd, result_file = tempfile.mkstemp(prefix=f".{name}.", suffix=".result.json", dir=build)
    os.close(fd)
    os.unlink(result_file)

    env = dict(os.environ)
    env.update({"MMCOURSE_PROFILE": profile, RECORD_ENV: str(record.resolve()),
                "PYTHONUNBUFFERED": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                "JUPYTER_PLATFORM_DIRS": "1"})
    if strict:
        env[STRICT_ENV] = "1"
    else:
        env.pop(STRICT_ENV, None)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    config = {"input": str(path.resolve()), "output": str(executed.resolve()),
              "profile": profile, "kernel_name": kernel_name, "cwd": str(path.parent.resolve()),
              "cell_timeout": int(timeout), "result": result_file}
    code = ("import sys; sys.modules.setdefault('rfc3987_syntax', None); "
            "from mmcourse.classroom import _papermill_child; "
            "sys.exit(_papermill_child(sys.argv[1]))")

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    reader = threading.Thread(target=_pump, args=(proc.stdout, build / f"{name}.log",
                                                  f"[{name}] "), daemon=True)
    reader.start()
    timed_out, killed_peak = False, None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        killed_peak = _kill_tree(proc)
    except BaseException:  # Ctrl-C: the runner is in its own session, so take it down too
        _kill_tree(proc)
        raise
    seconds = round(time.monotonic() - t0, 2)
    reader.join(timeout=10)

    result: dict[str, Any] = {}
    if os.path.exists(result_file):
        with open(result_file, encoding="utf-8") as f:
            result = json.load(f)
        os.unlink(result_file)
    if timed_out:
        cell = _running_cell(executed) if executed.exists() else None
        where = f" in cell {cell}" if cell is not None else ""
        status, error = "timeout", (f"TimeoutError: killed after {timeout} s{where} "
                                    "(notebook process group and kernel)")
    elif result:
        status, error = result["status"], _short_error(result.get("error"))
    else:
        status, error = "failed", f"runner exited with code {proc.returncode} and no result " \
                                  f"(see {build / (name + '.log')})"

    rec = read_record(record)
    peaks = [p for p in (rec.get("peak_rss_mb"), result.get("children_peak_rss_mb"),
                         killed_peak) if p]
    if executed.exists():
        try:
            _write_html(executed, build / f"{name}.html")
        except Exception as exc:  # noqa: BLE001 - a half-written notebook after a kill
            print(f"[{name}] could not render HTML: {type(exc).__name__}: {exc}", flush=True)
    return {"notebook": name, "status": status, "seconds": seconds,
            "peak_rss_mb": max(peaks) if peaks else None, "profile": profile,
            "data_sources": rec.get("data_sources", {}), "metrics": rec.get("metrics", {}),
            "error": error, "started": started}


def _write_html(executed: Path, out: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(_read(executed))
    write_text_atomic(out, body)


def load_report(build_dir: str | os.PathLike = "build") -> list[dict]:
    """Rows of ``build/report.json`` (``[]`` if missing or unreadable)."""
    path = Path(build_dir) / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = data.get("notebooks", []) if isinstance(data, dict) else []
    return [r for r in rows if isinstance(r, dict) and "notebook" in r]


def _fmt_map(mapping: dict) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return ", ".join(f"{k}={fmt(v)}" for k, v in mapping.items())


def _fmt_num(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def summary_table(rows: list[dict]) -> str:
    """Plain-text aligned table of run rows, with the error of each row that is not ok."""
    head = ["notebook", "status", "seconds", "peak MiB", "profile", "data", "metrics"]
    body = [[r.get("notebook", ""), r.get("status", ""), _fmt_num(r.get("seconds"), ".1f"),
             _fmt_num(r.get("peak_rss_mb"), ".0f"), r.get("profile", ""),
             _fmt_map(r.get("data_sources") or {}), _fmt_map(r.get("metrics") or {})]
            for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    right = {2, 3}

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    errors = [f"{r['notebook']}: {r.get('status')}: {r.get('error')}" for r in rows
              if r.get("status") != "ok"]
    if errors:
        out += [""] + errors
    return "\n".join(out)


def _index_html(rows: list[dict], build: Path) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in
                   ["notebook", "status", "seconds", "peak MiB", "profile", "data sources",
                    "metrics", "files", "started"])
    trs = []
    for r in rows:
        name = str(r.get("notebook", ""))
        links = []
        for ext in ("html", "ipynb", "log"):
            if (build / f"{name}.{ext}").exists():
                href = esc(f"{name}.{ext}", quote=True)
                links.append(f'<a href="{href}">{esc(ext)}</a>')
        title = (f'<a href="{esc(name + ".html", quote=True)}">{esc(name)}</a>'
                 if (build / f"{name}.html").exists() else esc(name))
        status = str(r.get("status", ""))
        error = r.get("error")
        status_html = esc(status) + (f'<pre>{esc(str(error))}</pre>' if error else "")
        cells = [title, status_html, esc(_fmt_num(r.get("seconds"), ".1f")),
                 esc(_fmt_num(r.get("peak_rss_mb"), ".0f")), esc(str(r.get("profile", ""))),
                 esc(_fmt_map(r.get("data_sources") or {})), esc(_fmt_map(r.get("metrics") or {})),
                 " ".join(links), esc(str(r.get("started", "")))]
        css = "ok" if status == "ok" else "bad"
        trs.append(f'<tr class="{css}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mmcourse build</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
            "tr.ok td:nth-child(2){color:#060}tr.bad td:nth-child(2){color:#a00}"
            "pre{margin:0;white-space:pre-wrap;font-size:85%}</style></head><body>\n"
            "<h1>Notebook runs</h1>\n<table>\n<tr>" + head + "</tr>\n" + "\n".join(trs) +
            "\n</table>\n</body></html>\n")


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turn SIGTERM (``kill``, a CI job being cancelled) into ``SystemExit`` while notebooks run,
    so the runner takes the notebook's kernel down with it as it does on Ctrl-C. The kernel lives
    in its own session and would otherwise outlive a terminated runner."""
    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, _exit)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(names: list[str] | None = None, src_dir: str | os.PathLike = "solutions",
        build_dir: str | os.PathLike = "build", profile: str = "smoke", timeout: int = 900,
        kernel_name: str = "python3") -> list[dict]:
    """Execute notebooks with papermill, each in its own killable subprocess; return report rows.

    Writes ``build/<name>.ipynb``, ``.html``, ``.log``, ``.record.jsonl``, ``build/index.html``
    and ``build/report.json`` (merged with rows of notebooks not run this time). ``timeout`` is
    the wall-clock limit per notebook (also used as papermill's per-cell limit). Solutions
    (``src_dir`` named ``solutions``) run with ``MMCOURSE_STRICT_CHECKS=1``. Prints the output
    of each notebook prefixed with its name, then :func:`summary_table`.
    """
    from mmcourse.config import PROFILES

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    src, build = Path(src_dir), Path(build_dir)
    paths = _select(src, names)
    build.mkdir(parents=True, exist_ok=True)
    strict = src.resolve().name == "solutions"
    rows = []
    with _sigterm_as_exit():
        for path in paths:
            print(f"[{path.stem}] running {path} (profile {profile}, timeout {timeout} s)", flush=True)
            row = _run_one(path, build, profile, timeout, kernel_name, strict)
            print(f"[{path.stem}] {row['status']} in {row['seconds']:.1f} s", flush=True)
            rows.append(row)

    merged = {r["notebook"]: r for r in load_report(build)}
    merged.update({r["notebook"]: r for r in rows})
    all_rows = [merged[k] for k in sorted(merged)]
    report = {"updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "notebooks": all_rows}
    write_text_atomic(build / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(build / "index.html", _index_html(all_rows, build))
    print(summary_table(rows), flush=True)
    return rows
