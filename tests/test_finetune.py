"""``python -m mmcourse finetune`` (mmcourse.finetune, README "Scaling out"): notebook 09's fine-tuning as a
command, alone and under torchrun with 2 CPU processes (gloo), on a tiny version of the smoke settings.

The command must write a complete results record, resume when run again (a finished run is loaded,
not retrained), run unchanged under torchrun with rank 0 alone writing, and resume on 1 process
from the checkpoint 2 processes wrote (the global batch is the same).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmcourse import finetune

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TINY_RECIPE = ["--profile", "smoke", "--no-progress", "--set", "n_train=32", "--set", "n_eval=16", "--set", "batch=8"]
TINY = ["--profile", "smoke", "--no-progress", "--set", "n_train=64", "--set", "n_val=48", "--set", "n_test=48",
        "--set", "image_size=64", "--set", "ft_images=32", "--set", "probe_epochs=4", "--set", "batch=16",
        "--set", "ft_epochs=2"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                             "MASTER_ADDR", "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "",
                  "no_proxy": "*", "NO_PROXY": "*"}


def command(out: Path, *extra: str, processes: int = 1, recipe: str = "medical",
            tiny: list[str] = TINY) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else []  # torchrun ... -m mmcourse: the same command line, N processes
    args = [sys.executable, *launcher, "-m", "mmcourse", "finetune", recipe, "--out", str(out), *tiny, *extra]
    proc = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return proc


def record(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def results_of(r: dict) -> dict:
    """The metrics without the training time (a resumed run counts on from its checkpoint's)."""
    return {k: v for k, v in r["metrics"].items() if k != "train_seconds"}


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("alone")
    return out, command(out)


def test_the_record_holds_metrics_settings_commit_hardware_time_and_memory(alone):
    out, proc = alone
    r = record(out)
    assert r["recipe"] == "medical" and r["profile"] == "smoke" and r["world_size"] == 1
    assert r["settings"]["image_size"] == 64 and r["settings"]["lr"] == finetune.MEDICAL["smoke"]["lr"]
    assert r["commit"] and r["hardware"]["cores"] and r["wall_seconds"] > 0 and r["peak_rss_mb"] > 100
    m = r["metrics"]
    assert m["n"] == {"train": 64, "val": 48, "test": 48} and m["ft_images"] == 32
    assert m["steps"] == 4 and m["chosen"] in ("linear probe", "fine-tuned")  # 32 images / 16 per step, 2 epochs
    assert 0 <= m["test_auc_ci95"][0] <= m["test_auc"] <= m["test_auc_ci95"][1] <= 1
    assert m["remedy"] in m["val_auc_probe"] and m["val_auc_probe"][m["remedy"]] == max(m["val_auc_probe"].values())
    for point in ("test_youden", "test_sens95"):
        assert set(m[point]) == {"threshold_from_val", "acc", "sensitivity", "specificity"}
    if m["data_source"] != "real":  # a fallback says so loudly
        assert "WARNING: the data source is" in proc.stdout
    ckpt = Path(r["checkpoints"])
    assert ckpt.parent.parent == out and sorted(p.name for p in ckpt.glob("step-*.json")) == \
        ["step-00000002.json", "step-00000004.json"]  # one per epoch


def test_run_again_it_loads_the_finished_run_instead_of_training(alone):
    out, _ = alone
    before = record(out)
    proc = command(out)
    assert "resumed from step-00000004" in proc.stdout
    assert results_of(record(out)) == results_of(before)


def test_under_torchrun_rank_0_writes_and_one_process_resumes_its_checkpoint(alone, tmp_path):
    proc = command(tmp_path, processes=2)
    r = record(tmp_path)
    assert r["world_size"] == 2 and r["metrics"]["steps"] == 4  # the same global batch: the same number of steps
    assert proc.stdout.count("results written to") == 1        # rank 0 alone writes and prints
    state = torch.load(sorted(Path(r["checkpoints"]).glob("step-*.pt"))[-1], weights_only=True)
    assert (state["world_size"], state["rank_batch_size"]) == (2, 8)
    # the same settings on 1 process: the checkpoint of 2 processes is loaded, nothing is retrained
    again = command(tmp_path)
    assert "written by 2 processes" in again.stdout and results_of(record(tmp_path)) == results_of(r)


def test_settings_pick_per_device_and_refuse_unknown_names():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert finetune.settings_for("medical", "full", cpu)["ft_epochs"] == 4
    assert finetune.settings_for("medical", "full", cuda)["batch"] == 64
    assert finetune.settings_for("medical", "smoke", cpu, {"batch": 8})["batch"] == 8
    with pytest.raises(ValueError, match="unknown setting 'epochs'.*ft_epochs"):
        finetune.settings_for("medical", "smoke", cpu, {"epochs": 2})


def test_recipe_compares_the_five_methods_chooses_on_validation_and_resumes(tmp_path):
    """Notebook 07's comparison as a command: the same methods, trainable counts and choice as the notebook."""
    from mmcourse import recipe

    command(tmp_path, recipe="recipe", tiny=TINY_RECIPE)
    r = record(tmp_path)
    m = r["metrics"]
    assert list(m["methods"]) == list(recipe.METHODS) and m["n"] == {"train": 32, "val": 16}
    rows = m["methods"]
    assert rows["linear probe"]["trainable"] == 770 and rows["LoRA (ours)"]["trainable"] == rows["LoRA (peft)"]["trainable"]
    assert rows["full fine-tuning"]["trainable"] == rows["full fine-tuning"]["total"]
    assert all(row["steps"] == 4 for row in rows.values())  # 32 captions / 8, one epoch
    assert rows[m["chosen"]]["val_acc"] == max(row["val_acc"] for row in rows.values())
    assert m["n_test"] == 16 and m["test_acc_ci95"][0] <= m["test_acc"] <= m["test_acc_ci95"][1]
    assert sorted(p.name for p in Path(r["checkpoints"]).iterdir()) == \
        ["full_fine_tuning", "last_2_blocks", "linear_probe", "lora_ours", "lora_peft"]
    again = command(tmp_path, recipe="recipe", tiny=TINY_RECIPE)
    assert again.stdout.count("resumed from step-00000004") == 5
    assert {k: v["val_acc"] for k, v in record(tmp_path)["metrics"]["methods"].items()} == \
        {k: v["val_acc"] for k, v in rows.items()}


def test_captioning_trains_chooses_the_beam_on_dev_tests_once_with_controls(tmp_path):
    """Notebook 08 (a) as a command: cross-entropy then self-critical, beam chosen on dev, test with controls."""
    tiny = ["--profile", "smoke", "--no-progress", "--set", "n_train=40", "--set", "n_eval=16", "--set", "epochs=2",
            "--set", "n_blind=10"]
    command(tmp_path, recipe="captioning", tiny=tiny)
    r = record(tmp_path)
    m = r["metrics"]
    assert m["n"] == {"train": 40, "val": 16, "test": 16} and m["steps"] == 8  # 200 captions / 64 → 4 steps × 2 epochs
    assert m["kept"] == ("self-critical" if m["dev_scst"]["dev_cider"] > m["dev_xe"]["dev_cider"] else "cross-entropy")
    chosen = f"beam {m['beam']}, alpha {m['alpha']:g}"
    assert m["dev_beams"][chosen]["CIDEr-D"] == max(v["CIDEr-D"] for v in m["dev_beams"].values())
    assert set(m["test"]) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    assert set(m["test_controls"]) == {"shuffled images", "blind caption"}
    assert m["test_controls"]["blind caption"]["CIDEr-D"] > 0  # the best of 10 training captions overlaps the test refs
    assert {p.name for p in Path(r["checkpoints"]).iterdir()} == {"xe", "scst"}
    again = command(tmp_path, recipe="captioning", tiny=tiny)
    assert "resumed from step-00000008" in again.stdout and record(tmp_path)["metrics"]["test"] == m["test"]
