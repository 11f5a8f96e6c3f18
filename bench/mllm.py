"""Capstone multimodal-LLM speed and memory: cached features vs. encoders on the fly (``make bench``; notebook 11).

Each row is measured in a fresh subprocess (so its peak memory is its own):

1. One stage-2 training step of notebook 11's model (SmolLM2-135M with LoRA r = 8 on q/v, an
   ``mllm.GridProjector(1280, 576)`` and an ``mllm.Projector(4*384, 576)``) on a batch of
   audio-visual examples (``<image><audio>Could this sound come from this scene?``): forward,
   backward and AdamW.
   - ``cached``: the frozen encoders' outputs come from memory, as the notebook reads them from
     its cache: MobileNetV2 grids ``(49, 1280)`` and 5-s Whisper frames stacked k = 4 ``(62, 1536)``.
   - ``on the fly``: every step first runs the frozen encoders on the raw inputs — MobileNetV2 on
     224-px images and Whisper tiny.en's encoder on 5-s waveforms at the real length
     (``audio.whisper_frames_trimmed``) — then the same training step.
   Steps/s and the speed-up; the inputs are random (pixels in [0, 1], noise at 16 kHz): only the
   shapes matter for the time.
2. The token budget (no timing): LLM input positions per example for each modality and task —
   an image through the GridProjector (16) against notebook 08's 49 cells, a 0.5-s digit, a 2-s
   spoken question and a 5-s sound at k = 4, and each prompt template of ``data.instruct`` in
   SmolLM2's chat template (empty system turn, as the notebook builds them).

Timing, memory and the child process are bench/_common.py's: every figure is the median of several
timed repeats after a warm-up run; "spread" (slowest / fastest repeat) shows how steady the machine
was; peak RSS is the row process's high-water mark, and ``torch.cuda.max_memory_allocated`` on CUDA.

    python bench/mllm.py [--quick] [--device cpu] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (bench/_common.py: timing, memory, one process per row, the command line)

STACK = 4  # Whisper frames per audio token (notebook 11)
WHISPER_DIM, FRAMES_PER_SECOND = 384, 50
GRID, GRID_DIM = (7, 7), 1280  # MobileNetV2's last feature map at 224 px
CLIP_SECONDS = 5.0  # an ESC-10 clip
SIZES = {  # quick: a smoke test well under a minute per row; full: notebook 11's training batch
    "quick": {"batch": 2, "repeats": 2},
    "full": {"batch": 16, "repeats": 3},
}
ROWS = {  # row key -> (phase, label, unit)
    "step_cached": ("training", "stage-2 step, cached features", "steps/s"),
    "step_onthefly": ("training", "stage-2 step, encoders on the fly", "steps/s"),
}
RATIOS = {"cached features vs. encoders on the fly": ("step_cached", "step_onthefly")}
BUDGET_CLIPS = {"0.5-s digit": 0.5, "2-s spoken question": 2.0, "5-s sound": 5.0}


# ---------------------------------------------------------------- phase 1: a training step

def model_and_batch(dev, b: int) -> tuple[Any, Any, dict]:
    """Notebook 11's stage-2 model (projectors + LoRA) and a collated batch of ``b`` audio-visual prompts."""
    import torch

    from mmcourse import lora, mllm, pretrained
    from mmcourse.data import instruct

    lm, tok = pretrained.load("llm", device=dev)
    torch.manual_seed(0)
    d = lm.config.hidden_size
    model = mllm.MultimodalLM(lm, {"image": mllm.GridProjector(GRID_DIM, d, grid=GRID),
                                   "audio": mllm.Projector(STACK * WHISPER_DIM, d)}).to(dev).freeze_lm()
    lora.add_lora(lm, ["q_proj", "v_proj"], r=8, alpha=16)
    model.to(dev)
    n_audio = int(CLIP_SECONDS * FRAMES_PER_SECOND) // STACK
    one = mllm.example(tok, instruct.AV, "yes", {"image": model.projectors["image"].n_tokens, "audio": n_audio},
                       system="")
    batch = mllm.collate([one] * b, tok.pad_token_id)
    return model, tok, batch


def step_row(dev, size: dict, on_the_fly: bool) -> dict:
    """Steps/s of forward + backward + AdamW on ``batch`` audio-visual examples."""
    import numpy as np
    import torch

    from mmcourse import audio, captioning, mllm, pretrained

    b = size["batch"]
    model, _, batch = model_and_batch(dev, b)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids, mask, labels = (batch[k].to(dev) for k in ("input_ids", "attention_mask", "labels"))
    n_audio = int(CLIP_SECONDS * FRAMES_PER_SECOND) // STACK
    if on_the_fly:
        cnn, _ = pretrained.load("image", device=dev)
        cnn.eval()
        whisper, processor = pretrained.load("audio", device=dev)
        images = torch.rand(b, 3, 224, 224, generator=g)
        waves = [np.random.default_rng(i).normal(0, 0.1, int(CLIP_SECONDS * 16000)).astype(np.float32) for i in range(b)]
        inputs = f"{b} images 224 px + {b} clips {CLIP_SECONDS:g} s (encoded every step)"
    else:
        grids = torch.rand(b, GRID[0] * GRID[1], GRID_DIM, generator=g) * 6  # post-ReLU6-like
        frames = torch.randn(b, n_audio, STACK * WHISPER_DIM, generator=g)
        inputs = f"{b} cached grids + {b} cached clips"

    def features() -> dict:
        if not on_the_fly:
            return {"image": grids.to(dev), "audio": frames.to(dev)}
        image = captioning.grid_tokens(cnn, images).clone().to(dev)  # (B, 49, 1280); clone: out of inference mode
        clips = [audio.whisper_frames_trimmed(whisper, processor, w, 16000) for w in waves]  # (250, 384) each
        return {"image": image, "audio": torch.stack([mllm.stack_frames(c[None], STACK)[0] for c in clips]).to(dev)}

    def run() -> float:
        with _common.autocast(dev):
            loss = model(ids, mask, labels=labels, features=features()).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    start_rss = _common.memory(dev, reset=True)
    times, loss = _common.timed(run, dev, size["repeats"])
    sec = statistics.median(times)
    return {"value": 1 / sec, "seconds": sec, "times": times, "loss": loss, "batch": b,
            "prompt_tokens": int(ids.shape[1]), "start_rss_mb": start_rss, "n": inputs,
            "model": pretrained.describe("llm")}


