"""What a notebook run reports to ``build/report.json`` (notebook 00_welcome, "Build report").

Inside a notebook: ``mmcourse run`` gives each kernel a record file through
``MMCOURSE_RECORD_FILE``; :func:`log_metric` and :func:`log_data_source` append JSON lines to it,
so the report shows the metrics a notebook printed and which data source (real or synthetic)
each loader used. Outside a run they only print. Importing this module does nothing else.

In the runner: :func:`read_record` folds a record file into a report row,
:func:`write_build_report` writes ``build/report.json`` and ``build/index.html``, and
:func:`summary_table` is the table ``mmcourse run`` prints. Peak memory is not recorded here:
the runner measures each notebook's kernel itself (:mod:`mmcourse.runner`).
"""
from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mmcourse.fileio import write_text_atomic

RECORD_ENV = "MMCOURSE_RECORD_FILE"
_LOGGED: dict[str, Any] = {}  # this kernel's metrics, so a full run checks its own full-profile claims


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=float) + "\n")


def log_metric(name: str, value: float | int | str, quiet: bool = False) -> None:
    """Print a key result and record it for ``build/report.json`` (``quiet``: a table already shows it)."""
    if hasattr(value, "item"):
        value = value.item()
    if not quiet:
        print(f"{name}: {value}")
    _LOGGED[name] = value
    _append({"kind": "metric", "name": name, "value": value})


class ClaimFailed(AssertionError):
    """A claim the prose makes did not hold on this run (raised in strict mode: solutions, CI)."""


def claim(text: str, holds: bool, evidence: str = "", source: str = "this run") -> None:
    """Print a claim the prose makes and whether it held; record it for ``build/report.json``.

    Every quantitative statement in a notebook's text is checked by a cell (COURSE_DESIGN §4):
    ``claim("late fusion beats every single modality", late > max(singles), f"{late:.3f} vs ...")``.
    ``source`` says where the numbers come from: ``"this run"``, or ``"full-profile record"`` for a
    claim that only holds in the full profile and is checked against :mod:`mmcourse.results`.
    With strict checks (instructor sources, CI) a claim that fails raises :class:`ClaimFailed`.
    """
    holds = bool(holds)
    line = f"{'✓' if holds else '✗'} claim ({source}): {text}" + (f" [{evidence}]" if evidence else "")
    if not holds:
        line += " — does NOT hold"
    print(line)
    _append({"kind": "claim", "text": text, "holds": holds, "source": source, "evidence": evidence})
    from mmcourse.checks import strict
    if not holds and strict():
        raise ClaimFailed(line)


def claim_full(notebook: str, text: str, holds: Callable[[dict[str, Any]], bool],
               evidence: Callable[[dict[str, Any]], str] | None = None) -> None:
    """A claim that only the full profile can support, checked against the committed results record.

    In a full run, which logs those metrics itself (:func:`log_metric`), the claim is checked on
    this run instead, so a run that contradicts its prose cannot be recorded.

    ``holds(metrics)`` and ``evidence(metrics)`` read the record's metrics (:mod:`mmcourse.results`),
    e.g. ``claim_full("04_alignment_contrastive", "τ = 0.07 beats τ = 1",
    lambda m: m["val_R@1_tau0.07_full"] > m["val_R@1_tau1_full"])``. Without a record it says so
    and returns ``None``: the claim is then unchecked, never silently "true".
    """
    try:  # a full run has logged the metrics itself: check the claim on this run
        ok = holds(_LOGGED)
    except KeyError:
        pass
    else:
        claim(text, ok, evidence(_LOGGED) if evidence else "", source="this full-profile run")
        return
    from mmcourse import results
    record = results.load(notebook)
    if record is None:
        print(f"… claim (full profile, no record yet — python -m mmcourse run --profile full --record "
              f"{notebook}): {text}")
        _append({"kind": "claim", "text": text, "holds": None, "source": "full-profile record (missing)"})
        return
    metrics = record.get("metrics", {})
    try:
        ok = holds(metrics)
        why = evidence(metrics) if evidence else ""
    except KeyError as exc:
        ok, why = False, f"the record has no metric {exc}; re-record it"
    claim(text, ok, why, source=f"full-profile record of {str(record.get('date', '?'))[:10]}")


def log_data_source(dataset: str, source: str, detail: str = "") -> None:
    """Record which source a loader used: ``"real"``, ``"synthetic"`` (a stand-in) or ``"tts"`` (quietly)."""
    _append({"kind": "data", "dataset": dataset, "source": source, "detail": detail})


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Fold a record file into ``{"metrics": {...}, "data_sources": {...}, "claims": [...]}``."""
    out: dict[str, Any] = {"metrics": {}, "data_sources": {}, "claims": []}
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
            elif entry.get("kind") == "claim":
                out["claims"].append({k: entry.get(k) for k in ("text", "holds", "source", "evidence")})
    return out


def load_report(build_dir: str | os.PathLike = "build") -> list[dict]:
    """Rows of ``build/report.json`` (``[]`` if missing or unreadable)."""
    path = Path(build_dir) / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    rows = data.get("notebooks", []) if isinstance(data, dict) else []
    return [r for r in rows if isinstance(r, dict) and "notebook" in r]


def _fmt_map(mapping: dict, limit: int | None = None) -> str:
    """``k=v, ...``; with ``limit``, the first ``limit`` entries and how many more are in report.json."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    items = list(mapping.items())
    shown = ", ".join(f"{k}={fmt(v)}" for k, v in items[:limit])
    return shown + (f", … {len(items) - limit} more in report.json" if limit is not None and len(items) > limit else "")


def _fmt_num(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def summary_table(rows: list[dict]) -> str:
    """Plain-text aligned table of run rows, with the error of each row that is not ok."""
    head = ["notebook", "status", "seconds", "peak MiB", "profile", "data", "metrics"]
    body = [[r.get("notebook", ""), r.get("status", ""), _fmt_num(r.get("seconds"), ".1f"),
             _fmt_num(r.get("peak_rss_mb"), ".0f"), r.get("profile", ""),
             _fmt_map(r.get("data_sources") or {}), _fmt_map(r.get("metrics") or {}, limit=6)]
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


def index_html(rows: list[dict], build: Path) -> str:
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


def write_build_report(build_dir: str | os.PathLike, rows: list[dict]) -> list[dict]:
    """Merge ``rows`` into ``build/report.json`` (rows of notebooks not run this time are kept),
    write it and ``build/index.html``; return all rows, sorted by notebook."""
    build = Path(build_dir)
    merged = {r["notebook"]: r for r in load_report(build)}
    merged.update({r["notebook"]: r for r in rows})
    all_rows = [merged[k] for k in sorted(merged)]
    report = {"updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "notebooks": all_rows}
    write_text_atomic(build / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    write_text_atomic(build / "index.html", index_html(all_rows, build))
    return all_rows
