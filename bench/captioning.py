"""Captioning speed and memory, figures and ratios side by side (``make bench``; notebook 08).

Three pairs, each row measured in a fresh subprocess (so its peak memory is its own):

1. Generation (notebook 08, §mini-LLaVA / mllm §Generation): SmolLM2-135M with an untrained
   ``mllm.Projector(1280, 576, hidden=1024)`` on 9 image tokens (random MobileNetV2-like grid
   features pooled 7x7 -> 3x3), a batch of identical left-padded prompts, ``mllm.generate`` with
   the KV cache vs. our uncached greedy loop, both forced to the same number of new tokens
   (cached: ``min_new_tokens``; uncached: no eos, so it never stops early; the lengths are
   checked). Then a fresh ``captioning.CaptionDecoder`` (d_model 384, 3 layers, vocab 2500),
   whose decoding recomputes the prefix at every step: captions/s, greedy vs. beam 3, via
   ``captioning.caption`` (§6).
2. A training step of the CaptionDecoder (§4-5) on cached fp16 grid features held in memory vs.
   a step that first recomputes the frozen MobileNetV2 grid (``captioning.grid_tokens``, §3)
   from 224-px images held in memory (real Flickr8k val images when MMCOURSE_DATA_DIR has them,
   else random tensors; the table says which). Image decoding is not timed.
3. Peak memory of each row's process: resident set size high-water mark (``ru_maxrss``: Python,
   torch, the models and the data included; "at start" is the same mark just before the timed
   runs), and ``torch.cuda.max_memory_allocated`` on CUDA (tensors only, not the CUDA context).

Every figure is the median of several timed repeats after a warm-up run; "spread" (slowest /
fastest repeat) shows how steady the machine was, and the table warns when it was not.

    python bench/captioning.py [--quick] [--device cpu] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (bench/_common.py: timing, memory, one process per row, the command line)

PROMPT = "<image>Describe the image in one sentence."
IMAGE_TOKENS = 9
VOCAB, D_MODEL, LAYERS, HEADS, MAX_LEN = 2500, 384, 3, 6, 24  # the full-profile decoder of notebook 08
SIZES = {  # quick: a smoke test well under a minute; full: the notebook's sizes
    "quick": {"gen_batch": 2, "new_tokens": 6, "images": 8, "train_batch": 4, "repeats": 2},
    "full": {"gen_batch": 8, "new_tokens": 25, "images": 200, "train_batch": 64, "repeats": 3},
}
# row key -> (phase, label, unit); pairs below give the ratios
ROWS = {
    "llava_cached": ("generation", "mini-LLaVA generate, KV cache", "tokens/s"),
    "llava_uncached": ("generation", "mini-LLaVA generate, no cache", "tokens/s"),
    "decoder_greedy": ("generation", "CaptionDecoder caption, greedy", "captions/s"),
    "decoder_beam3": ("generation", "CaptionDecoder caption, beam 3", "captions/s"),
    "train_cached": ("training", "train step, cached features", "s/step"),
    "train_recompute": ("training", "train step, recompute MobileNetV2", "s/step"),
}
RATIOS = {  # name -> (numerator row, denominator row): every ratio is "how many times more/faster"
    "KV cache speed-up (tokens/s)": ("llava_cached", "llava_uncached"),
    "greedy vs. beam 3 (captions/s)": ("decoder_greedy", "decoder_beam3"),
    "recompute vs. cached (s/step)": ("train_recompute", "train_cached"),
}


# ---------------------------------------------------------------- inputs

def random_grid(n: int, seed: int = 0):
    """``(n, 49, 1280)`` fp16 stand-ins for cached MobileNetV2 grid features (post-ReLU6: in [0, 6])."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return (6 * torch.rand(n, 49, 1280, generator=gen) ** 4).half()  # mostly small, as ReLU6 outputs are


def fresh_decoder(dev, dropout: float = 0.1):
    """A fresh CaptionDecoder of the full profile (notebook 08, §4)."""
    import torch

    from mmcourse import captioning

    torch.manual_seed(0)
    return captioning.CaptionDecoder(VOCAB, d_model=D_MODEL, n_layers=LAYERS, n_heads=HEADS, dropout=dropout,
                                     max_len=MAX_LEN).to(dev)


# ---------------------------------------------------------------- phase 1: generation

