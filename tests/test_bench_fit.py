"""bench/fit.py (fit's overhead, checkpoint cost, DDP 2 vs 1): a --quick run end to end.

No test asserts a timing (they differ from machine to machine): the table has its rows and ratios,
the ratios agree with the figures, the DDP row really ran 2 processes on the same global batch,
and the checkpoint row wrote its checkpoints.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "fit.py"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "fit.json"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_rows_and_ratios_are_reported_and_consistent(quick_run):
    stdout, record = quick_run
    rows = record["rows"]
    assert set(rows) == {"bare", "fit", "fit_ckpt", "ddp1", "ddp2"}
    for key, row in rows.items():
        assert row["value"] == pytest.approx(record["sizes"]["steps"] / row["seconds"]), key
        assert row["label"] in stdout and 0 < row["loss"] < 10
    for name, (a, b) in {"fit vs. bare loop": ("fit", "bare"), "2 processes vs. 1": ("ddp2", "ddp1"),
                         "with checkpoints vs. without": ("fit_ckpt", "fit")}.items():
        assert record["ratios"][name] == pytest.approx(rows[a]["value"] / rows[b]["value"])
        assert f"{record['ratios'][name]:.3f}x" in stdout


def test_ddp_row_ran_two_processes_on_the_same_global_batch(quick_run):
    _, record = quick_run
    one, two = record["rows"]["ddp1"], record["rows"]["ddp2"]
    assert (one["world"], two["world"]) == (1, 2)
    assert two["per_process_batch"] * 2 == one["per_process_batch"] == record["sizes"]["batch"]


def test_checkpoint_row_wrote_checkpoints(quick_run):
    stdout, record = quick_run
    row = record["rows"]["fit_ckpt"]
    assert row["n_checkpoints"] == record["sizes"]["steps"] // record["sizes"]["every"] and row["checkpoint_mb"] > 0
    assert "one checkpoint (" in stdout
