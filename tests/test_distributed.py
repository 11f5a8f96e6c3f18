"""``fit`` under torchrun (README, "Scaling out"): 2 CPU processes with gloo, started by torchrun.

The runs are tests/ddp_worker.py: 96 examples, a small MLP, AdamW, evaluation every 2 steps.
Two processes with a per-rank batch of 8 must reach the weights of one process with a batch of
16 reading the same global order; early stopping must stop both ranks on the same step; and a
2-process run killed in the middle of an epoch must resume on 1 process from its checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
WORKER = str(Path(__file__).resolve().parent / "ddp_worker.py")
TIMEOUT = 240


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                             "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="",
               no_proxy="*", NO_PROXY="*")
    return env


def alone(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, WORKER, str(out), *args], env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def torchrun(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", WORKER, str(out), *args], env=_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights.pt", weights_only=True)


def _hist(out: Path, rank: int = 0) -> dict:
    return json.loads((out / f"rank{rank}.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: 1 process, batch 16, the global order of a sharded run."""
    out = tmp_path_factory.mktemp("one")
    _ok(alone(out, "--batch", "16", "--world1-sampler"))
    return out


def test_two_processes_reach_the_weights_of_one_with_the_double_batch(one_process, tmp_path):
    _ok(torchrun(tmp_path, "--batch", "8"))
    two, one = _hist(tmp_path), _hist(one_process)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["step"] == one["step"] == 12  # 96 / 16 = 6 global batches per epoch, 2 epochs
    # the recorded loss is the global batch's (averaged over ranks), as one process sees it
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert _hist(tmp_path, 1)["train_loss"] == two["train_loss"]
    w2, w1 = _weights(tmp_path), _weights(one_process)
    for name in w1:
        assert torch.allclose(w2[name], w1[name], atol=1e-5), (name, (w2[name] - w1[name]).abs().max())
    # a side model trained with distributed=False inside the group: each rank alone, as one process does
    assert _hist(tmp_path, 1)["side"] == two["side"] == one["side"]
    # and the run really trained: the weights moved from rank 0's initialisation
    torch.manual_seed(1)
    init = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).state_dict()
    assert max(float((w1[k] - init[k]).abs().max()) for k in init) > 1e-2


def test_early_stopping_stops_both_ranks_on_the_same_step(tmp_path):
    _ok(torchrun(tmp_path, "--batch", "8", "--patience", "2"))
    r0, r1 = _hist(tmp_path, 0), _hist(tmp_path, 1)
    assert r0["stopped_early"] and r1["stopped_early"]
    assert r0["step"] == r1["step"] == 6 and [e["step"] for e in r0["evals"]] == [2, 4, 6]
    assert r1["evals"] == r0["evals"]  # rank 1 got rank 0's metrics


def test_killed_two_process_run_resumes_on_one_process(one_process, tmp_path):
    ckpt = tmp_path / "ckpt"
    killed = torchrun(tmp_path / "killed", "--batch", "8", "--ckpt", str(ckpt), "--die-at", "5")
    assert killed.returncode != 0
    manifests = sorted(p.name for p in ckpt.glob("step-*.json"))
    assert manifests[-1] == "step-00000004.json"  # step 4 of 6 in the first epoch
    state = torch.load(ckpt / "step-00000004.pt", weights_only=True)
    assert (state["world_size"], state["rank_batch_size"]) == (2, 8)
    assert (state["history"]["epoch"], state["history"]["batch"]) == (0, 4)
    wrong = alone(tmp_path / "wrong", "--batch", "8", "--ckpt", str(ckpt), "--resume")
    assert wrong.returncode != 0 and "global batch of 16" in wrong.stderr
    resumed = alone(tmp_path / "resumed", "--batch", "16", "--ckpt", str(ckpt), "--resume")
    _ok(resumed)
    assert "written by 2 processes" in resumed.stdout
    assert _hist(tmp_path / "resumed")["step"] == 12
    w, ref = _weights(tmp_path / "resumed"), _weights(one_process)
    for name in ref:
        assert torch.allclose(w[name], ref[name], atol=1e-5), name


def test_a_weighted_sampler_is_sharded_to_the_weights_of_one_process(tmp_path):
    """Notebook 09's balanced sampler under torchrun: ShardSampler splits the weighted draw."""
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(alone(one, "--batch", "16", "--weighted"))
    _ok(torchrun(two, "--batch", "8", "--weighted"))
    assert _hist(two)["step"] == _hist(one)["step"] == 12
    assert _hist(two)["train_loss"] == pytest.approx(_hist(one)["train_loss"], abs=1e-5)
    w2, w1 = _weights(two), _weights(one)
    assert all(torch.allclose(w2[k], w1[k], atol=1e-5) for k in w1)


def test_shard_sampler_splits_one_seeded_order_between_the_ranks():
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    from mmcourse import distributed, train

    weights = torch.linspace(0.1, 1.0, 11, dtype=torch.double)

    def shards(rank: int) -> list[int]:
        sampler = distributed.ShardSampler(WeightedRandomSampler(weights, 11), rank, 2)
        sampler.generator = torch.Generator().manual_seed(3)  # what seed_loader does each epoch
        return list(sampler)

    whole = WeightedRandomSampler(weights, 11, generator=torch.Generator().manual_seed(3))
    order = list(whole)
    s0, s1 = shards(0), shards(1)
    assert len(s0) == len(s1) == 6 and s0 == (order + order[:1])[0::2] and s1 == order[1::2] + [order[0]]
    # a loader with any other sampler gets a ShardSampler; seed_loader reaches its generator
    loader = DataLoader(TensorDataset(torch.arange(11)), batch_size=2, sampler=WeightedRandomSampler([1.0] * 11, 11))
    sharded = distributed.shard_loader(loader, seed=0, force=True)
    assert isinstance(sharded.sampler, distributed.ShardSampler)
    train.seed_loader(sharded, 0, 1)
    assert sharded.sampler.sampler.generator is sharded.sampler.generator is not None
