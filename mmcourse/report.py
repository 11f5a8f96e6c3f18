"""What a notebook run reports to ``build/report.json`` (notebook 00_welcome, "Build report").

``mmcourse run`` gives each notebook kernel a record file through ``MMCOURSE_RECORD_FILE``;
these functions append JSON lines to it, so the report shows the metrics a notebook printed
and which data source (real or synthetic) each loader used. Outside a run they only print.
"""
from __future__ import annotations

import atexit
import json
import os
from typing import Any

from mmcourse.runtime import peak_rss_mb

RECORD_ENV = "MMCOURSE_RECORD_FILE"


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=float) + "\n")


def log_metric(name: str, value: float | int | str) -> None:
    """Print a key result and record it for ``build/report.json``."""
    if hasattr(value, "item"):
        value = value.item()
    print(f"{name}: {value}")
    _append({"kind": "metric", "name": name, "value": value})


def log_data_source(dataset: str, source: str, detail: str = "") -> None:
    """Record which source a loader used: ``"real"`` or ``"synthetic"`` (quietly)."""
    _append({"kind": "data", "dataset": dataset, "source": source, "detail": detail})


def _record_peak_memory() -> None:
    _append({"kind": "peak_rss_mb", "value": round(peak_rss_mb(), 1)})


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Fold a record file into ``{"metrics": {...}, "data_sources": {...}, "peak_rss_mb": x}``."""
    out: dict[str, Any] = {"metrics": {}, "data_sources": {}, "peak_rss_mb": None}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("kind") == "metric":
                out["metrics"][entry["name"]] = entry["value"]
            elif entry.get("kind") == "data":
                out["data_sources"][entry["dataset"]] = entry["source"]
            elif entry.get("kind") == "peak_rss_mb":
                prev = out["peak_rss_mb"] or 0
                out["peak_rss_mb"] = max(prev, entry["value"])
    return out


if os.environ.get(RECORD_ENV):
    atexit.register(_record_peak_memory)
