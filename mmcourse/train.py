"""The one fit loop every notebook uses (notebook 07_finetuning_recipe).

``fit(model, loss_fn, train_loader, val_loader, ...)`` is plain PyTorch with the pieces of the
fine-tuning recipe switched on: AdamW, linear warm-up + cosine decay, gradient clipping,
gradient accumulation, mixed precision, evaluation, early stopping that really keeps the best
weights, and checkpoints that a killed run resumes from bit for bit.

How exact resume works (notebook 07, §Checkpoint and resume)
-----------------------------------------------------------
A checkpoint is written only at an optimizer-step boundary and holds everything the rest of the
run depends on: weights, optimizer / scheduler / grad-scaler state, the RNG states (Python,
NumPy, torch CPU and CUDA), the history (with the early-stopping bookkeeping), the best weights,
and the data-loader position ``(epoch, batch)``.

The batch order is the one piece that is not state we can save: a shuffled ``DataLoader`` draws
its permutation from a random generator when an epoch starts. So :func:`seed_loader` gives the
loader a fresh ``torch.Generator`` seeded from ``(seed, epoch)`` at the start of every epoch:
the order of epoch ``e`` depends on nothing else. To resume at batch ``b`` of epoch ``e``,
``fit`` re-creates epoch ``e``'s iterator, skips its first ``b`` batches (they are loaded, not
trained on), and only then restores the RNG states, so any random augmentation in the remaining
batches sees exactly the numbers it saw in the uninterrupted run.

Files on disk, per checkpoint ``step-00000040``: ``.safetensors`` (model weights),
``.pt`` (the rest; loadable with ``torch.load(..., weights_only=True)``), ``.best.safetensors``
(best weights, when early stopping tracks a metric) and ``.json``, a manifest with the sha256 of
each file. Every file is written to a temporary name, fsynced and renamed (``os.replace``), the
manifest last, so a crash never leaves a checkpoint that looks complete but is not; a file
damaged later fails its sha256 check and ``resume=True`` falls back to the previous checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from tqdm.auto import tqdm

from mmcourse import runtime
from mmcourse.fileio import atomic_path, sha256_file

CKPT_FORMAT = "mmcourse-checkpoint-1"

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
EvalFn = Callable[[torch.nn.Module, Any], dict[str, float]]
Callback = Callable[[str, dict[str, Any]], None]


class TrainingOutOfMemoryError(RuntimeError):
    """GPU out of memory during training, with advice on what to change (notebook 07, §Pitfalls)."""


class CheckpointWarning(UserWarning):
    """A checkpoint on disk failed verification and was skipped."""


@dataclass
class History:
    """What ``fit`` returns, and what a checkpoint stores to resume (notebook 07, §Experiment tracking).

    ``train_loss[i]``, ``lr[i]`` and ``grad_norm[i]`` belong to optimizer step ``i + 1``;
    ``evals`` holds one dict per evaluation (``step``, ``epoch`` and the metrics).
    ``epoch`` / ``batch`` is the data-loader position: micro-batches of ``epoch`` already used.
    """

    step: int = 0
    epoch: int = 0
    batch: int = 0
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False


# --------------------------------------------------------------------------- schedule

def warmup_cosine(step: int, total: int, warmup: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at ``step``: linear warm-up from 0, then cosine decay to ``min_lr`` at ``total``.

    ``lr = base_lr * step / warmup`` during warm-up; afterwards
    ``lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * p)) / 2`` with
    ``p = (step - warmup) / (total - warmup)`` (notebook 07, §Warm-up and cosine decay).
    """
    if step < warmup:
        return base_lr * step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                            min_lr: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that follows :func:`warmup_cosine` for every parameter group's base lr."""
    def factor(base_lr: float) -> Callable[[int], float]:
        floor = min_lr / base_lr if base_lr > 0 else 0.0
        return lambda step: warmup_cosine(step, total_steps, warmup_steps, 1.0, floor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(g["lr"]) for g in optimizer.param_groups])


def default_optimizer(model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.01) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on matrices only, not on biases and norms.

    Decoupled weight decay (notebook 06, §Weight decay) shrinks weights; biases and LayerNorm
    gains are excluded as is standard.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


# --------------------------------------------------------------------------- data

def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for ``(seed, epoch)``."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]) >> 1


