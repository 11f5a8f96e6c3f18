"""One training run of ``fit`` for tests/test_distributed.py, started alone or by torchrun.

    python tests/ddp_worker.py OUT --batch B [--epochs E] [--patience P] [--ckpt DIR]
        [--resume] [--die-at STEP] [--world1-sampler] [--weighted]

Each process writes ``OUT/rank{R}.json`` (its history, and the weights of a side model each process
trains alone after the main run with ``fit(..., distributed=False)``), rank 0 also ``OUT/weights.pt``.
The model's initial weights differ per rank on purpose: DDP must start every rank from rank 0's.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from mmcourse import distributed
from mmcourse.train import fit


def data(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] - 0.3 * x[:, 2] > 0).long()
    return TensorDataset(x, y)


def loss_fn(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--die-at", type=int, default=None)
    p.add_argument("--world1-sampler", action="store_true",
                   help="one process reading in the global order of a sharded run")
    p.add_argument("--weighted", action="store_true", help="a WeightedRandomSampler (notebook 09's balanced sampler)")
    a = p.parse_args()
    ds = data()
    if a.weighted:
        w = torch.linspace(0.2, 1.0, len(ds), dtype=torch.double)
        loader = DataLoader(ds, batch_size=a.batch, sampler=WeightedRandomSampler(w, len(ds), replacement=True))
    elif a.world1_sampler:
        loader = DataLoader(ds, batch_size=a.batch,
                            sampler=DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0))
    else:
        loader = DataLoader(ds, batch_size=a.batch, shuffle=True)
    val = DataLoader(TensorDataset(*data(32).tensors), batch_size=32)
    torch.manual_seed(1 + int(os.environ.get("RANK", "0")))
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))

    def die(event, info):  # a run killed in the middle of an epoch (rank 0 only sees callbacks)
        if event == "step" and a.die_at is not None and info["step"] == a.die_at:
            os._exit(17)

    def eval_fn(m, loader):
        x, y = next(iter(loader))
        return {"val_loss": float(loss_fn(m, (x, y)))}

    hist = fit(model, loss_fn, loader, val, epochs=a.epochs, lr=1e-2, amp=False, progress=False,
               device="cpu", seed=0, eval_every=2, eval_fn=eval_fn,
               monitor="val_loss" if a.patience else None, mode="max", patience=a.patience,
               checkpoint_dir=a.ckpt, checkpoint_every=2 if a.ckpt else None, resume=a.resume,
               callback=die)
    # a side model that each process trains alone, inside the live process group
    torch.manual_seed(5)
    side = nn.Linear(6, 2)
    fit(side, loss_fn, DataLoader(ds, batch_size=8, shuffle=True), epochs=1, lr=1e-2, amp=False, progress=False,
        device="cpu", seed=0, distributed=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    info = asdict(hist) | {"world_size": distributed.world_size(), "shard_batches": len(loader)
                           if not distributed.active() else None, "side": side.weight.flatten().tolist()}
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(info))
    if distributed.is_main():
        torch.save(model.state_dict(), out / "weights.pt")


if __name__ == "__main__":
    main()
