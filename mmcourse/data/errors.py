"""Clear errors for bad data files (any notebook that loads data; notebook 00 explains them).

Every problem with a dataset file becomes a :class:`DataError` whose message names the file,
says what is wrong with it and how to fix it, instead of a traceback from inside PIL, NumPy
or soundfile. Where skipping is the right behaviour (one unreadable image out of 8,000) the
loaders skip with a counted :class:`DataWarning`; ``strict=True`` turns every skip into an error.
"""
from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path


class DataError(Exception):
    """A dataset file or folder is missing, unreadable or malformed (the message says which and why)."""


class DataWarning(UserWarning):
    """Something in a dataset was skipped or converted; the data is still usable."""


def data_error(path: str | os.PathLike, problem: str, fix: str) -> DataError:
    """Build a :class:`DataError` that names ``path``, the ``problem`` and the ``fix``."""
    return DataError(f"{path}: {problem}\n  fix: {fix}")


def close_matches(name: str, folder: str | os.PathLike, n: int = 3) -> list[str]:
    """Entries of ``folder`` whose names look like ``name`` (to point out path typos)."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    by_lower = {e.lower(): e for e in entries}
    hits = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[h] for h in hits]


def missing_path_error(path: str | os.PathLike, what: str, fix: str) -> DataError:
    """A :class:`DataError` for a path that does not exist, suggesting near-miss names (typos)."""
    path = Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    hint = ""
    if parent == path.parent:
        similar = close_matches(path.name, parent)
        if similar:
            hint = f" (did you mean {', '.join(repr(str(parent / s)) for s in similar)}?)"
    else:
        hint = f" (the folder {path.parent} does not exist either; the nearest existing one is {parent})"
    return data_error(path, f"{what} not found{hint}", fix)


class SkipLog:
    """Counts skipped items of one dataset and warns once with a summary (raises if ``strict``)."""

    def __init__(self, dataset: str, strict: bool = False):
        self.dataset = dataset
        self.strict = strict
        self.items: list[tuple[str, str]] = []

    def skip(self, path: str | os.PathLike, problem: str, fix: str) -> None:
        """Record one skipped item; with ``strict`` raise a :class:`DataError` instead."""
        if self.strict:
            raise data_error(path, problem, fix + " (or pass strict=False to skip such items)")
        self.items.append((str(path), problem))

    def __len__(self) -> int:
        return len(self.items)

    def warn(self, total: int) -> None:
        """Emit one :class:`DataWarning` summarising what was skipped (nothing if none)."""
        if not self.items:
            return
        shown = "; ".join(f"{p}: {why}" for p, why in self.items[:5])
        more = f"; ... and {len(self.items) - 5} more" if len(self.items) > 5 else ""
        warnings.warn(
            f"{self.dataset}: skipped {len(self.items)} of {total} items: {shown}{more}. "
            "Pass strict=True to raise instead; re-run the fetch script to repair the files.",
            DataWarning, stacklevel=3)
