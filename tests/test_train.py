"""mmcourse.train: the fit loop, early stopping, checkpoints and exact resume (notebook 07).

The resume tests run a small deterministic training script in child processes, kill it with
SIGKILL at random steps, resume, and compare the final weights with an uninterrupted run.
On Linux the children are forked from the test process (no second torch import: fast); elsewhere
they are fresh interpreters running this file as a script.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mmcourse import checkpoint, runtime
from mmcourse.train import (CheckpointWarning, FitConfig, TrainingOutOfMemoryError, fit, list_checkpoints,
                            load_latest_checkpoint, overfit_one_batch, save_checkpoint, warmup_cosine,
                            warmup_cosine_scheduler)

TOTAL_STEPS = 60  # 232 samples / batch 8 = 29 micro-batches = 15 steps (accumulate=2) x 4 epochs


# --------------------------------------------------------------------------- the training script

def train_script(ckpt_dir: str, out_dir: str, resume: bool, out) -> None:
    """Tiny MLP on seeded data; every RNG (python, numpy, torch) is used by augmentation/dropout."""
    torch.set_num_threads(1)
    runtime.seed_everything(0)
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"WARNING {cat.__name__}: {msg}", file=out, flush=True)
    gen = torch.Generator().manual_seed(123)
    x = torch.randn(232, 8, generator=gen)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long()
    train_dl = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    val_dl = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=32)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        xb, yb = batch
        jitter = 0.05 * random.random() + 0.01 * float(np.random.rand())
        return F.cross_entropy(m(xb + jitter * torch.randn_like(xb)), yb)

    def callback(event: str, info: dict) -> None:
        if event == "step":
            print(f"step {info['step']}", file=out, flush=True)
            time.sleep(0.01)  # give the test time to kill us at a step of its choice

    with contextlib.redirect_stdout(out):
        hist = fit(model, loss_fn, train_dl, val_dl, epochs=4, lr=3e-3, accumulate=2, eval_every=10,
                   monitor="val_loss", mode="min", checkpoint_dir=ckpt_dir, checkpoint_every=3,
                   keep_last=3, resume=resume, seed=0, device="cpu", progress=False, callback=callback)
    save_file(model.state_dict(), str(Path(out_dir) / "final.safetensors"))
    (Path(out_dir) / "history.json").write_text(json.dumps(hist.__dict__))
    print("done", file=out, flush=True)


class Child:
    """The training script in a child process; ``lines`` yields what it prints."""

    def __init__(self, ckpt_dir: Path, out_dir: Path, resume: bool):
        args = (str(ckpt_dir), str(out_dir), resume)
        if sys.platform.startswith("linux"):
            import torch._inductor.config  # noqa: F401  (seed_everything's import: pay once, not per child)
            self.proc = None
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork"
                self.pid = os.fork()
            if self.pid == 0:  # child: run the script, never return into pytest
                os.close(read_fd)
                code = 1
                try:
                    with os.fdopen(write_fd, "w", buffering=1) as out:
                        try:
                            train_script(*args, out=out)
                            code = 0
                        except BaseException:
                            traceback.print_exc(file=out)
                finally:
                    os._exit(code)
            os.close(write_fd)
            self.lines = os.fdopen(read_fd)
        else:
            cmd = [sys.executable, __file__, *args[:2], str(int(resume))]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            self.pid, self.lines = self.proc.pid, self.proc.stdout

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self) -> int:
        if self.proc is not None:
            return self.proc.wait(timeout=60)
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def run_until(self, kill_at: int | None) -> tuple[int, list[str]]:
        """Read lines; SIGKILL once ``step kill_at`` is printed (None: run to the end)."""
        seen = []
        for line in self.lines:
            seen.append(line.strip())
            if kill_at is not None and line.startswith("step ") and int(line.split()[1]) >= kill_at:
                self.kill()
                break
        rc = self.wait()
        self.lines.close()
        return rc, seen


def load_result(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Final weights and history; the history's wall time (``seconds``) is checked apart: no two runs share it."""
    hist = json.loads((out_dir / "history.json").read_text())
    assert hist.pop("seconds") > 0
    return load_file(str(out_dir / "final.safetensors")), hist


