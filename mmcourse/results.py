"""Committed full-profile results records, shown beside a smoke run (notebook 00_welcome, "Profiles").

A learner on a laptop runs the ``smoke`` profile, whose numbers are not results. The numbers that
a notebook's conclusions rest on come from a ``full`` run, recorded once with

    python -m mmcourse run --profile full --record NN_name

which writes ``mmcourse/results/NN_name.json``: the metrics the notebook logged
(:func:`mmcourse.report.log_metric`), the claims it checked, and the provenance — command,
commit, date, hardware, wall time and data sources. Notebooks call :func:`show` to print the
recorded table next to this run's numbers, and :func:`mmcourse.report.claim_full` to check a
full-profile claim against the record; :func:`metric` reads one recorded number.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmcourse.fileio import write_text_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROVENANCE = ("command", "commit", "date", "hardware", "wall_seconds")


def path_for(notebook: str) -> Path:
    """Where the record of ``notebook`` (e.g. ``"07_finetuning_recipe"``) lives."""
    return RESULTS_DIR / f"{notebook}.json"


def load(notebook: str) -> dict[str, Any] | None:
    """The committed full-profile record of ``notebook``, or ``None`` when there is none yet."""
    try:
        return json.loads(path_for(notebook).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def metric(notebook: str, name: str) -> float | None:
    """One metric of the record (``None`` if the record or the metric is missing)."""
    record = load(notebook)
    return None if record is None else record.get("metrics", {}).get(name)


def provenance(record: dict[str, Any]) -> str:
    """One line: where the recorded numbers come from."""
    hw = record.get("hardware", {})
    where = hw.get("gpu") or f"{hw.get('cpu', 'CPU')} ({hw.get('cores', '?')} cores, no GPU)"
    minutes = record.get("wall_seconds", 0) / 60
    return (f"profile {record.get('profile')}, commit {str(record.get('commit', '?'))[:10]}, "
            f"{str(record.get('date', '?'))[:10]}, {where}, {minutes:.1f} min; "
            f"`{record.get('command')}`")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("—" if value is None else str(value))


def show(notebook: str, this_run: dict[str, Any] | None = None, names: list[str] | None = None) -> None:
    """Print the recorded full-profile metrics beside ``this_run``'s, with the record's provenance.

    ``names`` picks and orders metrics (default: all in the record). Metric names carry their
    profile (``acc_smoke``/``acc_full``), so a smoke value is matched to its full twin by the stem.
    """
    record = load(notebook)
    this_run = this_run or {}
    full = record.get("metrics", {}) if record else {}
    names = names or list(full) or list(this_run)
    if not names:
        names = ["(nothing logged)"]
    width = max(len(n) for n in names)
    print(f"{'metric':<{width}}  {'this run':>10}  {'full record':>11}")
    for name in names:
        mine = this_run.get(name, this_run.get(_stem(name) + "_smoke"))
        print(f"{name:<{width}}  {_fmt(mine):>10}  {_fmt(full.get(name)):>11}")
    if record is None:
        print(f"full-profile record: none yet (python -m mmcourse run --profile full --record {notebook})")
        return
    print("full-profile record: " + provenance(record))
    if record.get("note"):
        print("note: " + record["note"])


def _stem(name: str) -> str:
    for suffix in ("_full", "_smoke"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return sha + ("+uncommitted changes" if dirty else "")


def _cpu_name() -> str:
    try:  # Linux names the model; platform.processor() is often empty there
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, Any]:
    """The machine a record was made on: CPU, cores, GPU (if any), torch and Python."""
    import torch

    info: dict[str, Any] = {"cpu": _cpu_name(),
                            "cores": os.cpu_count(), "torch": torch.__version__,
                            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write(row: dict[str, Any], command: str, note: str = "") -> Path:
    """Write the record of one finished full-profile run (a row of ``build/report.json``)."""
    if row.get("profile") != "full" or row.get("status") != "ok":
        raise ValueError(f"only a successful full-profile run is recorded; {row.get('notebook')} "
                         f"was {row.get('status')} in profile {row.get('profile')}")
    hw = hardware()
    if not note and "gpu" not in hw:
        note = ("recorded on a CPU-only machine; a GPU gives the same numbers up to run-to-run "
                "noise, only faster")
    record = {"notebook": row["notebook"], "profile": "full", "metrics": row.get("metrics", {}),
              "claims": row.get("claims", []), "data_sources": row.get("data_sources", {}),
              "command": command, "commit": _commit(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "hardware": hw, "wall_seconds": row.get("seconds"), "peak_rss_mb": row.get("peak_rss_mb"),
              "note": note}
    path = path_for(row["notebook"])
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path
