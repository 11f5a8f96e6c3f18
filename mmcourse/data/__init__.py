"""Every dataset the course uses, one way: ``data.load(name, split, ...)`` (notebook 00, "Data").

>>> from mmcourse import data
>>> train = data.load("flickr8k", split="train", view="caption")   # notebooks 04, 08
>>> print(train.info)            # source real/synthetic, licence, citation, split sizes
>>> loader = data.dataloader(train, batch_size=32, shuffle=True)   # dict batches, padded audio/text

Datasets: ``flickr8k``, ``chest_xray``, ``medmnist`` (any 2D flag, e.g. ``breastmnist`` or
``medmnist:pneumoniamnist``), ``fsdd``, ``esc10``, ``esc50``, the synthetic ``shapes`` and
``spoken`` (spoken instructions synthesised offline by the ``tts`` voice, made on first use).
Real data is read from ``MMCOURSE_DATA_DIR`` (prepared by ``python -m mmcourse fetch data``);
without it each loader falls back to a small synthetic stand-in that says so loudly
(``fallback="error"`` raises instead). :func:`describe` lists what is present.
The capstone's instruction data (notebook 11) is built from these datasets' labels by
:mod:`mmcourse.data.instruct`.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from mmcourse.data import chest_xray, esc, flickr8k, fsdd, medmnist, sources, spoken, synthetic
from mmcourse.data.batching import collate, pad_sequence, padding_mask, text_collate
from mmcourse.data.errors import DataError, DataWarning
from mmcourse.data.records import Records
from mmcourse.data.sources import Info

DATASETS = ("flickr8k", "chest_xray", "medmnist", "fsdd", "esc10", "esc50", "shapes", "spoken")
NOTEBOOKS = {"flickr8k": "04, 08", "chest_xray": "09", "medmnist": "09", "fsdd": "03, 05, 10",
             "esc10": "03, 10", "esc50": "03, 10", "shapes": "any", "spoken": "10"}
DESCRIBED_FLAGS = ("pneumoniamnist", "breastmnist")


def names() -> list[str]:
    """Names accepted by :func:`load` (MedMNIST flags too)."""
    return list(DATASETS) + list(medmnist.FLAGS)


def load(name: str, split: str = "train", **kwargs) -> Records:
    """Load dataset ``name`` / ``split`` as a Dataset with ``.info``; ``kwargs`` go to its loader.

    ``load("breastmnist", "test")`` and ``load("medmnist", "test", flag="breastmnist")`` are the same.
    """
    if name.startswith("medmnist:"):
        kwargs["flag"], name = name.split(":", 1)[1], "medmnist"
    elif name in medmnist.FLAGS:
        kwargs["flag"], name = name, "medmnist"
    loaders: dict[str, Callable[..., Records]] = {
        "flickr8k": flickr8k.load, "chest_xray": chest_xray.load, "fsdd": fsdd.load,
        "medmnist": lambda split, **kw: medmnist.load(kw.pop("flag", "pneumoniamnist"), split, **kw),
        "esc10": lambda split, **kw: esc.load("esc10", split, **kw),
        "esc50": lambda split, **kw: esc.load("esc50", split, **kw),
        "shapes": synthetic.shapes,
        "spoken": spoken.load,
    }
    if name not in loaders:
        import difflib

        near = difflib.get_close_matches(name, names(), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"unknown dataset {name!r}{hint} (known: {', '.join(names())})")
    return loaders[name](split, **kwargs)


def _row(name: str, fn: Callable[[], dict]) -> dict:
    try:
        row = fn()
    except DataError as exc:
        row = {"status": "missing", "path": "", "splits": {}, "detail": str(exc).splitlines()[0]}
    return {"name": name, "notebooks": NOTEBOOKS.get(name.split(":")[0], ""), **row}


def describe() -> list[dict]:
    """One row per dataset: name, status (real / synthetic fallback / missing), path, split sizes, detail.

    Cheap (counts files and lines, decodes nothing); used by ``mmcourse doctor``. "missing"
    means a folder exists but is incomplete or broken, so the loader would raise.
    """
    flags = list(DESCRIBED_FLAGS)
    folder, _ = sources.locate(medmnist.FOLDERS, "__none__", None)
    if folder is not None:
        flags += [f for f in medmnist.available(folder) if f not in flags]
    rows = [_row("flickr8k", flickr8k.summary), _row("chest_xray", chest_xray.summary)]
    rows += [_row(f"medmnist:{f}", lambda f=f: medmnist.summary(f)) for f in flags]
    rows += [_row("fsdd", fsdd.summary), _row("esc10", lambda: esc.summary("esc10")),
             _row("esc50", lambda: esc.summary("esc50")), _row("spoken", spoken.summary)]
    return rows


def format_table(rows: list[dict] | None = None) -> str:
    """:func:`describe` as an aligned text table (for ``mmcourse doctor`` and notebook 00)."""
    rows = describe() if rows is None else rows
    lines = [f"{'dataset':<26} {'status':<19} {'splits':<44} path / detail"]
    for r in rows:
        splits = ", ".join(f"{k} {v:,}" for k, v in r["splits"].items() if not k.startswith("fold"))
        where = r["path"] + (f"  ({r['detail']})" if r.get("detail") else "")
        lines.append(f"{r['name']:<26} {r['status']:<19} {splits:<44} {where}")
    return "\n".join(lines)


def default_workers(dataset: Dataset) -> int:
    """DataLoader workers worth using: 0 for small, in-memory or synthetic sets, else up to 4."""
    info = getattr(dataset, "info", None)
    in_memory = info is not None and (info.source == "synthetic" or info.name.startswith("medmnist"))
    if in_memory or len(dataset) < 512:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1))


def dataloader(dataset: Dataset, batch_size: int = 32, shuffle: bool = False, *, num_workers: int | None = None,
               pin_memory: bool | None = None, collate_fn=collate, **kwargs) -> DataLoader:
    """A DataLoader with course defaults: dict :func:`collate` (pads audio), workers for file-backed
    sets (decoding in parallel), pinned memory when a CUDA GPU will consume the batches.

    Threads: each worker process runs torch on one intra-op thread (PyTorch sets it when the worker
    starts), which is right for small per-sample ops; the main process keeps the caller's setting
    (with ``num_workers=0`` on a busy machine, wrap the loop in ``transforms.one_thread()``)."""
    workers = default_workers(dataset) if num_workers is None else num_workers
    if workers > 0:
        kwargs.setdefault("persistent_workers", True)
        kwargs.setdefault("prefetch_factor", 4)
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, pin_memory=pin,
                      collate_fn=collate_fn, **kwargs)


__all__ = ["load", "names", "describe", "format_table", "dataloader", "collate", "pad_sequence", "padding_mask",
           "text_collate", "DataError", "DataWarning", "Info", "Records", "flickr8k", "chest_xray", "medmnist",
           "fsdd", "esc", "spoken", "synthetic"]
