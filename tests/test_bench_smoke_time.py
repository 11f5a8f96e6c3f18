"""bench/smoke_time.py: the course's smoke time per notebook against the committed record, read from a
runner's report.json (nothing is timed, so the test checks the arithmetic, the flags and --update)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "smoke_time.py"


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_trend_per_notebook_and_in_total_with_the_budget_and_update(tmp_path):
    rows = [{"notebook": "00_welcome", "profile": "smoke", "status": "ok", "seconds": 40.0},
            {"notebook": "05_fusion_math", "profile": "smoke", "status": "ok", "seconds": 120.0},
            {"notebook": "07_finetuning_recipe", "profile": "smoke", "status": "failed", "seconds": 3.0},
            {"notebook": "09_medical_imaging", "profile": "full", "status": "ok", "seconds": 900.0}]
    report, record, out = tmp_path / "report.json", tmp_path / "record.json", tmp_path / "out.json"
    report.write_text(json.dumps({"notebooks": rows}))
    record.write_text(json.dumps({"recorded": "then", "notebooks": {"00_welcome": 50.0, "05_fusion_math": 100.0,
                                                                    "12_responsible_mmml": 60.0}}))
    proc = run("--report", str(report), "--record", str(record), "--json", str(out))
    result = json.loads(out.read_text())
    nbs = result["notebooks"]
    assert set(nbs) == {"00_welcome", "05_fusion_math", "12_responsible_mmml"}  # failed and full rows are not timings
    assert nbs["00_welcome"]["ratio"] == pytest.approx(0.8) and nbs["05_fusion_math"]["over_budget"]
    assert nbs["12_responsible_mmml"]["seconds"] is None and nbs["12_responsible_mmml"]["ratio"] is None
    assert result["total_common_s"] == 160.0 and result["previous_common_s"] == 150.0
    assert result["ratio"] == pytest.approx(160 / 150)
    assert "over the 90-s smoke budget: 05_fusion_math" in proc.stdout and "not run" in proc.stdout
    run("--report", str(report), "--record", str(record), "--update")
    assert json.loads(record.read_text())["notebooks"] == {"00_welcome": 40.0, "05_fusion_math": 120.0}


def test_without_a_report_it_says_what_to_run(tmp_path):
    proc = run("--report", str(tmp_path / "missing.json"))
    assert "make course" in proc.stderr and not proc.stdout
