"""Audio-LLM speed and memory, figures and ratios side by side (``make bench``; notebook 10).

Each row is measured in a fresh subprocess (so its peak memory is its own):

1. Whisper tiny.en's encoder (notebook 10, §Length) on real clips held in memory: FSDD test
   digits and ESC-10 fold-1 clips from MMCOURSE_DATA_DIR (else the loaders' synthetic stand-in
   tones; the table says which). ``audio.whisper_encode(..., trim=False, pool=False)`` pads every
   clip to 30 s (1,500 frames); ``trim=True`` runs the encoder on the real length only
   (``audio.whisper_frames_trimmed``, about 25 frames for a digit, 250 for a 5-s clip).
   Clips/s, the speed-up, and the mean number of frames each produces; FSDD and ESC-10 apart.
2. Generation (notebook 10, §Tasks; mllm §Generation): SmolLM2-135M with an untrained
   ``mllm.Projector(4*384, 576)`` on random Whisper-sized frames stacked k = 4 at a time
   (``mllm.stack_frames``: an FSDD-like clip of 24 frames -> 6 audio tokens, an ESC-like clip
   of 250 frames -> 62), a batch of identical left-padded prompts, ``mllm.generate`` with the
   KV cache vs. our uncached greedy loop, both forced to the same number of new tokens
   (cached: ``min_new_tokens``; uncached: no eos, so it never stops early; the lengths are
   checked). Tokens/s and the speed-up.
3. The audio token budget (no timing): LLM tokens per second of audio for k = 1, 2, 4, 8 at
   Whisper's 50 frames/s, and the tokens of a 0.5-s digit, a 5-s ESC clip and a 30-s padded clip.

Timing, memory and the child process are bench/_common.py's, shared with bench/captioning.py: every
figure is the median of several timed repeats after a warm-up run; "spread" (slowest / fastest
repeat) shows how steady the machine was; peak RSS is the row process's high-water mark, and
``torch.cuda.max_memory_allocated`` on CUDA.

    python bench/audio_llm.py [--quick] [--device cpu] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (bench/_common.py: timing, memory, one process per row, the command line)

PROMPT = "<audio>What do you hear? Answer with one word."
STACK = 4  # frames per audio token in the generation rows (Ultravox / SLAM-ASR style)
WHISPER_DIM, FRAMES_PER_SECOND = 384, 50  # Whisper tiny.en: encoder width; one frame per 20 ms
GEN_FRAMES = {"fsdd": 24, "esc": 250}  # a ~0.5-s digit and a 5-s ESC clip, in encoder frames
BUDGET_K = (1, 2, 4, 8)
BUDGET_CLIPS = {"0.5-s digit": 0.5, "5-s ESC clip": 5.0, "30-s padded clip": 30.0}
SIZES = {  # quick: a smoke test well under a minute per row; full: the notebook's test sets
    "quick": {"fsdd_clips": 2, "esc_clips": 1, "enc_batch": 8, "gen_batch": 2, "new_tokens": 4, "repeats": 2},
    "full": {"fsdd_clips": 64, "esc_clips": 32, "enc_batch": 8, "gen_batch": 8, "new_tokens": 12, "repeats": 3},
}
# row key -> (phase, label, unit); pairs below give the ratios
ROWS = {
    "fsdd_padded": ("encoder", "Whisper encoder FSDD, 30-s padding", "clips/s"),
    "fsdd_trimmed": ("encoder", "Whisper encoder FSDD, real length", "clips/s"),
    "esc_padded": ("encoder", "Whisper encoder ESC-10, 30-s padding", "clips/s"),
    "esc_trimmed": ("encoder", "Whisper encoder ESC-10, real length", "clips/s"),
    "gen_fsdd_cached": ("generation", "FSDD-like prompt, KV cache", "tokens/s"),
    "gen_fsdd_uncached": ("generation", "FSDD-like prompt, no cache", "tokens/s"),
    "gen_esc_cached": ("generation", "ESC-like prompt, KV cache", "tokens/s"),
    "gen_esc_uncached": ("generation", "ESC-like prompt, no cache", "tokens/s"),
}
RATIOS = {  # name -> (numerator row, denominator row): every ratio is "how many times faster"
    "FSDD encoder: real length vs. 30-s padding": ("fsdd_trimmed", "fsdd_padded"),
    "ESC-10 encoder: real length vs. 30-s padding": ("esc_trimmed", "esc_padded"),
    "KV cache speed-up, FSDD-like prompt": ("gen_fsdd_cached", "gen_fsdd_uncached"),
    "KV cache speed-up, ESC-like prompt": ("gen_esc_cached", "gen_esc_uncached"),
}
DATASETS = {"fsdd": ("FSDD", "fsdd", {"split": "test"}),  # name -> (shown as, data.load name, its arguments)
            "esc": ("ESC-10", "esc10", {"split": "test", "test_fold": 1})}


# ---------------------------------------------------------------- phase 1: the encoder, padded vs. real length

def clips(name: str, n: int) -> tuple[list[Any], int, str]:
    """The first ``n`` waveforms of FSDD test / ESC-10 fold 1, their sample rate, and what they are.

    The loaders fall back to their synthetic stand-in tones when MMCOURSE_DATA_DIR has no real data;
    the description says so, and the table shows it.
    """
    from mmcourse import data

    pretty, dataset, kwargs = DATASETS[name]
    ds = data.load(dataset, **kwargs)
    if len(ds) < n:
        raise RuntimeError(f"{pretty} {kwargs} has only {len(ds)} clips, the benchmark needs {n}; use --quick "
                           "or fetch the real data (python -m mmcourse fetch data)")
    samples = [ds[i] for i in range(n)]
    rates = {s["sample_rate"] for s in samples}
    if len(rates) != 1:
        raise RuntimeError(f"{pretty} clips have mixed sample rates {sorted(rates)}; whisper_encode takes one")
    kind = "real" if ds.info.source == "real" else "synthetic tones"
    return [s["audio"] for s in samples], rates.pop(), f"{n} {pretty} clip{'s' * (n != 1)} ({kind})"


def encoder_row(dev, size: dict, name: str, trim: bool) -> dict:
    """Clips/s of ``audio.whisper_encode(pool=False)``, 30-s padding (``trim=False``) or the real length."""
    from mmcourse import audio, pretrained

    model, processor = pretrained.load("audio", device=dev)
    waves, rate, source = clips(name, size[f"{name}_clips"])
    step = size["enc_batch"]

    def run() -> list[int]:  # encoder frames of each clip
        frames = []
        with _common.autocast(dev):
            for i in range(0, len(waves), step):
                out = audio.whisper_encode(model, processor, waves[i:i + step], rate, pool=False, trim=trim)
                frames += [f.shape[0] for f in out]  # a (B, 1500, d) tensor or a list of (T_i, d)
        return frames

    start_rss = _common.memory(dev, reset=True)
    times, frames = _common.timed(run, dev, size["repeats"])
    sec = statistics.median(times)
    return {"value": len(waves) / sec, "seconds": sec, "times": times, "frames_per_clip": frames,
            "mean_frames": sum(frames) / len(frames), "clip_samples": [len(w) for w in waves], "sample_rate": rate,
            "inputs": source, "start_rss_mb": start_rss, "n": source, "model": pretrained.describe("audio")}


# ---------------------------------------------------------------- phase 2: generation, KV cache vs. none

def gen_row(dev, size: dict, name: str, use_cache: bool) -> dict:
    """Tokens/s of ``mllm.generate`` on a batch of audio prompts, forced to ``new_tokens`` tokens each."""
    import torch

    from mmcourse import mllm, pretrained

    lm, tok = pretrained.load("llm", device=dev)
    torch.manual_seed(0)
    projector = mllm.Projector(STACK * WHISPER_DIM, lm.config.hidden_size)  # untrained: speed only
    model = mllm.MultimodalLM(lm, {"audio": projector}).to(dev).freeze_lm()
    b, n = size["gen_batch"], size["new_tokens"]
    frames = torch.randn(b, GEN_FRAMES[name], WHISPER_DIM, generator=torch.Generator().manual_seed(0))
    feats = mllm.stack_frames(frames, STACK).to(dev)  # (B, frames // k, k * 384)
    prompt = mllm.prompt_ids(tok, PROMPT, {"audio": feats.shape[1]}, system="")
    batch = mllm.collate([{"input_ids": prompt} for _ in range(b)], tok.pad_token_id, side="left")
    ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    # cached: HF masks eos until min_new_tokens; uncached: eos_token_id=[] makes our loop never stop early
    force = {"min_new_tokens": n} if use_cache else {"eos_token_id": []}

    def run() -> list[list[int]]:
        with _common.autocast(dev):
            return mllm.generate(model, ids, mask, {"audio": feats}, max_new_tokens=n, use_cache=use_cache, **force)

    start_rss = _common.memory(dev, reset=True)
    times, out = _common.timed(run, dev, size["repeats"])
    lengths = [len(row) for row in out]
    if set(lengths) != {n}:
        raise RuntimeError(f"generation stopped early: new tokens per row {lengths}, expected {n} each; "
                           "the tokens/s of the two rows would not be comparable")
    sec = statistics.median(times)
    return {"value": sum(lengths) / sec, "seconds": sec, "times": times, "generated_tokens": sum(lengths),
            "new_tokens_per_row": lengths, "prompt_tokens": len(prompt), "audio_tokens": feats.shape[1],
            "start_rss_mb": start_rss, "n": f"B={b} x {n} new, {feats.shape[1]} audio tok",
            "model": pretrained.describe("llm")}


# ---------------------------------------------------------------- phase 3: the token budget (no timing)

def budget() -> dict[str, dict[str, float]]:
    """LLM audio tokens per second of audio and per clip, for each stacking factor k (notebook 10, §Length).

    Frames from ``audio.whisper_frames`` (50 per second, at most 1,500); tokens from
    ``mllm.stack_frames`` itself (``T // k``: a partial last group is dropped).
    """
    import torch

    from mmcourse import audio, mllm

    out: dict[str, dict[str, float]] = {"tokens per second": {}} | {clip: {} for clip in BUDGET_CLIPS}
    for k in BUDGET_K:
        out["tokens per second"][f"k={k}"] = FRAMES_PER_SECOND / k
        for clip, seconds in BUDGET_CLIPS.items():
            frames = audio.whisper_frames(round(seconds * 16000), 16000)
            out[clip][f"k={k}"] = mllm.stack_frames(torch.zeros(1, frames, 1), k).shape[1]
    return out


def budget_table(b: dict[str, dict[str, float]]) -> str:
    """The printed token budget: one line per clip, one column per k."""
    lines = [f"{'audio tokens':<24}" + "".join(f" {f'k={k}':>7}" for k in BUDGET_K)]
    for what, by_k in b.items():
        lines.append(f"{what:<24}" + "".join(f" {by_k[f'k={k}']:>7g}" for k in BUDGET_K))
    return "\n".join(lines)


# ---------------------------------------------------------------- child side, parent side, the table

def run_row(key: str, device: str, quick: bool, threads: int | None) -> dict:
    """Measure one row in this process (the child side of ``_common.measure``)."""
    import torch

    from mmcourse import runtime

    if threads:
        torch.set_num_threads(threads)
    dev = runtime.device(device)
    size = SIZES["quick" if quick else "full"]
    phase, name, variant = key.split("_") if key.startswith("gen_") else ("enc", *key.split("_"))
    if phase == "gen":
        out = gen_row(dev, size, name, use_cache=variant == "cached")
    else:
        out = encoder_row(dev, size, name, trim=variant == "trimmed")
    return _common.finish_row(out, key, dev)


def table(rows: dict[str, dict], ratios: dict[str, float]) -> str:
    """The printed table: one line per row (with its audio tokens or frames), then the ratios."""
    cuda = _common.has_cuda(rows)
    head = (f"{'phase':<11} {'row':<37} {'size':<34} {'audio tok':>9} {'figure':>9} {'unit':<9} "
            + _common.measured_head(cuda))
    lines = [head]
    for key, r in rows.items():
        phase, label, unit = ROWS[key]
        tokens = r["mean_frames"] if phase == "encoder" else r["audio_tokens"]
        lines.append(f"{phase:<11} {label:<37} {r['n']:<34} {tokens:>9.1f} {r['value']:>9.3g} {unit:<9} "
                     + _common.measured_cells(r, cuda))
    lines += [f"{'ratio':<11} {name:<71} {value:>8.2f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def notes(rows: dict[str, dict], size: dict) -> list[str]:
    """What the numbers mean (printed under the table)."""
    first, gen = rows["fsdd_padded"], rows["gen_fsdd_cached"]
    seconds = {name: statistics.mean(rows[f"{name}_padded"]["clip_samples"]) / rows[f"{name}_padded"]["sample_rate"]
               for name in DATASETS}
    return [f"median of {size['repeats']} timed runs after 1 warm-up; {first['threads']} torch threads on "
           f"{first['device']}",
           f"encoder: {first['model']}; clips in memory (decoding not timed), resampled to 16 kHz inside the timed "
           f"call, batches of {size['enc_batch']}; mean clip length FSDD {seconds['fsdd']:.2f} s, ESC-10 "
           f"{seconds['esc']:.2f} s",
           "audio tok: encoder frames per clip (mean) on encoder rows: 1,500 with 30-s padding, 50 per second "
           "of audio on the real length; on generation rows, audio tokens in the prompt (frames stacked k=4)",
           f"LLM: {gen['model']}; untrained Projector({STACK}*{WHISPER_DIM}, 576) on random frames; prompt "
           f"{gen['prompt_tokens']} (FSDD-like) / {rows['gen_esc_cached']['prompt_tokens']} (ESC-like) tokens; "
           f"every generation row made exactly {size['new_tokens']} new tokens per prompt (checked)"]


def main(argv: list[str] | None = None) -> int:
    def token_budget() -> tuple[str, dict]:
        tokens = budget()
        return (f"\naudio token budget (Whisper: {FRAMES_PER_SECOND} frames/s, 1,500 for 30 s; k frames stacked per "
                "token, a partial last group dropped)\n" + budget_table(tokens), {"budget": tokens})

    return _common.main(argv, script=__file__, doc=__doc__, title="notebook 10 audio-LLM benchmark", labels=ROWS,
                        ratios=RATIOS, sizes=SIZES, run_row=run_row, table=table, notes=notes, extra=token_budget)


if __name__ == "__main__":
    raise SystemExit(main())
