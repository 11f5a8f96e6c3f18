"""Medical fine-tuning speed (notebook 09): MobileNetV2 images/s through ``fit``, fp32 eager against
each speed lever of ``FitConfig`` and against all of them together (``make bench``; README "Performance").

Every row is one ``fit`` call in a fresh subprocess, on the same model (ImageNet MobileNetV2 with a
2-class head, as notebook 09 fine-tunes it), the same data and the same batch:

- ``eager``: float32, NCHW, the default AdamW (``foreach``): the baseline;
- ``fused``: ``fit(..., fused=True)``: one AdamW kernel for the whole update;
- ``channels_last``: ``fit(..., channels_last=True)``: weights and images in NHWC order;
- ``compile``: ``fit(..., compile=True)``: the forward and loss through ``torch.compile`` (inductor);
- ``optimised``: ``compile`` + ``channels_last`` (+ bf16 autocast and fused AdamW on CUDA).

On CUDA, one more row: ``bf16`` (``fit(..., amp=True)``, autocast to bf16, fp16 + a grad scaler
where bf16 is missing). The images are real Kermany chest X-rays (the carved validation split,
decoded into memory before timing) when ``MMCOURSE_DATA_DIR`` has them, else random tensors; the
notes say which. A step's time is read from ``fit``'s own "step" callback: the first ``warmup``
steps (``torch.compile``'s compilation happens there, and is reported as its own figure) are left
out, and images/s is the batch over the median of the remaining steps.

    python bench/medical.py [--quick] [--device cpu] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (bench/_common.py: timing, memory, one process per row, the command line)

SIZES = {  # quick: a smoke test of seconds per row (compile aside); full: notebook 09's smoke size on a CPU
    "quick": {"image": 64, "batch": 4, "warmup": 2, "timed": 3},
    "full": {"image": 128, "batch": 16, "warmup": 3, "timed": 6},
}
LEVERS = {  # row key -> fit() settings (on CUDA, "optimised" also gets amp and fused: see levers())
    "eager": {"amp": False, "fused": False},
    "fused": {"amp": False, "fused": True},
    "channels_last": {"amp": False, "fused": False, "channels_last": True},
    "compile": {"amp": False, "fused": False, "compile": True},
    "optimised": {"amp": False, "fused": False, "channels_last": True, "compile": True},
}
ROWS = {  # row key -> (phase, label, unit)
    "eager": ("train", "fp32 eager (the baseline)", "images/s"),
    "fused": ("train", "fused AdamW", "images/s"),
    "channels_last": ("train", "channels_last", "images/s"),
    "compile": ("train", "torch.compile", "images/s"),
    "optimised": ("train", "compile + channels_last (+ bf16, fused on CUDA)", "images/s"),
}
RATIOS = {f"{ROWS[k][1]} vs. eager": (k, "eager") for k in ("fused", "channels_last", "compile", "optimised")}
CUDA_ROWS = {"bf16": ("train", "bf16 autocast", "images/s")}


def levers(key: str, dev) -> dict:
    """The fit settings of row ``key`` on ``dev``: on CUDA the optimised path adds bf16 and fused AdamW."""
    if key == "bf16":
        return {"amp": True, "fused": False}
    out = dict(LEVERS[key])
    if key == "optimised" and dev.type == "cuda":
        out |= {"amp": True, "fused": True}
    return out


def xrays(n: int, size: int) -> tuple[Any, Any, str]:
    """``n`` ImageNet-normalised images and labels in memory: Kermany X-rays if real, else random tensors."""
    import torch

    from mmcourse import data
    from mmcourse.data.transforms import normalize

    try:
        ds = data.load("chest_xray", split="val", image_size=size, channels=3)
        if ds.info.source == "real" and len(ds) >= n:
            items = [ds[i] for i in range(n)]
            images = torch.stack([normalize(it["image"]) for it in items])
            return images, torch.tensor([int(it["label"]) for it in items]), f"{n} real Kermany X-rays, {size} px"
    except (FileNotFoundError, RuntimeError, OSError):
        pass
    gen = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 2, (n,), generator=gen),
            f"{n} random tensors, {size} px (no real X-rays in MMCOURSE_DATA_DIR)")


def train_row(dev, size: dict, settings: dict) -> dict:
    """One fit run of warmup + timed steps; the step times come from fit's "step" callback."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from mmcourse import pretrained
    from mmcourse.train import fit

    steps, b = size["warmup"] + size["timed"], size["batch"]
    pool, labels, inputs = xrays(2 * b, size["image"])  # two batches' worth, cycled
    reps = -(-steps * b // len(pool))
    dataset = TensorDataset(pool.repeat(reps, 1, 1, 1)[:steps * b], labels.repeat(reps)[:steps * b])
    model, _ = pretrained.load("image", device="cpu")
    torch.manual_seed(0)
    model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, 2)
    stamps = [time.perf_counter()]

    def on_step(event: str, info: dict) -> None:
        if event == "step":
            _common.sync(dev)
            stamps.append(time.perf_counter())

    start_rss = _common.memory(dev, reset=True)
    hist = fit(model, lambda m, batch: F.cross_entropy(m(batch[0]), batch[1]), DataLoader(dataset, batch_size=b),
               epochs=1, lr=3e-4, progress=False, device=dev, callback=on_step, **settings)
    times = [t1 - t0 for t0, t1 in zip(stamps, stamps[1:])]
    timed = times[size["warmup"]:]
    sec = statistics.median(timed)
    return {"value": b / sec, "seconds": sec, "times": timed, "first_steps_s": round(sum(times[:size["warmup"]]), 2),
            "loss": hist.train_loss[-1], "start_rss_mb": start_rss, "inputs": inputs, "settings": settings}


