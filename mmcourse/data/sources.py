"""Where data comes from: real files under ``MMCOURSE_DATA_DIR`` or a synthetic stand-in (notebook 00).

Every loader finds its folder with :func:`locate`. When the folder is absent it either raises
(``fallback="error"``) or builds a synthetic stand-in (``fallback="synthetic"``, the default),
which prints a loud :func:`banner`. Either way the choice is recorded for ``build/report.json``
with :func:`mmcourse.report.log_data_source`, and the dataset's ``.info.source`` says
``"real"`` or ``"synthetic"``. A folder that exists but is broken is never papered over with
synthetic data: that is a :class:`~mmcourse.data.errors.DataError`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from mmcourse import config, report
from mmcourse.data.errors import DataError, close_matches, missing_path_error

FALLBACKS = ("synthetic", "error")
# Folder names of the datasets themselves: never suggested as typos of one another.
KNOWN_FOLDERS = {"flickr8k", "chest_xray_pneumonia", "chest_xray", "medmnist", "fsdd", "esc10", "esc50",
                 "ESC-50-master", "ESC-50", "ESC-10", "free-spoken-digit-dataset"}


def is_known_folder(name: str) -> bool:
    """A dataset's own folder name (also ``ESC-50-<commit>``, GitHub's archive folder for a pinned commit)."""
    return name in KNOWN_FOLDERS or name.startswith(("ESC-50-", "free-spoken-digit-dataset-"))
_BANNERS_SHOWN: set[str] = set()


@dataclass
class Info:
    """Metadata every dataset carries as ``.info``: where it came from and how big its splits are."""

    name: str
    source: str  # "real", "synthetic" (a stand-in) or "tts" (speech made by the tts role, notebook 10)
    split: str
    licence: str
    citation: str
    splits: dict[str, int]
    path: str = ""
    classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    homepage: str = ""

    def as_dict(self) -> dict:
        """Plain-dict copy (for JSON and printing)."""
        return asdict(self)

    def __str__(self) -> str:
        sizes = ", ".join(f"{k} {v:,}" for k, v in self.splits.items())
        tag = "REAL" if self.source == "real" else "SYNTHETIC stand-in"
        return f"{self.name} [{tag}] split={self.split!r} ({sizes}) from {self.path or '(generated)'}"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding all datasets: ``root`` if given, else ``MMCOURSE_DATA_DIR`` (config.data_dir())."""
    if root is None:
        return config.data_dir()
    base = Path(root).expanduser()
    if not base.exists():
        raise missing_path_error(base, "data folder (root=)", "check the path you passed as root=, "
                                 "or leave it out to use MMCOURSE_DATA_DIR")
    return base


def locate(folders: Sequence[str], marker: str, root: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """Find a dataset folder: ``(path, "")`` or ``(None, why_not)``.

    ``folders`` are the accepted folder names under the data root (first is canonical);
    ``root`` may also point straight at the dataset folder, recognised by the ``marker`` entry.
    """
    base = data_root(root)
    if (base / marker).exists():
        return base, ""
    for name in folders:
        if (base / name / marker).exists() or (base / name).is_dir():
            return base / name, ""
    env = os.environ.get("MMCOURSE_DATA_DIR", "").strip()
    where = f"MMCOURSE_DATA_DIR={env}" if env and root is None else f"data folder {base}"
    if not base.exists():
        similar = close_matches(base.name, base.parent)
        hint = f"; did you mean {', '.join(str(base.parent / s) for s in similar)}?" if similar else ""
        return None, f"the {where} does not exist{hint}"
    similar = [s for s in close_matches(folders[0], base) if s not in folders and not is_known_folder(s)]
    hint = (f"; found {', '.join(repr(s) for s in similar)} instead - a typo? "
            f"rename it to {folders[0]!r}") if similar else ""
    return None, f"no {folders[0]}/ folder in the {where}{hint}"


def check_fallback(fallback: str) -> None:
    """Reject anything but ``"synthetic"`` or ``"error"``."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, not {fallback!r}")


def missing_real_data(name: str, reason: str, fallback: str, fetch_name: str) -> None:
    """Raise for ``fallback="error"``; return (so the caller builds the stand-in) for ``"synthetic"``."""
    check_fallback(fallback)
    if fallback == "error":
        raise DataError(f"{name}: real data not found: {reason}\n  fix: run `python -m mmcourse fetch data "
                        f"{fetch_name}` (or data_scripts/fetch_{fetch_name}.py), or set MMCOURSE_DATA_DIR "
                        "to the folder that holds the prepared datasets")


def banner(name: str, stand_in: str, reason: str = "", fetch_name: str | None = None) -> None:
    """Print the loud SYNTHETIC DATA banner (in full once per dataset and process, then one line)."""
    if name in _BANNERS_SHOWN:
        print(f"!! SYNTHETIC stand-in for {name} (see the banner above): {stand_in}")
        return
    _BANNERS_SHOWN.add(name)
    line = "=" * 78
    fetch = fetch_name or name
    print("\n".join([
        line,
        f"!! SYNTHETIC DATA: {name} is NOT the real dataset !!",
        f"   stand-in: {stand_in}",
        f"   why:      {reason or 'requested explicitly'}",
        f"   real data: python -m mmcourse fetch data {fetch}   (or set MMCOURSE_DATA_DIR)",
        "   Numbers measured on this stand-in say nothing about the real task.",
        line,
    ]), flush=True)


def record(info: Info, detail: str = "") -> None:
    """Log which source a loader used for ``build/report.json``."""
    report.log_data_source(info.name, info.source, detail or f"{info.split}: {info.path or 'generated'}")