def seed_loader(loader: Any, seed: int, epoch: int) -> None:
    """Make the batch order of ``epoch`` a function of ``(seed, epoch)`` only (see module docstring).

    Gives the ``DataLoader`` (and its sampler) a freshly seeded ``torch.Generator``, and calls
    ``set_epoch`` where a sampler has one (``DistributedSampler``).
    """
    gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    if hasattr(loader, "generator"):
        loader.generator = gen  # also seeds the workers' base seed
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        if sampler is not None and hasattr(sampler, "generator"):
            sampler.generator = gen
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def to_device(batch: Any, dev: torch.device) -> Any:
    """Move a batch (tensor, dict, list, tuple, ``BatchEncoding``) to ``dev``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, dev) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        items = [to_device(v, dev) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
    if callable(getattr(batch, "to", None)):
        return batch.to(dev)
    return batch


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    values = batch.values() if hasattr(batch, "values") else batch if isinstance(batch, (list, tuple)) else []
    for v in values:
        size = _batch_size(v)
        if size is not None:
            return size
    return None


# --------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states as ``weights_only``-loadable plain types."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(py_state), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints

def _atomic_write(path: Path, write: Callable[[Path], None]) -> dict[str, Any]:
    """``write(tmp)``, fsync, rename onto ``path``; returns the manifest entry for the file."""
    with atomic_path(path, fsync=True) as tmp:
        write(tmp)
        entry = {"name": path.name, "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}
    return entry


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Manifests in ``checkpoint_dir``, newest (highest step) first."""
    return sorted(Path(checkpoint_dir).glob("step-*.json"), reverse=True)


def save_checkpoint(checkpoint_dir: str | os.PathLike, model: torch.nn.Module, state: dict[str, Any],
                    best_state: dict[str, torch.Tensor] | None = None, keep_last: int = 3) -> Path:
    """Write one checkpoint atomically (weights, ``state`` as .pt, best weights, manifest last).

    ``state`` must hold ``history`` (a :class:`History` as dict) plus anything
    ``torch.load(weights_only=True)`` accepts. Keeps the newest ``keep_last`` checkpoints.
    Returns the manifest path (notebook 07, §Checkpoint and resume).
    """
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    hist = state["history"]
    stem = f"step-{hist['step']:08d}"
    manifest = directory / f"{stem}.json"
    manifest.unlink(missing_ok=True)  # an older checkpoint of the same step is now invalid
    files = {"model": _atomic_write(directory / f"{stem}.safetensors", lambda p: save_model(model, str(p))),
             "state": _atomic_write(directory / f"{stem}.pt", lambda p: torch.save(state, p))}
    if best_state is not None:
        best = {k: v.contiguous() for k, v in best_state.items()}
        files["best"] = _atomic_write(directory / f"{stem}.best.safetensors", lambda p: save_file(best, str(p)))
    info = {"format": CKPT_FORMAT, "step": hist["step"], "epoch": hist["epoch"], "batch": hist["batch"],
            "files": files}
    _atomic_write(manifest, lambda p: p.write_text(json.dumps(info, indent=1)))
    for old in list_checkpoints(directory)[max(1, keep_last):]:
        _remove_checkpoint(old)
    return manifest


def _remove_checkpoint(manifest: Path) -> None:
    manifest.unlink(missing_ok=True)
    stem = manifest.name[: -len(".json")]
    for suffix in (".safetensors", ".pt", ".best.safetensors"):
        (manifest.parent / f"{stem}{suffix}").unlink(missing_ok=True)


