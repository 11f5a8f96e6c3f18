"""What the benchmark scripts of bench/ share (captioning.py, audio_llm.py): timing and memory in a
row's process, one fresh process per row, the command line, the notes every table carries, and the
run that prints the table and writes the JSON record.

A script defines its rows (``ROWS``: key -> (phase, label, unit)), the ratios between them, a
``run_row(key, device, quick, threads)`` that measures one row in the current process, a ``table``
and its own ``notes``; :func:`main` does the rest.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOISY = 1.25  # slowest / fastest timed run above which the notes warn that the machine was busy


# ---------------------------------------------------------------- in the row's process

def sync(dev) -> None:
    """Wait for the device's queued work, so that a timer sees all of it."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def autocast(dev) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA only (CPU and MPS run float32, as the notebooks do)."""
    import torch

    from mmcourse import runtime

    dtype = runtime.autocast_dtype(dev)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def timed(fn: Callable[[], Any], dev, repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    sync(dev)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        sync(dev)
        times.append(time.perf_counter() - start)
    return times, out


def memory(dev, reset: bool = False) -> float:
    """Peak RSS so far (MiB); with ``reset``, also restart the CUDA peak counter."""
    import torch

    from mmcourse import runtime

    if reset and dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    return round(runtime.peak_rss_mb(), 1)


def has_cuda(rows: dict[str, dict]) -> bool:
    """Whether any row measured a CUDA peak (the tables then get a CUDA column)."""
    return any("cuda_peak_mb" in r for r in rows.values())


def measured_head(cuda: bool) -> str:
    """The header of the columns every table ends with: spread, peak RSS, at start (and CUDA peak)."""
    return f"{'spread':>6} {'peak RSS':>9} {'at start':>9}" + (f" {'CUDA peak':>10}" if cuda else "")


def measured_cells(r: dict, cuda: bool) -> str:
    """A row's values under :func:`measured_head`."""
    return (f"{r['spread']:>6.2f} {r['peak_rss_mb']:>9.0f} {r['start_rss_mb']:>9.0f}"
            + (f" {r.get('cuda_peak_mb', 0):>10.0f}" if cuda else ""))


def finish_row(out: dict, key: str, dev) -> dict:
    """Add what every row reports: its key, the process's peak RSS, torch threads, the device, the CUDA peak."""
    import torch

    out |= {"key": key, "peak_rss_mb": memory(dev), "threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return out


# ---------------------------------------------------------------- the parent: one subprocess per row

def measure(script: str, key: str, args: argparse.Namespace, device: str) -> dict:
    """Run one row in a fresh Python process of ``script`` and return its result (its peak memory is its own)."""
    with tempfile.TemporaryDirectory(prefix="mmcourse-bench-") as tmp:
        result = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(script).resolve()), "--row", key, "--row-result", str(result),
               "--device", device] + (["--quick"] if args.quick else []) + \
              (["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"benchmark row {key!r} failed (exit {proc.returncode}); its output:\n"
                               f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}\nrerun it alone with: {' '.join(cmd)}")
        return json.loads(result.read_text())


def common_notes(rows: dict[str, dict], labels: dict[str, tuple[str, str, str]]) -> list[str]:
    """The notes under every table: what peak RSS and spread mean, a warning for unsteady rows, CUDA."""
    out = ["peak RSS (MiB): ru_maxrss of the row's own fresh process (Python, torch, models, data included); "
           "'at start': the same high-water mark just before the warm-up run",
           "spread: slowest / fastest timed run of the row (1.00 = steady)"]
    noisy = [labels[k][1] for k, r in rows.items() if r["spread"] > NOISY]
    if noisy:
        out.append(f"WARNING: timings unsteady (spread > {NOISY}) for {', '.join(noisy)}: other processes compete "
                   "for the CPU (or --threads exceeds the free cores); figures and ratios are unreliable, rerun on "
                   "an idle machine or with fewer --threads")
    if has_cuda(rows):
        out.append("CUDA peak (MiB): torch.cuda.max_memory_allocated over the warm-up and timed runs")
    return out


def main(argv: list[str] | None, *, script: str, doc: str, title: str, labels: dict[str, tuple[str, str, str]],
         ratios: dict[str, tuple[str, str]], sizes: dict[str, dict], run_row: Callable[..., dict],
         table: Callable[[dict, dict], str], notes: Callable[[dict, dict], list[str]],
         extra: Callable[[], tuple[str, dict]] | None = None) -> int:
    """The command line of a benchmark script: measure every row in its own process, print the table,
    the ratios and the notes (plus ``extra()``'s text), and write ``--json`` (plus ``extra()``'s fields)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test, well under a minute per row")
    p.add_argument("--device", help="cpu, cuda, mps (default: mmcourse.runtime.device())")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. OMP_NUM_THREADS or all cores)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--only", help=f"measure only these rows, comma-separated (of {', '.join(labels)}); "
                                  "ratios that need another row are left out")
    p.add_argument("--row", choices=sorted(labels), help=argparse.SUPPRESS)  # child: measure one row
    p.add_argument("--row-result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        Path(args.row_result).write_text(json.dumps(run_row(args.row, args.device, args.quick, args.threads)))
        return 0

    from mmcourse import fileio, results, runtime

    device = str(runtime.device(args.device))
    hardware = results.hardware()
    print("hardware: " + ", ".join(f"{k} {v}" for k, v in hardware.items()), flush=True)
    start = time.perf_counter()
    keys = args.only.split(",") if args.only else list(labels)
    unknown = [k for k in keys if k not in labels]
    if unknown:
        p.error(f"unknown rows {unknown}; this benchmark has {', '.join(labels)}")
    rows = {}
    for key in keys:
        print(f"  measuring {labels[key][1]} ...", flush=True)
        rows[key] = measure(script, key, args, device)
        rows[key]["spread"] = max(rows[key]["times"]) / min(rows[key]["times"])
    values = {name: rows[a]["value"] / rows[b]["value"] for name, (a, b) in ratios.items() if a in rows and b in rows}
    size = sizes["quick" if args.quick else "full"]
    print(f"\n{title} on {device} ({'quick' if args.quick else 'full'} sizes, {time.perf_counter() - start:.0f} s)")
    print(table(rows, values))
    try:
        own = notes(rows, size)
    except KeyError as err:  # a note that compares rows needs both: --only left one out
        own = [f"the benchmark's notes need the row {err} (left out by --only)"]
    for line in own + common_notes(rows, labels):
        print("note: " + line)
    text, fields = extra() if extra else ("", {})
    if text:
        print(text)
    if args.json:
        record = {"hardware": hardware, "device": device, "quick": args.quick, "sizes": size,
                  "rows": {k: {"label": labels[k][1], "unit": labels[k][2], **r} for k, r in rows.items()},
                  "ratios": values, **fields}
        fileio.write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0
