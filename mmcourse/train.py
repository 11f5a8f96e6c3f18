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

The settings of a run live in one :class:`FitConfig`; ``fit`` itself is a short loop over
:class:`_Run`'s steps (data order, training step, evaluation, checkpoint), and the checkpoint
files (format, sha256 manifest, atomic writes, RNG states) are :mod:`mmcourse.checkpoint`'s.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import os
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from mmcourse import distributed, runtime
from mmcourse.checkpoint import (load_latest_checkpoint, restore_training_state, save_checkpoint, set_rng_state,
                                 training_state)
# moved to mmcourse.checkpoint; ``from mmcourse.train import CheckpointWarning, ...`` keeps working
from mmcourse.checkpoint import CKPT_FORMAT, CheckpointWarning, list_checkpoints  # noqa: F401
from mmcourse.checkpoint import rng_state, verify_checkpoint  # noqa: F401

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
EvalFn = Callable[[torch.nn.Module, Any], dict[str, float]]
Callback = Callable[[str, dict[str, Any]], None]


class TrainingOutOfMemoryError(RuntimeError):
    """GPU out of memory during training, with advice on what to change (notebook 07, §Pitfalls)."""


@dataclass
class History:
    """What ``fit`` returns, and what a checkpoint stores to resume (notebook 07, §Experiment tracking).

    ``train_loss[i]``, ``lr[i]`` and ``grad_norm[i]`` belong to optimizer step ``i + 1``;
    ``evals`` holds one dict per evaluation (``step``, ``epoch`` and the metrics).
    ``epoch`` / ``batch`` is the data-loader position: micro-batches of ``epoch`` already used.
    ``seconds`` is the wall time of the run so far, summed over every process that worked on it
    (a resumed run continues the count of its checkpoint); it is left out of ``==``, since no two
    runs take the same time.
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
    seconds: float = field(default=0.0, compare=False)


# --------------------------------------------------------------------------- configuration

@dataclass
class FitConfig:
    """Every setting of one ``fit`` run in one place (notebook 07_finetuning_recipe, §Hyper-parameters).

    ``fit(model, loss_fn, train_dl, val_dl, config=FitConfig(epochs=3, lr=3e-4))`` is the same run
    as ``fit(model, loss_fn, train_dl, val_dl, epochs=3, lr=3e-4)``; keyword arguments given
    together with ``config`` override its fields. Plain values only, so a config can be printed,
    logged and compared; the objects a run calls or steps (``optimizer``, ``scheduler``,
    ``eval_fn``, ``callback``) are arguments of :func:`fit` itself.
    """

    # length: ``epochs`` passes over the data, at most ``max_steps`` optimizer steps
    epochs: int = 1
    max_steps: int | None = None
    # default optimizer (AdamW, :func:`default_optimizer`) and schedule (:func:`warmup_cosine_scheduler`):
    # linear warm-up over ``warmup_steps`` (None: 10% of the steps), cosine decay to ``min_lr``
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int | None = None
    min_lr: float = 0.0
    # the step: one optimizer step per ``accumulate`` micro-batches (each loss divided by the group
    # size, so the gradient equals the big batch's); clip the global gradient norm (the pre-clip
    # norm goes to the history); ``amp``: autocast with :func:`runtime.autocast_dtype` (bf16, or
    # fp16 with a ``GradScaler``; nothing on CPU)
    accumulate: int = 1
    clip_grad_norm: float | None = 1.0
    amp: bool = True
    # speed levers, each measured in bench/medical.py (README "Performance"): ``channels_last``
    # stores the model's 4-D weights and the batch's 4-D float tensors as NHWC (CNNs);
    # ``compile`` runs the forward and loss through ``torch.compile``; ``fused`` AdamW kernels
    # for the default optimizer (None: on CUDA, where they measure faster)
    channels_last: bool = False
    compile: bool = False
    fused: bool | None = None
    # under torchrun: join the process group and train one model across the processes (DDP);
    # False: this process trains alone, as if started without torchrun (small side models that
    # every rank trains the same way; give each rank its own checkpoint_dir, or none)
    distributed: bool = True
    # evaluation every ``eval_every`` optimizer steps and after the last one (None: at each epoch's end)
    eval_every: int | None = None
    # early stopping on the metric ``monitor`` ("max"/"min" is better): the best weights are
    # deep-copied and loaded back at the end (``restore_best``); ``patience`` evaluations without
    # an improvement of more than ``min_delta`` stop the run
    monitor: str | None = None
    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    # checkpoints into ``checkpoint_dir`` every ``checkpoint_every`` steps (or "epoch": at the end of
    # every epoch, however many steps an epoch has on this many processes) and at the end, the newest
    # ``keep_last`` kept; ``resume``: continue exactly from the newest good one. ``seed`` fixes each
    # epoch's batch order (None leaves the loader alone, and resume is then no longer exact)
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int | str | None = None
    keep_last: int = 3
    resume: bool = False
    seed: int | None = 0
    # where it runs (None: :func:`runtime.device`) and whether a tqdm bar shows
    device: torch.device | str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {self.mode!r}")
        if isinstance(self.checkpoint_every, str) and self.checkpoint_every != "epoch":
            raise ValueError(f"checkpoint_every must be a number of steps or 'epoch', not {self.checkpoint_every!r}")


def _fit_config(config: FitConfig | None, settings: dict[str, Any]) -> FitConfig:
    """``config`` (default ``FitConfig()``) with ``settings`` replacing its fields; TypeError on unknown names."""
    names = [f.name for f in fields(FitConfig)]
    for key in settings:
        if key not in names:
            close = difflib.get_close_matches(key, [*names, "optimizer", "scheduler", "eval_fn", "callback"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; FitConfig fields: {', '.join(names)}"
            raise TypeError(f"fit() got an unexpected keyword argument {key!r}{hint}")
    if config is not None and not isinstance(config, FitConfig):
        raise TypeError(f"config must be a FitConfig, not {type(config).__name__}")
    return replace(config or FitConfig(), **settings)


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


def default_optimizer(model: torch.nn.Module, lr: float = 1e-3, weight_decay: float = 0.01,
                      fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over trainable parameters; weight decay on matrices only, not on biases and norms.

    Decoupled weight decay (notebook 06, §Weight decay) shrinks weights; biases and LayerNorm
    gains are excluded as is standard. ``fused``: one kernel for the whole update (None: when
    every parameter is on CUDA; bench/medical.py measures it).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    if fused is None:
        fused = all(p.device.type == "cuda" for p in params)
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused or None)


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


def channels_last(batch: Any) -> Any:
    """The batch with its 4-D floating-point tensors (images) in NHWC memory order (``channels_last``)."""
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) \
            if batch.ndim == 4 and batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: channels_last(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        items = [channels_last(v) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else type(batch)(items)
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


class _Run:
    """One ``fit`` call: its objects, and the steps of its loop as short methods.

    The seams a distributed (DDP) version extends: :meth:`epoch_batches` (the data order; a
    ``DistributedSampler`` gets ``set_epoch`` from :func:`seed_loader`), :meth:`train_step`
    (forward, backward, optimizer step), :meth:`validate` (the metrics) and :meth:`save` /
    :meth:`resume` (checkpoint I/O, :mod:`mmcourse.checkpoint`).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, train_loader: Any, val_loader: Any,
                 cfg: FitConfig, optimizer: torch.optim.Optimizer | None, scheduler: Any,
                 eval_fn: EvalFn | None, callback: Callback | None):
        self.model, self.loss_fn, self.cfg = model, loss_fn, cfg
        self.train_loader, self.val_loader, self.eval_fn = train_loader, val_loader, eval_fn
        self.dev = torch.device(cfg.device) if cfg.device is not None else \
            distributed.device_for_rank() if distributed.env_world_size() > 1 else runtime.device()
        # under torchrun (WORLD_SIZE > 1): join the group; rank 0 alone logs, draws and saves
        self.distributed = cfg.distributed and distributed.init_from_env(self.dev)
        self.main = distributed.is_main() or not self.distributed
        self.world = distributed.world_size() if self.distributed else 1
        self.callback = callback if self.main else None
        if self.distributed:  # each rank its shard of every epoch, in one global order
            self.train_loader = distributed.shard_loader(train_loader, cfg.seed)
        model.to(self.dev)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.amp_dtype = runtime.autocast_dtype(self.dev) if cfg.amp else None
        self.n_batches = len(self.train_loader)
        steps = cfg.epochs * math.ceil(self.n_batches / cfg.accumulate)
        self.total = steps if cfg.max_steps is None else min(cfg.max_steps, steps)
        self.optimizer = optimizer or default_optimizer(model, cfg.lr, cfg.weight_decay, cfg.fused)
        if scheduler is None:
            warmup = round(0.1 * self.total) if cfg.warmup_steps is None else cfg.warmup_steps
            scheduler = warmup_cosine_scheduler(self.optimizer, self.total, warmup, cfg.min_lr)
        self.scheduler = scheduler
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.amp_dtype == torch.float16)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.hist, self.pending_rng, self.best_state = History(), None, None
        self.ckpt_world = 1
        if cfg.resume and cfg.checkpoint_dir is not None:
            self.resume()
        if not self.distributed and self.ckpt_world > 1:  # keep the global order of the sharded run
            self.train_loader = distributed.shard_loader(train_loader, cfg.seed, force=True)
        self.forward = distributed.LossModule(model, loss_fn)
        if self.distributed:  # averages the gradients across ranks during backward
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.forward, device_ids=[self.dev.index] if self.dev.type == "cuda" else None,
                find_unused_parameters=True)
        if cfg.compile:  # compiled on the first batch; the model's own weights and state_dict stay as they are
            self.forward = torch.compile(self.forward)
        self.clock = time.perf_counter() - self.hist.seconds  # seconds counts on from the checkpoint
        self.last_saved = self.hist.step if self.pending_rng is not None else None
        self.step_loss = torch.zeros((), device=self.dev)
        model.train()
        self.bar = tqdm(total=self.total, initial=self.hist.step, desc="train",
                        disable=not (cfg.progress and self.main), dynamic_ncols=True)

    @property
    def finished(self) -> bool:
        return self.hist.stopped_early or self.hist.step >= self.total

    def train_epoch(self, epoch: int) -> None:
        """The (rest of the) epoch: steps, evaluations and checkpoints, until it ends or the run does."""
        self.step_loss = torch.zeros((), device=self.dev)
        for i, batch in self.epoch_batches(epoch):
            norm = self.train_step(i, batch)
            if norm is None:  # inside an accumulation group: no optimizer step yet
                continue
            self.record_step(epoch, i, norm)
            self.after_step(epoch, i)
            if self.finished:
                break

    def epoch_batches(self, epoch: int) -> Iterator[tuple[int, Any]]:
        """``(index, micro-batch)`` of ``epoch`` in its seeded order, resumed where the history says."""
        if self.cfg.seed is not None:
            seed_loader(self.train_loader, self.cfg.seed, epoch)
        skip = self.hist.batch if epoch == self.hist.epoch else 0
        # resumed: restore the RNGs at the moment the killed run fetched its next batch
        if skip == 0:
            self._restore_rng()
        batches = iter(self.train_loader)
        for _ in range(skip):  # resume mid-epoch: same order, skip what was trained on
            next(batches)
        self._restore_rng()
        return enumerate(batches, start=skip)

    def _restore_rng(self) -> None:
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def train_step(self, i: int, batch: Any) -> float | None:
        """Forward and backward micro-batch ``i``; after the last one of its accumulation group,
        the optimizer step. Returns the step's pre-clip gradient norm, or None (no step yet)."""
        accumulate = self.cfg.accumulate
        group_size = min(accumulate, self.n_batches - (i // accumulate) * accumulate)
        last = not ((i + 1) % accumulate and i + 1 != self.n_batches)  # of its accumulation group
        try:
            batch = to_device(batch, self.dev)
            if self.cfg.channels_last:
                batch = channels_last(batch)
            # DDP all-reduces the gradients in the backward of a group's last micro-batch only
            sync = contextlib.nullcontext() if last or not self.distributed else self.forward.no_sync()
            with sync:
                with _amp_context(self.dev, self.amp_dtype):
                    loss = self.forward(batch) / group_size
                self.scaler.scale(loss).backward()
            self.step_loss += loss.detach().float()
            if not last:
                return None
            return _optimizer_step(self.optimizer, self.scaler, self.params, self.cfg.clip_grad_norm)
        except torch.OutOfMemoryError as err:
            _free_memory(self.optimizer, self.dev, err)
            raise _oom_error(err, "training", self.hist.step + 1, batch, self.train_loader, accumulate,
                             self.dev) from err

    def record_step(self, epoch: int, i: int, norm: float) -> None:
        """After an optimizer step: advance the schedule, record it, show it, report "step"."""
        hist = self.hist
        hist.lr.append(float(self.optimizer.param_groups[0]["lr"]))
        _scheduler_step(self.scheduler, self.scaler)
        hist.step += 1
        hist.epoch, hist.batch = epoch, i + 1
        loss = distributed.mean(self.step_loss) if self.distributed else self.step_loss
        hist.train_loss.append(float(loss))  # the global batch's loss
        hist.grad_norm.append(norm)
        self.step_loss = torch.zeros((), device=self.dev)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}", lr=f"{hist.lr[-1]:.2e}")
        if self.callback:
            self.callback("step", {"step": hist.step, "epoch": epoch, "loss": hist.train_loss[-1],
                                   "lr": hist.lr[-1], "grad_norm": hist.grad_norm[-1], "total_steps": self.total})

    def after_step(self, epoch: int, i: int) -> None:
        """Evaluate when due, move the position to the next epoch at an epoch's end, checkpoint when due."""
        cfg, hist = self.cfg, self.hist
        epoch_end = i + 1 == self.n_batches
        due = hist.step >= self.total or (epoch_end if cfg.eval_every is None else hist.step % cfg.eval_every == 0)
        if self.val_loader is not None and due:
            self.validate()
        if epoch_end:
            hist.epoch, hist.batch = epoch + 1, 0
        every = cfg.checkpoint_every
        if cfg.checkpoint_dir is not None and (epoch_end if every == "epoch" else every and hist.step % every == 0):
            self.save()

    def validate(self) -> None:
        """:func:`evaluate`, early-stopping bookkeeping, record the metrics, report "eval"."""
        hist = self.hist
        metrics = None
        if self.main:  # rank 0 evaluates; every rank gets its metrics, so all stop together
            try:
                metrics = evaluate(self.model, self.loss_fn, self.val_loader, self.eval_fn, self.dev,
                                   self.amp_dtype)
            except torch.OutOfMemoryError as err:
                _free_memory(self.optimizer, self.dev, err)
                raise _oom_error(err, "evaluation", hist.step, None, self.val_loader, 1, self.dev) from err
        if self.distributed:
            metrics = distributed.broadcast(metrics)
        improved = self.track_best(metrics)
        hist.evals.append({"step": hist.step, "epoch": hist.epoch, **metrics})
        self.bar.set_postfix(loss=f"{hist.train_loss[-1]:.4f}", **{k: f"{v:.4f}" for k, v in metrics.items()})
        if self.callback:
            self.callback("eval", {"step": hist.step, "epoch": hist.epoch, **metrics, "improved": improved,
                                   "best_metric": hist.best_metric, "stopped_early": hist.stopped_early})

    def track_best(self, metrics: dict[str, float]) -> bool:
        """Early stopping on ``cfg.monitor``: snapshot the weights when it improved (returns True),
        else count a bad evaluation and stop after ``patience`` of them."""
        cfg, hist = self.cfg, self.hist
        if cfg.monitor is None:
            return False
        if cfg.monitor not in metrics:
            raise ValueError(f"monitor={cfg.monitor!r} is not among the eval metrics {sorted(metrics)}")
        if not _improved(metrics[cfg.monitor], hist.best_metric, cfg.mode, cfg.min_delta):
            hist.bad_evals += 1
            hist.stopped_early = cfg.patience is not None and hist.bad_evals >= cfg.patience
            return False
        hist.best_metric, hist.best_step, hist.bad_evals = metrics[cfg.monitor], hist.step, 0
        self.best_state = _snapshot(self.model)
        return True

    def save(self) -> None:
        """Checkpoint the run as it is now (:func:`mmcourse.checkpoint.save_checkpoint`)."""
        self.hist.seconds = time.perf_counter() - self.clock
        if self.main:  # one writer; the others wait until the files are complete
            state = training_state(asdict(self.hist), self.optimizer, self.scheduler, self.scaler, self.cfg.seed)
            state["world_size"] = self.world
            state["rank_batch_size"] = getattr(self.train_loader, "batch_size", None)
            save_checkpoint(self.cfg.checkpoint_dir, self.model, state, self.best_state, self.cfg.keep_last)
        if self.distributed:
            distributed.barrier()
        self.last_saved = self.hist.step

    def resume(self) -> None:
        """Load the newest good checkpoint, if any; its RNG states wait in ``pending_rng`` for the data."""
        ckpt = load_latest_checkpoint(self.cfg.checkpoint_dir)
        if ckpt is None:
            return
        state = restore_training_state(ckpt, self.model, self.optimizer, self.scheduler, self.scaler)
        dev = next(self.model.parameters()).device
        if ckpt["best_state"] is not None:
            self.best_state = {k: v.to(dev) for k, v in ckpt["best_state"].items()}
        self.ckpt_world = int(state.get("world_size", 1))
        self._check_global_batch(state)
        if self.main:
            print(f"resumed from {ckpt['model_path'].stem} (step {state['history']['step']}"
                  + (f", written by {self.ckpt_world} processes" if self.ckpt_world > 1 else "") + ")")
        self.hist, self.pending_rng = History(**state["history"]), state["rng"]

    def _check_global_batch(self, state: dict[str, Any]) -> None:
        """A checkpoint resumes on any number of processes if the global batch (per-rank batch ×
        processes) is the same: the position in the epoch is counted in global batches."""
        then, now = state.get("rank_batch_size"), getattr(self.train_loader, "batch_size", None)
        if then is None or now is None:
            return
        world = self.world
        if then * self.ckpt_world != now * world:
            raise ValueError(f"the checkpoint was written with a global batch of {then * self.ckpt_world} "
                             f"({self.ckpt_world} processes × {then}); this run has {world} × {now} = "
                             f"{world * now}. Use a per-process batch of {then * self.ckpt_world // world} "
                             "to resume it exactly")

    def finish(self) -> History:
        """Load the best weights back (``restore_best``), report "end", return the history."""
        hist = self.hist
        hist.seconds = time.perf_counter() - self.clock
        if self.cfg.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.callback:
            self.callback("end", {"step": hist.step, "epoch": hist.epoch, "best_metric": hist.best_metric,
                                  "best_step": hist.best_step, "stopped_early": hist.stopped_early})
        return hist


def fit(model: torch.nn.Module, loss_fn: LossFn, train_loader: Any, val_loader: Any = None, *,
        config: FitConfig | None = None, optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
        eval_fn: EvalFn | None = None, callback: Callback | None = None, **settings: Any) -> History:
    """Train ``model`` by minimising ``loss_fn(model, batch)``; the fine-tuning recipe of notebook 07.

    - ``config``: a :class:`FitConfig` (epochs, lr, accumulate, early stopping, checkpoints, ...);
      keyword arguments named like its fields build it or override it: ``fit(..., epochs=3)`` is
      ``fit(..., config=FitConfig(epochs=3))``. Any other keyword argument is a ``TypeError``.
    - ``optimizer``: AdamW over trainable parameters by default (:func:`default_optimizer`);
      ``scheduler``: linear warm-up + cosine decay (:func:`warmup_cosine_scheduler`), stepped
      once per optimizer step.
    - ``eval_fn(model, val_loader)`` returns the metrics (default: the mean ``val_loss``; see
      :func:`evaluate`).
    - ``callback(event, info)`` with event "step", "eval" or "end" (the live dashboard).

    Returns the :class:`History`. A CUDA out-of-memory error becomes a
    :class:`TrainingOutOfMemoryError` saying what to change.
    """
    cfg = _fit_config(config, settings)
    if cfg.monitor is not None and val_loader is None:
        raise ValueError(f"monitor={cfg.monitor!r} needs a val_loader to evaluate on")
    run = _Run(model, loss_fn, train_loader, val_loader, cfg, optimizer, scheduler, eval_fn, callback)
    try:
        for epoch in range(run.hist.epoch, cfg.epochs):
            if run.finished:
                break
            run.train_epoch(epoch)
        if cfg.checkpoint_dir is not None and run.last_saved != run.hist.step:
            run.save()
    finally:
        run.bar.close()
    return run.finish()


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