def llava_row(dev, size: dict, use_cache: bool) -> dict:
    """Tokens/s of ``mllm.generate`` on a batch of image prompts, forced to ``new_tokens`` tokens each."""
    import torch

    from mmcourse import mllm, pretrained

    lm, tok = pretrained.load("llm", device=dev)
    torch.manual_seed(0)
    projector = mllm.Projector(1280, lm.config.hidden_size, hidden=1024)  # untrained: speed only
    model = mllm.MultimodalLM(lm, {"image": projector}).to(dev).freeze_lm()
    b, n = size["gen_batch"], size["new_tokens"]
    feats = mllm.pool_grid(random_grid(b).float(), (7, 7), (3, 3)).to(dev)  # (B, 9, 1280)
    prompt = mllm.prompt_ids(tok, PROMPT, {"image": IMAGE_TOKENS}, system="")
    batch = mllm.collate([{"input_ids": prompt} for _ in range(b)], tok.pad_token_id, side="left")
    ids, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    # cached: HF masks eos until min_new_tokens; uncached: eos_token_id=[] makes our loop never stop early
    force = {"min_new_tokens": n} if use_cache else {"eos_token_id": []}

    def run() -> list[list[int]]:
        with _common.autocast(dev):
            return mllm.generate(model, ids, mask, {"image": feats}, max_new_tokens=n, use_cache=use_cache, **force)

    start_rss = _common.memory(dev, reset=True)
    times, out = _common.timed(run, dev, size["repeats"])
    lengths = [len(row) for row in out]
    if set(lengths) != {n}:
        raise RuntimeError(f"generation stopped early: new tokens per row {lengths}, expected {n} each; "
                           "the tokens/s of the two rows would not be comparable")
    sec = statistics.median(times)
    return {"value": sum(lengths) / sec, "seconds": sec, "times": times, "generated_tokens": sum(lengths),
            "new_tokens_per_row": lengths, "prompt_tokens": len(prompt), "start_rss_mb": start_rss,
            "n": f"B={b} x {n} new tokens", "model": pretrained.describe("llm")}


def decoder_row(dev, size: dict, beam: int) -> dict:
    """Captions/s of ``captioning.caption`` (prefix recomputed at every step) on random grid features."""
    from mmcourse import captioning

    model = fresh_decoder(dev)
    vocab = captioning.Vocab([captioning.PAD, captioning.BOS, captioning.EOS, captioning.UNK]
                             + [f"w{i}" for i in range(VOCAB - 4)])
    feats = random_grid(size["images"]).numpy()

    def run() -> list[str]:
        with _common.autocast(dev):
            return captioning.caption(model, feats, vocab, beam=beam, batch_size=size["images"])[0]

    start_rss = _common.memory(dev, reset=True)
    times, texts = _common.timed(run, dev, size["repeats"])
    sec = statistics.median(times)
    words = [len(t.split()) for t in texts]
    return {"value": len(texts) / sec, "seconds": sec, "times": times, "mean_words": sum(words) / len(words),
            "start_rss_mb": start_rss, "n": f"{len(texts)} images, beam {beam}"}


# ---------------------------------------------------------------- phase 2: training

def step_images(n: int) -> tuple[Any, str]:
    """``n`` 224-px images in [0, 1] in memory: the first Flickr8k val images if real, else random tensors."""
    import torch

    from mmcourse import data

    try:
        ds = data.load("flickr8k", split="val", view="image", image_size=224)
        if ds.info.source == "real" and len(ds) >= n:
            return torch.stack([ds[i]["image"] for i in range(n)]), "Flickr8k val images"
    except Exception as exc:  # no data at all: say so in the table, time random images instead
        print(f"note: Flickr8k not loadable ({str(exc).splitlines()[0]}); using random images", file=sys.stderr)
    return torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(0)), "random tensors"


