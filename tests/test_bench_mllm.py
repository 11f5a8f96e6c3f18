"""bench/mllm.py (notebook 11's speed benchmark): a --quick run end to end.

Timings differ from machine to machine, so no test asserts one: the tests check that the table has
its rows and its ratio, that the ratio agrees with the figures, that both rows trained on the same
prompts (16 image + 62 audio tokens + the text, worked out here by hand), and the token budget
against hand-computed counts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "mllm.py"
ENV = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                    "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, models_ready) -> tuple[str, dict]:
    """(stdout, JSON record) of one ``--quick --device cpu`` run."""
    out = tmp_path_factory.mktemp("bench") / "mllm.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=900, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


@pytest.mark.models
def test_both_rows_and_the_ratio_are_reported_and_consistent(quick_run):
    stdout, record = quick_run
    assert set(record["rows"]) == {"step_cached", "step_onthefly"} and record["quick"] is True
    for key, row in record["rows"].items():
        assert row["value"] > 0 and row["value"] == pytest.approx(1 / row["seconds"]), key
        assert row["label"] in stdout and 0 < row["loss"] < 20
    (name, ratio), = record["ratios"].items()
    rows = record["rows"]
    assert ratio == pytest.approx(rows["step_cached"]["value"] / rows["step_onthefly"]["value"])
    assert f"{ratio:.2f}x" in stdout and name in stdout


@pytest.mark.models
def test_the_rows_train_on_the_same_prompts_and_the_budget_is_right(quick_run):
    _, record = quick_run
    budget = record["budget"]
    # 7 x 7 grid -> stride 2 -> 4 x 4; Whisper 50 frames/s: 0.5 s -> 25 frames -> 6 tokens, 2 s -> 100 -> 25, 5 s -> 250 -> 62
    assert budget["image, GridProjector (7x7 -> 4x4)"] == 16 and budget["image, all grid cells (notebook 08)"] == 49
    assert [budget[f"audio, {c} (k=4)"] for c in ("0.5-s digit", "2-s spoken question", "5-s sound")] == [6, 25, 62]
    positions = {r["prompt_tokens"] for r in record["rows"].values()}
    # the audio-visual prompt: its text, 16 image and 62 audio tokens, the answer "yes" (one token) and eos
    assert positions == {budget["text of the av prompt"] + 16 + 62 + 2}
