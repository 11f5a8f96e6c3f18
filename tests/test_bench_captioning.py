"""bench/captioning.py (notebook 08's speed and memory benchmark): a --quick run end to end.

Timings differ from machine to machine, so no test asserts one: the tests check that the table
has its rows and ratios, that the ratios are positive and agree with the figures, and that both
generation rows really produced the same number of tokens (else their tokens/s would not compare).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "captioning.py"
ROWS = {"llava_cached", "llava_uncached", "decoder_greedy", "decoder_beam3", "train_cached", "train_recompute"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, models_ready) -> tuple[str, dict]:
    """(stdout, JSON record) of one ``--quick --device cpu`` run."""
    out = tmp_path_factory.mktemp("bench") / "captioning.json"
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_help_names_the_options():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--device", "--threads", "--json"):
        assert option in proc.stdout
    assert "--row" not in proc.stdout  # the child-process option stays hidden


def test_hardware_line_first(quick_run):
    stdout, record = quick_run
    assert stdout.splitlines()[0].startswith("hardware: cpu ")
    assert record["hardware"]["cores"] >= 1 and record["device"] == "cpu" and record["quick"] is True


def test_table_has_every_row_with_a_positive_figure(quick_run):
    stdout, record = quick_run
    assert set(record["rows"]) == ROWS
    lines = stdout.splitlines()
    for key, row in record["rows"].items():
        line = next((ln for ln in lines if row["label"] in ln and row["unit"] in ln), None)
        assert line is not None, f"no table line for {row['label']!r}:\n{stdout}"
        assert row["value"] > 0 and all(t > 0 for t in row["times"]), key
        assert row["spread"] == pytest.approx(max(row["times"]) / min(row["times"])) and row["spread"] >= 1
        assert row["threads"] == 1 and row["device"] == "cpu"


def test_ratios_are_positive_and_match_the_figures(quick_run):
    stdout, record = quick_run
    rows, ratios = record["rows"], record["ratios"]
    printed = {m[1].strip(): float(m[2]) for m in re.finditer(r"^ratio\s+(.+?)\s+([0-9.]+)x$", stdout, re.M)}
    assert set(printed) == set(ratios) and len(ratios) == 3, stdout
    for name, value in printed.items():
        assert value > 0 and value == pytest.approx(ratios[name], abs=0.006)
    assert ratios["KV cache speed-up (tokens/s)"] == pytest.approx(
        rows["llava_cached"]["value"] / rows["llava_uncached"]["value"])
    assert ratios["recompute vs. cached (s/step)"] == pytest.approx(
        rows["train_recompute"]["value"] / rows["train_cached"]["value"])


def test_generation_rows_produce_the_same_number_of_tokens(quick_run):
    _, record = quick_run
    n, batch = record["sizes"]["new_tokens"], record["sizes"]["gen_batch"]
    for key in ("llava_cached", "llava_uncached"):
        row = record["rows"][key]
        assert row["new_tokens_per_row"] == [n] * batch
        # tokens/s is computed from the tokens really generated: figure x median seconds = token count
        assert row["value"] * row["seconds"] == pytest.approx(row["generated_tokens"]) == n * batch


def test_memory_is_a_high_water_mark(quick_run):
    _, record = quick_run
    for key, row in record["rows"].items():
        assert 0 < row["start_rss_mb"] <= row["peak_rss_mb"], key
    # the LLM rows hold SmolLM2-135M in float32 (~0.5 GB): far more than the small decoder's rows
    assert record["rows"]["llava_cached"]["peak_rss_mb"] > record["rows"]["decoder_greedy"]["peak_rss_mb"]