def random_caption_ids(n: int):
    """``(n, MAX_LEN)`` random captions: ``<bos>``, 8..22 words, ``<eos>``, right-padded (as Vocab.encode_batch)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    tokens = torch.zeros(n, MAX_LEN, dtype=torch.long)
    for row, words in enumerate(torch.randint(8, MAX_LEN - 1, (n,), generator=gen).tolist()):
        tokens[row, 0], tokens[row, words + 1] = 1, 2
        tokens[row, 1:words + 1] = torch.randint(4, VOCAB, (words,), generator=gen)
    return tokens


def train_row(dev, size: dict, recompute: bool) -> dict:
    """Seconds per AdamW step of the CaptionDecoder, features cached (fp16 in memory) or recomputed."""
    import torch

    from mmcourse import captioning, pretrained

    b = size["train_batch"]
    model = fresh_decoder(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = random_caption_ids(b).to(dev)
    cached, images, source, cnn = random_grid(b), None, "random fp16 features", None
    if recompute:
        cnn = pretrained.load("image", device=dev)[0].eval().requires_grad_(False)
        images, source = step_images(b)

    def step() -> float:
        with _common.autocast(dev):
            # grid_tokens runs under inference_mode; .half() outside it gives a normal tensor, as the cache holds
            feats = captioning.grid_tokens(cnn, images).half() if recompute else cached
            loss = captioning.loss_fn(model, (feats.to(dev), tokens))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    start_rss = _common.memory(dev, reset=True)
    times, loss = _common.timed(step, dev, size["repeats"] + 2)
    sec = statistics.median(times)
    return {"value": sec, "seconds": sec, "times": times, "loss": loss, "inputs": source,
            "start_rss_mb": start_rss, "n": f"batch {b}" + (", 224 px" if recompute else ", (49, 1280) fp16")}


def run_row(key: str, device: str, quick: bool, threads: int | None) -> dict:
    """Measure one row in this process (the child side of ``_common.measure``)."""
    import torch

    from mmcourse import runtime

    if threads:
        torch.set_num_threads(threads)
    dev = runtime.device(device)
    size = SIZES["quick" if quick else "full"]
    rows = {"llava_cached": lambda: llava_row(dev, size, use_cache=True),
            "llava_uncached": lambda: llava_row(dev, size, use_cache=False),
            "decoder_greedy": lambda: decoder_row(dev, size, beam=1),
            "decoder_beam3": lambda: decoder_row(dev, size, beam=3),
            "train_cached": lambda: train_row(dev, size, recompute=False),
            "train_recompute": lambda: train_row(dev, size, recompute=True)}
    return _common.finish_row(rows[key](), key, dev)


# ---------------------------------------------------------------- the table

def table(rows: dict[str, dict], ratios: dict[str, float]) -> str:
    """The printed table: one line per row, then the ratios."""
    cuda = _common.has_cuda(rows)
    head = f"{'phase':<11} {'row':<35} {'size':<30} {'figure':>9} {'unit':<10} " + _common.measured_head(cuda)
    lines = [head]
    for key, r in rows.items():
        phase, label, unit = ROWS[key]
        lines.append(f"{phase:<11} {label:<35} {r['n']:<30} {r['value']:>9.3g} {unit:<10} "
                     + _common.measured_cells(r, cuda))
    lines += [f"{'ratio':<11} {name:<66} {value:>8.2f}x" for name, value in ratios.items()]
    return "\n".join(lines)


def notes(rows: dict[str, dict], size: dict) -> list[str]:
    """What the numbers mean (printed under the table, before the notes of every benchmark)."""
    return [f"median of {size['repeats']} timed runs ({size['repeats'] + 2} for training steps) after 1 warm-up; "
           f"{rows['llava_cached']['threads']} torch threads on {rows['llava_cached']['device']}",
           f"LLM: {rows['llava_cached']['model']}; prompt {rows['llava_cached']['prompt_tokens']} tokens "
           f"(9 image tokens); every row generated exactly {size['new_tokens']} new tokens (checked)",
           f"CaptionDecoder (fresh, d_model {D_MODEL}, {LAYERS} layers, vocab {VOCAB}) on random features: mean "
           f"caption length greedy {rows['decoder_greedy']['mean_words']:.1f}, beam 3 "
           f"{rows['decoder_beam3']['mean_words']:.1f} words (max 20): captions/s depends on it",
           f"train step inputs: cached = {rows['train_cached']['inputs']}; recompute = "
           f"{rows['train_recompute']['inputs']} through frozen MobileNetV2 (decoding them not timed)"]


def main(argv: list[str] | None = None) -> int:
    return _common.main(argv, script=__file__, doc=__doc__, title="notebook 08 captioning benchmark", labels=ROWS,
                        ratios=RATIOS, sizes=SIZES, run_row=run_row, table=table, notes=notes)


if __name__ == "__main__":
    raise SystemExit(main())