def assert_same_result(a: Path, b: Path) -> None:
    (wa, ha), (wb, hb) = load_result(a), load_result(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs from the uninterrupted run"
    assert ha == hb  # every step's loss, lr, grad norm and every eval: bit for bit


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run: its output directory (with its checkpoints in ``ckpt``)."""
    out = tmp_path_factory.mktemp("reference")
    rc, lines = Child(out / "ckpt", out, resume=False).run_until(None)
    assert rc == 0 and lines[-1] == "done", lines[-20:]
    assert lines.count("step 1") == 1 and f"step {TOTAL_STEPS}" in lines
    return out


def assert_restarted_where_it_should(lines: list[str], killed_at: int | None, where: str) -> None:
    """The run started at step 1, or right after the checkpoint it says it resumed from.

    A run killed when it printed ``step k`` had written every checkpoint (every 3 steps) before
    step ``k``: the ``step k`` callback comes before step ``k``'s evaluation and checkpoint, so
    that one may or may not be on disk yet. With no checkpoint, starting from scratch is right.
    """
    steps = [int(line.split()[1]) for line in lines if line.startswith("step ")]
    resumed = [line for line in lines if line.startswith("resumed from step-")]
    surely_saved = 0 if killed_at is None else (killed_at - 1) // 3 * 3
    start = int(resumed[0].rsplit("(step ", 1)[1].rstrip(")")) if resumed else 0
    assert len(resumed) <= 1 and start >= surely_saved, f"{where}: {lines[:5]}"
    assert (steps[0] if steps else TOTAL_STEPS + 1) == start + 1, f"{where}: {lines[:5]}"


@pytest.mark.parametrize("fixed_seed", [None, 22])  # None: MMCOURSE_TEST_SEED or a new one each run
def test_resume_after_sigkill_is_bitwise_identical(reference, tmp_path, fixed_seed):
    seed = fixed_seed if fixed_seed is not None else int(os.environ.get("MMCOURSE_TEST_SEED", time.time_ns() % 10**6))
    kills = sorted(random.Random(seed).sample(range(2, TOTAL_STEPS - 3), 3))  # seed 22: [3, 10, 17]
    where = f"(kill steps {kills}, MMCOURSE_TEST_SEED={seed})"
    ckpt = tmp_path / "ckpt"
    for i, step in enumerate(kills + [None]):
        rc, lines = Child(ckpt, tmp_path, resume=i > 0).run_until(step)
        if step is not None:
            assert rc == -signal.SIGKILL and "done" not in lines, f"not killed at step {step} {where}: {lines[-5:]}"
        else:
            assert rc == 0 and lines[-1] == "done", f"{where}: {lines[-20:]}"
        assert_restarted_where_it_should(lines, kills[i - 1] if i > 0 else None, where)
    assert_same_result(reference, tmp_path)
    assert len(list_checkpoints(ckpt)) == 3  # keep_last


def test_damaged_checkpoints_fall_back_to_the_previous_good_one(reference, tmp_path):
    import shutil
    ckpt = tmp_path / "ckpt"
    shutil.copytree(reference / "ckpt", ckpt)
    newest, second = list_checkpoints(ckpt)[:2]  # steps 60 and 57
    weights = newest.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    state = second.with_suffix(".pt")
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    state.write_bytes(bytes(data))
    rc, lines = Child(ckpt, tmp_path, resume=True).run_until(None)
    assert rc == 0 and lines[-1] == "done", lines[-20:]
    warned = [line for line in lines if line.startswith("WARNING CheckpointWarning")]
    assert len(warned) == 2 and all("sha256 mismatch" in w for w in warned), lines[:5]
    assert f"resumed from step-{TOTAL_STEPS - 6:08d} (step {TOTAL_STEPS - 6})" in lines
    assert lines.count(f"step {TOTAL_STEPS}") == 1
    assert_same_result(reference, tmp_path)


# --------------------------------------------------------------------------- in-process tests

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train much faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def regression_data(n: int = 32, seed: int = 0) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1)


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def quiet_fit(model: nn.Module, loader, **kw):
    return fit(model, mse, loader, device="cpu", progress=False, **kw)


def test_warmup_cosine_known_values():
    assert warmup_cosine(0, 100, 10, 1e-3, 1e-5) == 0.0
    assert warmup_cosine(5, 100, 10, 1e-3, 1e-5) == pytest.approx(5e-4)
    assert warmup_cosine(10, 100, 10, 1e-3, 1e-5) == pytest.approx(1e-3)
    assert warmup_cosine(55, 100, 10, 1e-3, 1e-5) == pytest.approx((1e-3 + 1e-5) / 2)
    assert warmup_cosine(100, 100, 10, 1e-3, 1e-5) == pytest.approx(1e-5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = warmup_cosine_scheduler(opt, total_steps=20, warmup_steps=4, min_lr=0.05)
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[4] == pytest.approx(0.5) and lrs[20] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay after warm-up


def test_gradient_accumulation_equals_one_big_batch():
    data = regression_data(32)
    weights = []
    for batch_size, accumulate in [(8, 1), (2, 4)]:
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        hist = quiet_fit(model, DataLoader(data, batch_size=batch_size, shuffle=True), epochs=3,
                         optimizer=opt, accumulate=accumulate, clip_grad_norm=None)
        assert hist.step == 12
        weights.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*weights):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_clipping_bounds_the_gradient_norm():
    seen = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            seen.append(float(torch.nn.utils.get_total_norm(grads)))
            return super().step(closure)

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    hist = quiet_fit(model, DataLoader(regression_data(32), batch_size=8), epochs=2,
                     optimizer=RecordingSGD(model.parameters(), lr=0.01), clip_grad_norm=0.5)
    assert max(hist.grad_norm) > 0.5  # clipping had work to do...
    assert max(seen) <= 0.5 * (1 + 1e-5)  # ...and the optimizer never saw more


def test_history_records_step_losses_and_eval_metrics():
    events = []
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    data = DataLoader(regression_data(40), batch_size=4)

    def eval_fn(m, loader):
        return {"mae": sum(float((m(x) - y).abs().mean()) for x, y in loader) / len(loader)}

    hist = quiet_fit(model, data, val_loader=data, eval_fn=eval_fn, eval_every=3, lr=0.05,
                     callback=lambda event, info: events.append((event, info)))
    assert hist.step == 10 and len(hist.train_loss) == len(hist.lr) == len(hist.grad_norm) == 10
    assert [e["step"] for e in hist.evals] == [3, 6, 9, 10]
    assert all("mae" in e for e in hist.evals)
    assert hist.evals[-1]["mae"] < hist.evals[0]["mae"]
    assert [e for e, _ in events].count("step") == 10 and events[-1][0] == "end"
    assert {"step", "loss", "lr", "grad_norm"} <= events[0][1].keys()
    default = quiet_fit(nn.Linear(4, 1), data, val_loader=data, max_steps=4)  # no eval_fn: val_loss
    assert [set(e) for e in default.evals] == [{"step", "epoch", "val_loss"}]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_early_stopping_restores_the_peak_weights(mode):
    curve = [0.2, 0.5, 0.9, 0.6, 0.4, 0.3, 0.2, 0.1]  # peaks at the 3rd epoch
    sign = 1 if mode == "max" else -1
    snapshots = []

    def eval_fn(m, loader):
        snapshots.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return {"score": sign * curve[len(snapshots) - 1]}

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    data = DataLoader(regression_data(32), batch_size=8)
    hist = quiet_fit(model, data, val_loader=data, eval_fn=eval_fn, epochs=8, lr=0.05,
                     monitor="score", mode=mode, patience=2)
    assert hist.stopped_early and len(snapshots) == 5
    assert hist.best_step == 3 * 4 and hist.best_metric == sign * 0.9
    final = model.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)  # the peak epoch's weights
    assert not all(torch.equal(final[k], snapshots[-1][k]) for k in final)  # not the last ones


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_path_runs_when_forced_on_cpu(dtype, monkeypatch, tmp_path):
    """CPU trains in float32; force the GPU's autocast dtypes to exercise autocast and GradScaler."""
    monkeypatch.setattr("mmcourse.train.runtime.autocast_dtype", lambda dev=None: dtype)
    seen = set()

    def loss_fn(model, batch):
        out = model(batch[0])
        seen.add(out.dtype)
        return F.mse_loss(out.float(), batch[1])

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Detected call of `lr_scheduler.step", UserWarning)  # skipped fp16 steps
        hist = fit(nn.Linear(4, 1), loss_fn, DataLoader(regression_data(64), batch_size=8), epochs=3,
                   lr=0.05, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert seen == {dtype} and hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    scaler = torch.load(list_checkpoints(tmp_path)[0].with_suffix(".pt"), weights_only=True)["scaler"]
    assert ("scale" in scaler) == (dtype == torch.float16)


def test_out_of_memory_says_what_to_change():
    def loss_fn(model, batch):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    loader = DataLoader(regression_data(32), batch_size=16)
    with pytest.raises(TrainingOutOfMemoryError, match="batch size 16") as info:
        fit(nn.Linear(4, 1), loss_fn, loader, device="cpu", progress=False)
    assert isinstance(info.value, RuntimeError)
    assert "batch_size=8" in str(info.value) and "accumulate=2" in str(info.value)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_overfit_one_batch_drives_the_loss_to_zero():
    torch.manual_seed(0)
    x, y = torch.randn(16, 10), torch.randint(0, 4, (16,))
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
    losses = overfit_one_batch(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), (x, y),
                               steps=150, lr=1e-2, device="cpu")
    assert len(losses) == 150 and losses[-1] < 0.1 * losses[0]


def test_checkpoint_files_verify_and_resume_of_a_finished_run(tmp_path):
    data = DataLoader(regression_data(32), batch_size=4, shuffle=True)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    hist = quiet_fit(model, data, val_loader=data, epochs=2, checkpoint_dir=tmp_path, checkpoint_every=5,
                     keep_last=2, monitor="val_loss", mode="min")
    manifests = list_checkpoints(tmp_path)
    assert [m.name for m in manifests] == ["step-00000016.json", "step-00000015.json"]
    info = json.loads(manifests[0].read_text())
    assert set(info["files"]) == {"model", "state", "best"} and info["epoch"] == 2 and info["batch"] == 0
    state = torch.load(manifests[0].with_suffix(".pt"), weights_only=True)
    assert state["history"]["step"] == 16 and "numpy" in state["rng"]
    # the format on disk is fixed: checkpoints written by older versions must keep resuming
    assert info["format"] == "mmcourse-checkpoint-1"
    # world_size and rank_batch_size came with DDP (optional: older checkpoints resume without them)
    assert set(state) == {"history", "optimizer", "scheduler", "scaler", "rng", "seed", "world_size",
                          "rank_batch_size"}
    assert (state["world_size"], state["rank_batch_size"]) == (1, 4)
    # "load the checkpoint if it exists, otherwise train": a finished run resumes to its result
    again = nn.Linear(4, 1)
    hist2 = quiet_fit(again, data, val_loader=data, epochs=2, checkpoint_dir=tmp_path, resume=True,
                      monitor="val_loss", mode="min")
    assert hist2 == hist  # History's == leaves out the wall time, seconds
    # the wall time counts on from the checkpoint (the resumed process itself trained for ~0 s)
    assert hist2.seconds >= state["history"]["seconds"] > 0 and state["history"]["seconds"] <= hist.seconds
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # a damaged newest checkpoint is skipped with a warning
    manifests[0].write_text("{ truncated")
    with pytest.warns(CheckpointWarning, match="step-00000016.json is unusable"):
        assert load_latest_checkpoint(tmp_path)["state"]["history"]["step"] == 15


# --------------------------------------------------------------------------- FitConfig

def trained(config: FitConfig | None = None, **kw):
    """A small run that uses most settings and every hook; (history, weights, callback events)."""
    events = []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    train = DataLoader(regression_data(40), batch_size=4, shuffle=True)
    val = DataLoader(regression_data(16, seed=1), batch_size=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hist = fit(model, mse, train, val, config=config, optimizer=opt, callback=lambda e, i: events.append((e, i)),
               eval_fn=lambda m, dl: {"mse": sum(float(mse(m, b)) for b in dl) / len(dl)}, **kw)
    return hist, model.state_dict(), events


SETTINGS = dict(epochs=3, accumulate=2, warmup_steps=2, clip_grad_norm=0.5, eval_every=4, monitor="mse",
                mode="min", patience=3, seed=7, device="cpu", progress=False)


def assert_same_run(a, b) -> None:
    assert a[0] == b[0] and a[2] == b[2]
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_config_is_the_same_run_as_keyword_arguments():
    by_kwargs = trained(**SETTINGS)
    assert by_kwargs[0].step == 15 and len(by_kwargs[0].evals) == 4  # the settings took effect
    assert_same_run(trained(FitConfig(**SETTINGS)), by_kwargs)
    # keyword arguments override the config's fields
    assert_same_run(trained(FitConfig(**{**SETTINGS, "epochs": 1, "eval_every": 2}), epochs=3, eval_every=4),
                    by_kwargs)
    assert trained(FitConfig(**SETTINGS), max_steps=5)[0].step == 5


def test_unknown_keyword_argument_is_a_type_error_naming_it():
    data = DataLoader(regression_data(8), batch_size=4)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'epoch'; did you mean 'epochs'\?"):
        fit(nn.Linear(4, 1), mse, data, device="cpu", progress=False, epoch=3)
    with pytest.raises(TypeError, match="'optimiser'; did you mean 'optimizer'"):
        fit(nn.Linear(4, 1), mse, data, optimiser=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'frobnicate'"):
        fit(nn.Linear(4, 1), mse, data, config=FitConfig(device="cpu"), frobnicate=True)
    with pytest.raises(TypeError, match="config must be a FitConfig"):
        fit(nn.Linear(4, 1), mse, data, config={"epochs": 2})
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        FitConfig(mode="best")


def test_checkpoint_names_are_still_importable_from_train():
    assert save_checkpoint is checkpoint.save_checkpoint and CheckpointWarning is checkpoint.CheckpointWarning
    assert load_latest_checkpoint is checkpoint.load_latest_checkpoint


if __name__ == "__main__":  # the child process on platforms without fork
    train_script(sys.argv[1], sys.argv[2], sys.argv[3] == "1", out=sys.stdout)


# --------------------------------------------------------------------------- speed levers

def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))


def cnn_run(ckpt_dir=None, **levers):
    """Two epochs of a small CNN on seeded images (the speed levers of FitConfig); (model, history)."""
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 3, 12, 12, generator=gen), torch.randint(0, 2, (48,), generator=gen))
    model = small_cnn()
    hist = fit(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), DataLoader(data, batch_size=16, shuffle=True),
               epochs=2, device="cpu", progress=False, checkpoint_dir=ckpt_dir,
               checkpoint_every=2 if ckpt_dir else None, **levers)
    return model, hist


def max_weight_gap(a: nn.Module, b: nn.Module) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))


def same_training(a: tuple, b: tuple, loss_tol: float = 1e-5) -> bool:
    """The same run up to float rounding: the step losses agree closely; the weights within lr per step,
    since AdamW's update g / sqrt(v) turns a rounding-level change of a near-zero gradient into up to ±lr."""
    (ma, ha), (mb, hb) = a, b
    return (ha.step == hb.step and np.allclose(ha.train_loss, hb.train_loss, rtol=0, atol=loss_tol)
            and max_weight_gap(ma, mb) <= 1e-3 * ha.step)


def test_channels_last_trains_nhwc_the_same_model_and_its_checkpoints_resume(tmp_path):
    eager, h_eager = cnn_run()
    nhwc, h_nhwc = cnn_run(tmp_path, channels_last=True)
    assert same_training((eager, h_eager), (nhwc, h_nhwc))  # the same computation in another memory order
    weight = nhwc[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert not eager[0].weight.is_contiguous(memory_format=torch.channels_last)
    # safetensors refuses non-contiguous tensors: the checkpoint writes them contiguous, and resumes
    again, h_again = cnn_run(tmp_path, channels_last=True, resume=True)
    assert h_again == h_nhwc and max_weight_gap(again, nhwc) == 0


def test_channels_last_converts_only_the_batchs_image_tensors():
    from mmcourse.train import channels_last

    batch = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(2, 1, 4, 4, dtype=torch.bool),
             "label": torch.zeros(2, dtype=torch.long), "pair": (torch.zeros(2, 3, 4, 4), torch.zeros(2, 5))}
    out = channels_last(batch)
    assert out["image"].is_contiguous(memory_format=torch.channels_last) and not out["image"].is_contiguous()
    assert out["pair"][0].is_contiguous(memory_format=torch.channels_last) and out["pair"][1].is_contiguous()
    assert out["mask"].is_contiguous() and out["label"] is batch["label"]


def test_fused_adamw_is_the_same_update_and_the_default_only_on_cuda():
    from mmcourse.train import default_optimizer

    assert same_training(cnn_run(fused=False), cnn_run(fused=True))
    assert default_optimizer(nn.Linear(2, 2)).defaults["fused"] is None        # CPU: foreach, as measured
    assert default_optimizer(nn.Linear(2, 2), fused=True).defaults["fused"] is True


@pytest.mark.slow
def test_compile_trains_the_same_model_and_leaves_its_state_dict_alone(tmp_path):
    eager, h_eager = cnn_run()
    compiled, h_compiled = cnn_run(tmp_path, compile=True)
    assert same_training((eager, h_eager), (compiled, h_compiled), loss_tol=1e-4)
    # the compiled wrapper is fit's own: the model's keys (and so its checkpoints) are unchanged
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in load_file(str(sorted(tmp_path.glob("step-*.safetensors"))[-1])))


def test_checkpoint_every_epoch_saves_at_each_epochs_end(tmp_path):
    data = DataLoader(regression_data(30), batch_size=4, shuffle=True)  # 8 batches, the last one short
    torch.manual_seed(0)
    quiet_fit(nn.Linear(4, 1), data, epochs=3, accumulate=3, checkpoint_dir=tmp_path, checkpoint_every="epoch",
              keep_last=5)
    assert [m.name for m in list_checkpoints(tmp_path)] == [f"step-{3 * e:08d}.json" for e in (3, 2, 1)]
    with pytest.raises(ValueError, match="number of steps or 'epoch'"):
        FitConfig(checkpoint_every="epochs")
