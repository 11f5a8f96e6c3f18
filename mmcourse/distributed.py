"""Data-parallel training across processes (README, "Scaling out").

``torchrun --nproc_per_node N script.py`` starts N copies of the same program and tells each
its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and where rank 0 listens). :func:`mmcourse.train.fit`
reads them through this module and, when ``WORLD_SIZE > 1``, runs DistributedDataParallel:

* every process holds the whole model and a different shard of each epoch
  (:func:`shard_loader`: a ``DistributedSampler`` whose order depends only on the seed and the
  epoch);
* backward all-reduces (averages) the gradients, so each optimizer step sees the gradient of the
  global batch, per-rank batch × world size, and the weights stay identical everywhere;
* rank 0 evaluates, prints, draws, writes checkpoints and results, and broadcasts the evaluation
  metrics (:func:`broadcast`), so every rank takes the same early-stopping decision.

On CUDA the backend is NCCL, on CPU gloo. Nothing changes in the code that calls ``fit``.
"""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when the program was started alone)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def init_from_env(device: torch.device | None = None, timeout_s: float = 600) -> bool:
    """Join the process group torchrun described in the environment, once; True when distributed.

    NCCL when the device is CUDA, gloo otherwise. Nothing happens when ``WORLD_SIZE`` is 1.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    if env_world_size() <= 1:
        return False
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    """The process that logs, draws, checkpoints and writes results (rank 0)."""
    return rank() == 0


def device_for_rank() -> torch.device:
    """``cuda:LOCAL_RANK`` on a GPU machine, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


class ShardSampler(Sampler):
    """Every ``world``-th index of another sampler's order, starting at ``rank``: the shard of a
    sampler that is not a plain shuffle (``WeightedRandomSampler``: notebook 09's balanced sampler).

    Every rank draws the whole order from the same seeded generator (:func:`mmcourse.train.seed_loader`
    sets ``generator``, which this sampler passes on), pads it by repeating its start to a multiple
    of ``world`` as ``DistributedSampler`` does, and keeps its own indices. Consecutive per-rank
    batches of size B therefore hold, together, the same B × world examples as one process's batch.
    """

    def __init__(self, sampler: Sampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    @property
    def generator(self) -> torch.Generator | None:
        return getattr(self.sampler, "generator", None)

    @generator.setter
    def generator(self, gen: torch.Generator | None) -> None:
        self.sampler.generator = gen

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.world)

    def __iter__(self):
        order = list(self.sampler)
        order += order[:len(self) * self.world - len(order)]
        return iter(order[self.rank::self.world])


def shard_loader(loader: Any, seed: int | None, force: bool = False) -> Any:
    """``loader`` rebuilt so that each rank reads its own shard.

    A plain shuffled or sequential loader gets a ``DistributedSampler``; any other sampler (e.g.
    a ``WeightedRandomSampler``) is sharded by :class:`ShardSampler`. A loader that already has a
    ``DistributedSampler``, a batch sampler of its own, or that is not a ``DataLoader`` is returned
    as it is. The shard order depends only on ``seed`` and the epoch (set by
    :func:`mmcourse.train.seed_loader`). ``force`` shards for one process too: a run resumed from a
    multi-process checkpoint keeps the global order it started with.
    """
    if not (active() or force) or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.sampler, (DistributedSampler, ShardSampler)) or loader.batch_size is None:
        return loader
    if isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
        sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                     shuffle=isinstance(loader.sampler, RandomSampler), seed=seed or 0,
                                     drop_last=loader.drop_last)
    else:
        sampler = ShardSampler(loader.sampler, rank(), world_size())
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      worker_init_fn=loader.worker_init_fn,
                      persistent_workers=loader.persistent_workers if loader.num_workers else False)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The average of ``value`` over the ranks (itself when not distributed)."""
    if not active():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / world_size()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (a picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


class LossModule(torch.nn.Module):
    """``loss_fn(model, batch)`` as a module, so DistributedDataParallel can wrap the whole
    forward pass however ``loss_fn`` uses the model (attributes, several calls)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Any):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)