# ---------------------------------------------------------------- phase 2: the token budget (no timing)

def budget() -> dict[str, int]:
    """LLM input positions per input and per prompt template (notebook 11, §The model)."""
    import torch

    from mmcourse import audio, mllm, pretrained
    from mmcourse.data import instruct

    _, tok = pretrained.load("llm")
    out = {"image, GridProjector (7x7 -> 4x4)": mllm.GridProjector(8, 8).n_tokens,
           "image, all grid cells (notebook 08)": GRID[0] * GRID[1]}
    for clip, seconds in BUDGET_CLIPS.items():
        frames = audio.whisper_frames(round(seconds * 16000), 16000)
        out[f"audio, {clip} (k={STACK})"] = mllm.stack_frames(torch.zeros(1, frames, 1), STACK).shape[1]
    prompts = {"describe": instruct.DESCRIBE, "yesno": instruct.YESNO["is_there"].format(o="dog"),
               "colour": instruct.COLOUR, "digit": instruct.DIGIT, "sound": instruct.SOUND, "av": instruct.AV,
               "spoken": instruct.SPOKEN}
    for task, prompt in prompts.items():
        text = mllm.without(prompt, list(mllm.MARKER))
        out[f"text of the {task} prompt"] = len(mllm.prompt_ids(tok, text, {}, system=""))
    return out


# ---------------------------------------------------------------- child side, the table

def run_row(key: str, device: str, quick: bool, threads: int | None) -> dict:
    """Measure one row in this process (the child side of ``_common.measure``)."""
    import torch

    from mmcourse import runtime

    if threads:
        torch.set_num_threads(threads)
    dev = runtime.device(device)
    out = step_row(dev, SIZES["quick" if quick else "full"], on_the_fly=key == "step_onthefly")
    return _common.finish_row(out, key, dev)


def table(rows: dict[str, dict], ratios: dict[str, float]) -> str:
    """The printed table: one line per row, then the ratio."""
    cuda = _common.has_cuda(rows)
    head = (f"{'phase':<9} {'row':<36} {'inputs':<58} {'positions':>9} {'figure':>8} {'unit':<8} "
            + _common.measured_head(cuda))
    lines = [head]
    for key, r in rows.items():
        phase, label, unit = ROWS[key]
        lines.append(f"{phase:<9} {label:<36} {r['n']:<58} {r['prompt_tokens']:>9} {r['value']:>8.3g} {unit:<8} "
                     + _common.measured_cells(r, cuda))
    lines += [f"{'ratio':<9} {name:<113} {value:>7.2f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def notes(rows: dict[str, dict], size: dict) -> list[str]:
    """What the numbers mean (printed under the table)."""
    first = rows["step_cached"]
    return [f"median of {size['repeats']} timed runs after 1 warm-up; {first['threads']} torch threads on "
            f"{first['device']}",
            f"LLM: {first['model']}, LoRA r=8 on q/v, GridProjector + Projector trained; batch {size['batch']} "
            f"audio-visual prompts of {first['prompt_tokens']} positions each (16 image + "
            f"{int(CLIP_SECONDS * FRAMES_PER_SECOND) // STACK} audio tokens + text)",
            "on the fly: MobileNetV2 (224 px) and Whisper tiny.en's encoder (real length) run in every step, in "
            "inference mode; cached: their outputs are in memory, as notebook 11 reads them from disk",
            "inputs are random pixels and noise: JPEG decoding, resizing and audio decoding are not timed (the "
            "notebook's cache saves those too)"]


def main(argv: list[str] | None = None) -> int:
    def token_budget() -> tuple[str, dict]:
        tokens = budget()
        return ("\nLLM input positions per input (Whisper: 50 frames/s, k frames stacked per token)\n"
                + "\n".join(f"{name:<40} {n:>5}" for name, n in tokens.items()), {"budget": tokens})

    return _common.main(argv, script=__file__, doc=__doc__, title="notebook 11 multimodal-LLM benchmark", labels=ROWS,
                        ratios=RATIOS, sizes=SIZES, run_row=run_row, table=table, notes=notes, extra=token_budget)


if __name__ == "__main__":
    raise SystemExit(main())