def run_row(key: str, device: str, quick: bool, threads: int | None) -> dict:
    """Measure one row in this process (the child side of ``_common.measure``)."""
    import torch

    from mmcourse import runtime

    if threads:
        torch.set_num_threads(threads)
    dev = runtime.device(device)
    size = SIZES["quick" if quick else "full"]
    return _common.finish_row(train_row(dev, size, levers(key, dev)), key, dev)


def table(rows: dict[str, dict], ratios: dict[str, float]) -> str:
    cuda = _common.has_cuda(rows)
    lines = [f"{'phase':<6} {'row':<50} {'figure':>8} {'unit':<9} {'first steps s':>13} "
             + _common.measured_head(cuda)]
    for key, r in rows.items():
        phase, label, unit = {**ROWS, **CUDA_ROWS}[key]
        lines.append(f"{phase:<6} {label:<50} {r['value']:>8.3g} {unit:<9} {r['first_steps_s']:>13.1f} "
                     + _common.measured_cells(r, cuda))
    lines += [f"{'ratio':<6} {name:<50} {value:>7.3f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def notes(rows: dict[str, dict], size: dict) -> list[str]:
    eager = rows["eager"]
    out = [f"model: MobileNetV2 (ImageNet) with a 2-class head, all {size['batch']}-image batches of "
           f"{eager['inputs']}; AdamW through mmcourse.train.fit",
           f"images/s: batch / median step time of {size['timed']} steps after {size['warmup']} warm-up "
           "steps; 'first steps s': the warm-up steps' time (torch.compile compiles there)"]
    if "compile" in rows:  # compile pays back after its extra warm-up time over the time it saves per step
        comp = rows["compile"]
        saved, extra = eager["seconds"] - comp["seconds"], comp["first_steps_s"] - eager["first_steps_s"]
        payback = f"pays back its compilation after about {extra / saved:.0f} steps" if saved > 0 else \
            "does not pay back here: its steps are not faster"
        out.append(f"torch.compile's warm-up took {extra:+.0f} s more than eager's; it {payback} "
                   "(notebook 09's full run on a CPU: 4 epochs of 146 steps)")
    out.append("FitConfig's defaults follow these measurements: fused AdamW on CUDA only, channels_last and compile "
               "off unless asked for (fit(..., channels_last=True, compile=True))")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from mmcourse import runtime

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device")
    device = runtime.device(parser.parse_known_args(argv)[0].device)
    labels, ratios = dict(ROWS), dict(RATIOS)
    if device.type == "cuda":  # bf16 autocast is a lever on CUDA only (fit trains in float32 elsewhere)
        labels |= CUDA_ROWS
        ratios["bf16 autocast vs. eager"] = ("bf16", "eager")
    return _common.main(argv, script=__file__, doc=__doc__, title="notebook 09 fine-tuning speed", labels=labels,
                        ratios=ratios, sizes=SIZES, run_row=run_row, table=table, notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
