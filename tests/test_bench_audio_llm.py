"""bench/audio_llm.py (notebook 10's speed benchmark): a --quick run end to end.

Timings differ from machine to machine, so no test asserts one: the tests check that the table
has its rows and ratios, that the ratios are positive and agree with the figures, that the encoder
rows produced the frames the padding or the real length implies (worked out here by hand), that
both generation rows of a pair really produced the same number of tokens (else their tokens/s would
not compare), and the token budget against hand-computed counts.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "audio_llm.py"
ROWS = {"fsdd_padded", "fsdd_trimmed", "esc_padded", "esc_trimmed",
        "gen_fsdd_cached", "gen_fsdd_uncached", "gen_esc_cached", "gen_esc_uncached"}
ENV = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
                    # the script runs from bench/: make its children import this checkout's mmcourse
                    "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, models_ready) -> tuple[str, dict]:
    """(stdout, JSON record) of one ``--quick --device cpu`` run."""
    out = tmp_path_factory.mktemp("bench") / "audio_llm.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--threads", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=900, env=ENV, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_help_names_the_options():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60,
                          env=ENV)
    assert proc.returncode == 0, proc.stderr
    for option in ("--quick", "--device", "--threads", "--json"):
        assert option in proc.stdout
    assert "--row" not in proc.stdout  # the child-process option stays hidden


@pytest.mark.models
def test_table_has_every_row_with_a_positive_figure(quick_run):
    stdout, record = quick_run
    assert stdout.splitlines()[0].startswith("hardware: cpu ")
    assert record["device"] == "cpu" and record["quick"] is True
    assert set(record["rows"]) == ROWS
    lines = stdout.splitlines()
    for key, row in record["rows"].items():
        line = next((ln for ln in lines if row["label"] in ln and row["unit"] in ln), None)
        assert line is not None, f"no table line for {row['label']!r}:\n{stdout}"
        assert row["value"] > 0 and all(t > 0 for t in row["times"]), key
        assert row["spread"] == pytest.approx(max(row["times"]) / min(row["times"])) and row["spread"] >= 1
        assert row["threads"] == 1 and row["device"] == "cpu"
        assert 0 < row["start_rss_mb"] <= row["peak_rss_mb"], key
    for key in ("fsdd_padded", "esc_padded"):  # the table says whether the clips were real or stand-ins
        assert re.search(r"\((real|synthetic tones)\)", record["rows"][key]["n"]), record["rows"][key]["n"]


@pytest.mark.models
def test_ratios_are_positive_and_match_the_figures(quick_run):
    stdout, record = quick_run
    rows, ratios = record["rows"], record["ratios"]
    printed = {m[1].strip(): float(m[2]) for m in re.finditer(r"^ratio\s+(.+?)\s+([0-9.]+)x$", stdout, re.M)}
    assert set(printed) == set(ratios) and len(ratios) == 4, stdout
    for name, value in printed.items():
        assert value > 0 and value == pytest.approx(ratios[name], abs=0.006)
    assert ratios["ESC-10 encoder: real length vs. 30-s padding"] == pytest.approx(
        rows["esc_trimmed"]["value"] / rows["esc_padded"]["value"])
    assert ratios["KV cache speed-up, ESC-like prompt"] == pytest.approx(
        rows["gen_esc_cached"]["value"] / rows["gen_esc_uncached"]["value"])


@pytest.mark.models
def test_encoder_rows_produce_the_frames_of_padding_or_real_length(quick_run):
    _, record = quick_run
    for name in ("fsdd", "esc"):
        padded, trimmed = record["rows"][f"{name}_padded"], record["rows"][f"{name}_trimmed"]
        assert padded["clip_samples"] == trimmed["clip_samples"]  # the same clips in both rows
        assert len(padded["frames_per_clip"]) == record["sizes"][f"{name}_clips"]
        assert padded["frames_per_clip"] == [1500] * len(padded["clip_samples"])  # 30 s x 50 frames/s
        # real length: 16 kHz after resampling, one encoder frame per 320 samples (20 ms), a partial one counts
        by_hand = [math.ceil(n * 16000 / trimmed["sample_rate"] / 320) for n in trimmed["clip_samples"]]
        assert trimmed["frames_per_clip"] == by_hand
        assert trimmed["mean_frames"] == pytest.approx(sum(by_hand) / len(by_hand))
        assert max(by_hand) < 1500
        # clips/s counts the clips really encoded: figure x median seconds = clip count
        for row in (padded, trimmed):
            assert row["value"] * row["seconds"] == pytest.approx(len(row["clip_samples"]))


@pytest.mark.models
def test_generation_rows_produce_the_same_number_of_tokens(quick_run):
    _, record = quick_run
    n, batch = record["sizes"]["new_tokens"], record["sizes"]["gen_batch"]
    for name, audio_tokens in (("fsdd", 24 // 4), ("esc", 250 // 4)):  # k = 4 frames per token
        cached, uncached = record["rows"][f"gen_{name}_cached"], record["rows"][f"gen_{name}_uncached"]
        assert cached["audio_tokens"] == uncached["audio_tokens"] == audio_tokens
        assert cached["prompt_tokens"] == uncached["prompt_tokens"]
        for row in (cached, uncached):
            assert row["new_tokens_per_row"] == [n] * batch
            # tokens/s is computed from the tokens really generated: figure x median seconds = token count
            assert row["value"] * row["seconds"] == pytest.approx(row["generated_tokens"]) == n * batch
    # the ESC-like prompt is longer by exactly its extra audio tokens
    rows = record["rows"]
    assert rows["gen_esc_cached"]["prompt_tokens"] - rows["gen_fsdd_cached"]["prompt_tokens"] == 62 - 6


@pytest.mark.models
def test_token_budget_is_frames_over_k(quick_run):
    stdout, record = quick_run
    b = record["budget"]
    # hand-computed: 50 frames per second; 0.5 s = 25 frames, 5 s = 250, 30 s = 1,500; k frames per token, floor
    assert b["tokens per second"] == {"k=1": 50, "k=2": 25, "k=4": 12.5, "k=8": 6.25}
    assert b["0.5-s digit"] == {"k=1": 25, "k=2": 12, "k=4": 6, "k=8": 3}
    assert b["5-s ESC clip"] == {"k=1": 250, "k=2": 125, "k=4": 62, "k=8": 31}
    assert b["30-s padded clip"] == {"k=1": 1500, "k=2": 750, "k=4": 375, "k=8": 187}
    assert re.search(r"^30-s padded clip\s+1500\s+750\s+375\s+187$", stdout, re.M), stdout
