"""bench/medical.py (notebook 09's fine-tuning speed levers): a --quick run of the eager, fused and
channels_last rows (torch.compile's compilation would take minutes on 2 cores; the lever itself is
tested in test_train.py).

No test asserts a timing: the rows are measured through fit with the settings they name, the
ratios agree with the figures, and the images are the real X-rays when the data is there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmcourse import config

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quick_rows_ratios_and_inputs(tmp_path):
    out = tmp_path / "medical.json"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "medical.py"), "--quick", "--device", "cpu",
                           "--threads", "1", "--only", "eager,fused,channels_last", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert set(rows) == {"eager", "fused", "channels_last"}
    assert rows["eager"]["settings"] == {"amp": False, "fused": False}
    assert rows["channels_last"]["settings"]["channels_last"] is True and rows["fused"]["settings"]["fused"] is True
    for row in rows.values():
        assert len(row["times"]) == record["sizes"]["timed"] and 0 < row["loss"] < 5
        assert row["value"] == pytest.approx(record["sizes"]["batch"] / row["seconds"])
    assert set(record["ratios"]) == {"fused AdamW vs. eager", "channels_last vs. eager"}  # compile rows left out
    assert record["ratios"]["channels_last vs. eager"] == pytest.approx(rows["channels_last"]["value"]
                                                                         / rows["eager"]["value"])
    real = (config.data_dir() / "chest_xray_pneumonia").is_dir()  # where the package looks (MMCOURSE_DATA_DIR)
    assert ("real Kermany X-rays" in rows["eager"]["inputs"]) == real, rows["eager"]["inputs"]
    assert "channels_last vs. eager" in proc.stdout and "the row 'compile'" not in proc.stdout
