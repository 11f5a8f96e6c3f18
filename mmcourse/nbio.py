"""Notebook files shared by the release and the runner: read, write, select, clean.

``mmcourse release`` (:mod:`mmcourse.release`) and ``mmcourse run`` (:mod:`mmcourse.runner`)
both pick notebooks by name from a folder and read them with :mod:`nbformat`; these helpers
are what they have in common.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import nbformat

# Cell/notebook metadata that records a run, not the notebook itself.
RUN_CELL_METADATA = ("execution", "papermill", "ExecuteTime")
RUN_NB_METADATA = ("papermill", "widgets")


def text(source: str | list[str]) -> str:
    """A cell's source as one string (nbformat allows a list of lines)."""
    return "".join(source) if isinstance(source, list) else source


def tags(cell: nbformat.NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def read(path: str | os.PathLike) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def dumps(nb: nbformat.NotebookNode) -> str:
    """The notebook as it is written to disk, ending with a newline."""
    out = nbformat.writes(nb)
    return out if out.endswith("\n") else out + "\n"


def clean_cell(cell: nbformat.NotebookNode) -> None:
    """Clear a cell's outputs, execution count and run metadata in place."""
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    for key in RUN_CELL_METADATA:
        cell.get("metadata", {}).pop(key, None)


def select(src_dir: str | os.PathLike, names: list[str] | None) -> list[Path]:
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