def verify_checkpoint(manifest: str | os.PathLike) -> dict[str, Any]:
    """Check sha256 of every file and load the .pt with ``weights_only=True``.

    Returns ``{"manifest", "model_path", "state", "best_state"}``; raises ``ValueError`` (or a
    load error) when anything is missing, damaged or truncated.
    """
    manifest = Path(manifest)
    info = json.loads(manifest.read_text())
    if info.get("format") != CKPT_FORMAT:
        raise ValueError(f"unknown checkpoint format {info.get('format')!r}")
    paths = {}
    for role, entry in info["files"].items():
        path = manifest.parent / entry["name"]
        if not path.is_file():
            raise ValueError(f"{entry['name']} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"sha256 mismatch for {entry['name']} (damaged or truncated)")
        paths[role] = path
    state = torch.load(paths["state"], map_location="cpu", weights_only=True)
    best = load_file(str(paths["best"])) if "best" in paths else None
    return {"manifest": info, "model_path": paths["model"], "state": state, "best_state": best}


def load_latest_checkpoint(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The newest checkpoint that verifies, warning about each damaged one skipped; None if none."""
    manifests = list_checkpoints(checkpoint_dir) if Path(checkpoint_dir).is_dir() else []
    for manifest in manifests:
        try:
            return verify_checkpoint(manifest)
        except Exception as err:  # damaged manifest, sha mismatch, unreadable .pt ...
            warnings.warn(f"checkpoint {manifest.name} is unusable ({err}); trying the previous one",
                          CheckpointWarning, stacklevel=2)
    if manifests:
        warnings.warn(f"no usable checkpoint in {checkpoint_dir}; starting from scratch",
                      CheckpointWarning, stacklevel=2)
    return None


# --------------------------------------------------------------------------- evaluation

def _amp_context(dev: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=dev.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: torch.nn.Module, loss_fn: LossFn, val_loader: Any, eval_fn: EvalFn | None = None,
             dev: torch.device | None = None, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Metrics on the validation set: ``eval_fn(model, val_loader)``, or the mean ``val_loss``.

    Runs in ``model.eval()`` mode without gradients and puts the model back in training mode.
    ``eval_fn`` gets the loader as is; move batches with :func:`to_device` there.
    """
    dev = dev or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with _amp_context(dev, amp_dtype):
            if eval_fn is not None:
                metrics = eval_fn(model, val_loader)
            else:
                losses = [float(loss_fn(model, to_device(b, dev))) for b in val_loader]
                metrics = {"val_loss": sum(losses) / max(1, len(losses))}
    finally:
        model.train(was_training)
    return {k: float(v) for k, v in metrics.items()}


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A deep copy of the weights. ``best = model`` or ``model.state_dict()`` alone would only
    keep a reference that training keeps changing (the MedMNIST script's bug; notebook 07,
    §Early stopping)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- fit

def _oom_error(err: BaseException, what: str, step: int, batch: Any, loader: Any, accumulate: int,
               dev: torch.device) -> TrainingOutOfMemoryError:
    size = _batch_size(batch) or getattr(loader, "batch_size", None) or 0
    half = max(1, size // 2)
    msg = (f"the GPU ran out of memory during {what} at step {step} with batch size {size} "
           f"(accumulate={accumulate}). Halve the batch size (batch_size={half}) and use gradient "
           f"accumulation fit(..., accumulate={2 * accumulate}) to keep the same effective batch of "
           f"{size * accumulate}; mixed precision (amp=True), shorter inputs or freezing more layers "
           f"also help. Memory now: {runtime.memory_report(dev)}")
    return TrainingOutOfMemoryError(msg)


def _free_memory(optimizer: torch.optim.Optimizer, dev: torch.device, err: BaseException) -> None:
    """Drop gradients and the failed step's activations (held by the traceback's frames)."""
    traceback.clear_frames(err.__traceback__)
    optimizer.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _optimizer_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list[torch.Tensor],
                    clip: float | None) -> float:
    """Unscale (fp16), clip, step, update the scaler, zero the gradients; returns the pre-clip norm."""
    scaler.unscale_(optimizer)
    if clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    scaler.step(optimizer)  # with fp16, skipped when the gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def _scheduler_step(scheduler: Any, scaler: torch.amp.GradScaler) -> None:
    """Advance the schedule once per step, also when fp16's scaler skipped the optimizer step."""
    if not scaler.is_enabled():
        scheduler.step()
        return
    with warnings.catch_warnings():  # PyTorch's "scheduler.step() before optimizer.step()" false alarm
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        scheduler.step()


def _checkpoint_state(hist: History, optimizer: Any, scheduler: Any, scaler: Any, seed: int | None) -> dict[str, Any]:
    return {"history": asdict(hist), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "seed": seed}


def _resume(checkpoint_dir: str | os.PathLike, model: torch.nn.Module, optimizer: Any, scheduler: Any,
            scaler: Any) -> tuple[History, dict[str, Any] | None, dict[str, torch.Tensor] | None]:
    """Load the newest good checkpoint into the objects; returns (history, rng state, best weights)."""
    ckpt = load_latest_checkpoint(checkpoint_dir)
    if ckpt is None:
        return History(), None, None
    state = ckpt["state"]
    load_model(model, str(ckpt["model_path"]))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    dev = next(model.parameters()).device
    best = {k: v.to(dev) for k, v in ckpt["best_state"].items()} if ckpt["best_state"] is not None else None
    print(f"resumed from {ckpt['model_path'].stem} (step {state['history']['step']})")
    return History(**state["history"]), state["rng"], best


def fit(model: torch.nn.Module, loss_fn: LossFn, train_loader: Any, val_loader: Any = None, *,
        epochs: int = 1, max_steps: int | None = None,
        optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
        lr: float = 1e-3, weight_decay: float = 0.01, warmup_steps: int | None = None, min_lr: float = 0.0,
        accumulate: int = 1, clip_grad_norm: float | None = 1.0, amp: bool = True,
        eval_fn: EvalFn | None = None, eval_every: int | None = None,
        monitor: str | None = None, mode: str = "max", patience: int | None = None,
        min_delta: float = 0.0, restore_best: bool = True,
        checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        keep_last: int = 3, resume: bool = False, seed: int | None = 0,
        device: torch.device | str | None = None, progress: bool = True,
        callback: Callback | None = None) -> History:
    """Train ``model`` by minimising ``loss_fn(model, batch)``; the fine-tuning recipe of notebook 07.

    - optimizer: AdamW over trainable parameters by default (:func:`default_optimizer`);
      scheduler: linear warm-up (default 10% of steps) + cosine decay to ``min_lr``, stepped once
      per optimizer step (:func:`warmup_cosine_scheduler`).
    - ``accumulate=k``: one optimizer step per ``k`` micro-batches, each loss divided by ``k``
      (by fewer for a short last group), so the gradient equals the big batch's.
    - ``clip_grad_norm``: clip the global gradient norm (the pre-clip norm goes to history).
    - ``amp``: ``torch.autocast`` with :func:`runtime.autocast_dtype` (bf16, or fp16 with a
      ``GradScaler``; nothing on CPU).
    - evaluation every ``eval_every`` optimizer steps (and after the last one), or at the end of
      each epoch when ``eval_every`` is None: :func:`evaluate` with ``eval_fn``.
    - early stopping on ``monitor`` (a metric name, ``mode`` "max"/"min"): a deep copy of the best
      weights is kept and restored at the end (``restore_best``); ``patience`` evaluations
      without improvement stop the run.
    - checkpoints into ``checkpoint_dir`` every ``checkpoint_every`` steps and at the end; with
      ``resume=True`` the run continues exactly from the newest good checkpoint (see the module
      docstring). ``seed`` fixes each epoch's batch order (None leaves the loader alone, and
      resume is then no longer exact).
    - ``callback(event, info)`` with event "step", "eval" or "end" (the live dashboard).

    Returns the :class:`History`. A CUDA out-of-memory error becomes a
    :class:`TrainingOutOfMemoryError` saying what to change.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    if monitor is not None and val_loader is None:
        raise ValueError(f"monitor={monitor!r} needs a val_loader to evaluate on")
    dev = torch.device(device) if device is not None else runtime.device()
    model.to(dev)
    amp_dtype = runtime.autocast_dtype(dev) if amp else None
    n_batches = len(train_loader)
    steps_per_epoch = math.ceil(n_batches / accumulate)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    optimizer = optimizer or default_optimizer(model, lr, weight_decay)
    if scheduler is None:
        warmup = round(0.1 * total) if warmup_steps is None else warmup_steps
        scheduler = warmup_cosine_scheduler(optimizer, total, warmup, min_lr)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)
    params = [p for group in optimizer.param_groups for p in group["params"]]

    hist, pending_rng, best_state = History(), None, None
    if resume and checkpoint_dir is not None:
        hist, pending_rng, best_state = _resume(checkpoint_dir, model, optimizer, scheduler, scaler)
    last_saved = hist.step if pending_rng is not None else None

    def save() -> None:
        nonlocal last_saved
        state = _checkpoint_state(hist, optimizer, scheduler, scaler, seed)
        save_checkpoint(checkpoint_dir, model, state, best_state, keep_last)
        last_saved = hist.step

    def run_eval() -> None:
        nonlocal best_state
        try:
            metrics = evaluate(model, loss_fn, val_loader, eval_fn, dev, amp_dtype)
        except torch.OutOfMemoryError as err:
            _free_memory(optimizer, dev, err)
            raise _oom_error(err, "evaluation", hist.step, None, val_loader, 1, dev) from err
        improved = False
        if monitor is not None:
            if monitor not in metrics:
                raise ValueError(f"monitor={monitor!r} is not among the eval metrics {sorted(metrics)}")
            improved = _improved(metrics[monitor], hist.best_metric, mode, min_delta)
            if improved:
                hist.best_metric, hist.best_step, hist.bad_evals = metrics[monitor], hist.step, 0
                best_state = _snapshot(model)
            else:
                hist.bad_evals += 1
                hist.stopped_early = patience is not None and hist.bad_evals >= patience
        hist.evals.append({"step": hist.step, "epoch": hist.epoch, **metrics})
        bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}", **{k: f"{v:.4f}" for k, v in metrics.items()})
        if callback:
            callback("eval", {"step": hist.step, "epoch": hist.epoch, **metrics, "improved": improved,
                              "best_metric": hist.best_metric, "stopped_early": hist.stopped_early})

    model.train()
    bar = tqdm(total=total, initial=hist.step, desc="train", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(hist.epoch, epochs):
            if hist.stopped_early or hist.step >= total:
                break
            if seed is not None:
                seed_loader(train_loader, seed, epoch)
            skip = hist.batch if epoch == hist.epoch else 0
            # resumed: restore the RNGs at the moment the killed run fetched its next batch
            if pending_rng is not None and skip == 0:
                set_rng_state(pending_rng)
                pending_rng = None
            batches = iter(train_loader)
            for _ in range(skip):  # resume mid-epoch: same order, skip what was trained on
                next(batches)
            if pending_rng is not None:
                set_rng_state(pending_rng)
                pending_rng = None
            step_loss = torch.zeros((), device=dev)
            for i, batch in enumerate(batches, start=skip):
                group_size = min(accumulate, n_batches - (i // accumulate) * accumulate)
                try:
                    batch = to_device(batch, dev)
                    with _amp_context(dev, amp_dtype):
                        loss = loss_fn(model, batch) / group_size
                    scaler.scale(loss).backward()
                    step_loss += loss.detach().float()
                    if (i + 1) % accumulate and i + 1 != n_batches:
                        continue
                    norm = _optimizer_step(optimizer, scaler, params, clip_grad_norm)
                except torch.OutOfMemoryError as err:
                    _free_memory(optimizer, dev, err)
                    raise _oom_error(err, "training", hist.step + 1, batch, train_loader, accumulate, dev) from err
                hist.lr.append(float(optimizer.param_groups[0]["lr"]))
                _scheduler_step(scheduler, scaler)
                hist.step += 1
                hist.epoch, hist.batch = epoch, i + 1
                hist.train_loss.append(float(step_loss))
                hist.grad_norm.append(norm)
                step_loss = torch.zeros((), device=dev)
                bar.update(1)
                bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}", lr=f"{hist.lr[-1]:.2e}")
                if callback:
                    callback("step", {"step": hist.step, "epoch": epoch, "loss": hist.train_loss[-1],
                                      "lr": hist.lr[-1], "grad_norm": hist.grad_norm[-1], "total_steps": total})
                epoch_end = i + 1 == n_batches
                last = hist.step >= total
                due = last or (epoch_end if eval_every is None else hist.step % eval_every == 0)
                if val_loader is not None and due:
                    run_eval()
                if epoch_end:
                    hist.epoch, hist.batch = epoch + 1, 0
                if checkpoint_dir is not None and checkpoint_every and hist.step % checkpoint_every == 0:
                    save()
                if hist.stopped_early or last:
                    break
        if checkpoint_dir is not None and last_saved != hist.step:
            save()
    finally:
        bar.close()
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
    if callback:
        callback("end", {"step": hist.step, "epoch": hist.epoch, "best_metric": hist.best_metric,
                         "best_step": hist.best_step, "stopped_early": hist.stopped_early})
    return hist


def overfit_one_batch(model: torch.nn.Module, loss_fn: LossFn, batch: Any, steps: int = 100,
                      lr: float = 1e-2, device: torch.device | str | None = None) -> list[float]:
    """The classic sanity check: train on one batch until the loss is ~0 (notebook 07, §Overfit one batch).

    If the loss does not fall close to zero, the bug is in the model, the loss or the labels,
    not in the amount of data. Adam, constant ``lr``, no regularisation; returns the losses.
    """
    dev = torch.device(device) if device is not None else runtime.device()
    model.to(dev).train()
    batch = to_device(batch, dev)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
