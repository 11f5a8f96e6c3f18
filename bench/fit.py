"""The cost of ``fit`` itself, of its checkpoints and of DDP, figures and ratios side by side
(``make bench``; notebook 07's training loop, README "Scaling out").

Three pairs on one model, an MLP 1024 -> W -> W -> 10 trained by AdamW on random data, every row in a
fresh subprocess:

1. ``mmcourse.train.fit`` against a bare PyTorch loop doing the same work (forward, backward,
   gradient clipping, AdamW, the warm-up + cosine schedule): what fit's bookkeeping costs
   (history, the loss and gradient norm read back every step, the position for resume).
2. ``fit`` writing a checkpoint every 10 steps (weights, optimizer state, RNGs, sha256 manifest,
   fsync) against ``fit`` without: the price of being able to resume.
3. ``fit`` under ``torchrun --nproc_per_node 2`` (gloo, one torch thread per process, half the
   global batch per process) against ``fit`` in one process with the whole batch and the threads
   of this run. On a 2-core CPU expect no speed-up: the gradient all-reduce is the cost.

Each figure is the median of several timed runs of ``steps`` optimizer steps after a warm-up run.

    python bench/fit.py [--quick] [--device cpu] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (bench/_common.py: timing, memory, one process per row, the command line)

SIZES = {  # quick: a smoke test of a few seconds per row; full: a model where a step takes milliseconds
    "quick": {"steps": 20, "batch": 32, "width": 256, "repeats": 2, "every": 10},
    "full": {"steps": 60, "batch": 128, "width": 1024, "repeats": 3, "every": 10},
}
ROWS = {  # row key -> (phase, label, unit)
    "bare": ("loop", "bare PyTorch loop", "steps/s"),
    "fit": ("loop", "mmcourse.train.fit", "steps/s"),
    "fit_ckpt": ("checkpoint", "fit, a checkpoint every 10 steps", "steps/s"),
    "ddp1": ("DDP", "fit, 1 process, the whole batch", "steps/s"),
    "ddp2": ("DDP", "fit, torchrun 2 processes (gloo), half each", "steps/s"),
}
RATIOS = {"fit vs. bare loop": ("fit", "bare"), "with checkpoints vs. without": ("fit_ckpt", "fit"),
          "2 processes vs. 1": ("ddp2", "ddp1")}
IN_DIM, CLASSES = 1024, 10


def parts(size: dict, batch: int, seed: int = 0):
    """The model, a loader of ``steps`` batches, the loss."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    n = size["steps"] * size["batch"]
    data = TensorDataset(torch.randn(n, IN_DIM, generator=g), torch.randint(0, CLASSES, (n,), generator=g))
    torch.manual_seed(seed)
    w = size["width"]
    model = nn.Sequential(nn.Linear(IN_DIM, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, CLASSES))

    def loss_fn(m, b):
        x, y = b
        return F.cross_entropy(m(x), y)

    return model, DataLoader(data, batch_size=batch, shuffle=True), loss_fn


def run_bare(dev, size: dict) -> tuple[list[float], float]:
    import torch

    from mmcourse.train import default_optimizer, warmup_cosine_scheduler

    model, loader, loss_fn = parts(size, size["batch"])
    model.to(dev)

    def run() -> float:
        opt = default_optimizer(model, 1e-3)
        sched = warmup_cosine_scheduler(opt, size["steps"], round(0.1 * size["steps"]))
        for batch in loader:
            loss = loss_fn(model, [t.to(dev) for t in batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        return float(loss)

    return _common.timed(run, dev, size["repeats"])


def run_fit(dev, size: dict, checkpoints: bool) -> tuple[list[float], float, dict]:
    from mmcourse.train import fit

    model, loader, loss_fn = parts(size, size["batch"])
    extra = {"n_checkpoints": 0}

    def run() -> float:
        with tempfile.TemporaryDirectory(prefix="mmcourse-bench-ckpt-") as tmp:
            hist = fit(model, loss_fn, loader, epochs=1, lr=1e-3, amp=False, progress=False, device=dev,
                       checkpoint_dir=tmp if checkpoints else None,
                       checkpoint_every=size["every"] if checkpoints else None, keep_last=2)
            if checkpoints:
                files = list(Path(tmp).glob("step-*"))
                extra["checkpoint_mb"] = round(sum(f.stat().st_size for f in files
                                                   if "best" not in f.name) / 2 / 2**20, 2)
                extra["n_checkpoints"] = size["steps"] // size["every"]
        return hist.train_loss[-1]

    times, loss = _common.timed(run, dev, size["repeats"])
    return times, loss, extra


def ddp_child(out: str, quick: bool) -> int:
    """One process of the DDP rows (started alone or by torchrun): time ``repeats`` fresh fits."""
    import torch

    from mmcourse import distributed, runtime
    from mmcourse.train import fit

    size = SIZES["quick" if quick else "full"]
    world = distributed.env_world_size()
    model, loader, loss_fn = parts(size, size["batch"] // world)
    times = []
    for i in range(size["repeats"] + 1):  # the first one warms up
        distributed.barrier()
        start = time.perf_counter()
        hist = fit(model, loss_fn, loader, epochs=1, lr=1e-3, amp=False, progress=False, device="cpu")
        distributed.barrier()
        if i:
            times.append(time.perf_counter() - start)
    if distributed.is_main():
        Path(out).write_text(json.dumps({"times": times, "world": distributed.world_size(),
                                         "steps": hist.step, "loss": hist.train_loss[-1],
                                         "threads": torch.get_num_threads(),
                                         "peak_rss_mb": round(runtime.peak_rss_mb(), 1)}))
    return 0


def run_ddp(size: dict, quick: bool, world: int, threads: int | None) -> dict:
    """Start the DDP child (torchrun for 2 processes) and read what its rank 0 measured."""
    with tempfile.TemporaryDirectory(prefix="mmcourse-bench-ddp-") as tmp:
        result = Path(tmp) / "ddp.json"
        child = [str(Path(__file__).resolve()), "--ddp-child", str(result)] + (["--quick"] if quick else [])
        cmd = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
                                  if world > 1 else []), *child]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env |= {"OMP_NUM_THREADS": "1" if world > 1 else str(threads or os.cpu_count() or 1),
                "CUDA_VISIBLE_DEVICES": "", "no_proxy": "*", "NO_PROXY": "*"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or not result.is_file():
            raise RuntimeError(f"DDP row failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        return json.loads(result.read_text())


def run_row(key: str, device: str, quick: bool, threads: int | None) -> dict:
    """Measure one row in this process (the child side of ``_common.measure``)."""
    import torch

    from mmcourse import runtime

    if threads:
        torch.set_num_threads(threads)
    size = SIZES["quick" if quick else "full"]
    if key.startswith("ddp"):
        world = int(key[-1])
        r = run_ddp(size, quick, world, threads)
        sec = statistics.median(r["times"])
        out = {"value": size["steps"] / sec, "seconds": sec, "times": r["times"], "loss": r["loss"],
               "start_rss_mb": float("nan"), "world": r["world"], "per_process_batch": size["batch"] // world,
               "threads": r["threads"], "peak_rss_mb": r["peak_rss_mb"], "device": "cpu", "key": key}
        return out
    dev = runtime.device(device)
    start_rss = _common.memory(dev, reset=True)
    extra: dict = {}
    if key == "bare":
        times, loss = run_bare(dev, size)
    else:
        times, loss, extra = run_fit(dev, size, checkpoints=key == "fit_ckpt")
    sec = statistics.median(times)
    out = {"value": size["steps"] / sec, "seconds": sec, "times": times, "loss": float(loss),
           "start_rss_mb": start_rss, **extra}
    return _common.finish_row(out, key, dev)


def table(rows: dict[str, dict], ratios: dict[str, float]) -> str:
    cuda = _common.has_cuda(rows)
    lines = [f"{'phase':<11} {'row':<46} {'figure':>8} {'unit':<8} {'threads':>7} " + _common.measured_head(cuda)]
    for key, r in rows.items():
        phase, label, unit = ROWS[key]
        cells = _common.measured_cells(r, cuda).replace("nan", "  —")
        lines.append(f"{phase:<11} {label:<46} {r['value']:>8.3g} {unit:<8} {r['threads']:>7} " + cells)
    lines += [f"{'ratio':<11} {name:<46} {value:>7.3f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def notes(rows: dict[str, dict], size: dict) -> list[str]:
    ck, fit_row = rows["fit_ckpt"], rows["fit"]
    per_ckpt = (ck["seconds"] - fit_row["seconds"]) / max(1, ck.get("n_checkpoints", 1))
    overhead = 100 * (rows["bare"]["value"] / fit_row["value"] - 1)
    return [f"model: MLP {IN_DIM} -> {size['width']} -> {size['width']} -> {CLASSES}, batch {size['batch']}, "
            f"{size['steps']} AdamW steps per timed run, median of {size['repeats']} runs after 1 warm-up",
            f"a step of fit takes {overhead:+.1f} % of a bare-loop step's time extra (the goal: at most +5 %; "
            "a negative figure is noise)",
            f"one checkpoint ({ck.get('checkpoint_mb', 0):.2f} MiB of weights and optimizer state, sha256, fsync) "
            f"costs about {1000 * per_ckpt:.0f} ms",
            f"DDP: 1 process with {rows['ddp1']['threads']} torch thread(s) and batch {size['batch']} vs. "
            f"{rows['ddp2']['world']} processes with 1 thread and batch {rows['ddp2']['per_process_batch']} each "
            "(the same global batch); their peak RSS is rank 0's, and 'at start' is not measured",
            "on a CPU with as many cores as processes there is nothing to gain: each step also all-reduces "
            "the gradients between the processes"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--ddp-child" in argv:
        return ddp_child(argv[argv.index("--ddp-child") + 1], "--quick" in argv)
    return _common.main(argv, script=__file__, doc=__doc__, title="fit, checkpoint and DDP benchmark",
                        labels=ROWS, ratios=RATIOS, sizes=SIZES, run_row=run_row, table=table, notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
