"""Image captioning as conditional language modelling (notebook 08_image_captioning).

Section by section:

* §2 "Words and labels": :class:`Vocab` (word-level, words seen at least 5 times in train),
  :func:`shift_labels` (teacher forcing: inputs ``w_<t``, targets ``w_t``, −100 on padding).
* §3 "Visual tokens": :func:`grid_features` — frozen MobileNetV2's last feature map, 7 × 7 × 1280 at
  224 px, as 49 tokens, computed once and cached in fp16 keyed by the weights, the images and the size.
* §4 "A Transformer decoder": :class:`CaptionDecoder` (causal self-attention + cross-attention to
  the visual tokens, built from :class:`mmcourse.attention.MultiHeadAttention`), :func:`loss_fn`.
* §6 "Decoding": :func:`greedy`, :func:`beam_search` (length-normalised, batched over images),
  :func:`caption` (features → strings); self-critical training on CIDEr-D: :func:`sample`,
  :func:`scst_loss`.
* §7 "Metrics": :func:`score` — BLEU-1..4, ROUGE-L and CIDEr-D of :mod:`mmcourse.metrics` on one set.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcourse import metrics
from mmcourse.attention import MultiHeadAttention, causal_mask, merge_heads, scaled_dot_product_attention, split_heads

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
StepFn = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------- §2 words and labels

@dataclass
class Vocab:
    """Word-level vocabulary (notebook 08, §2): index 0–3 are ``<pad> <bos> <eos> <unk>``.

    Words are :func:`mmcourse.metrics.caption_tokens` — the same lowercasing and punctuation
    stripping the metrics use, so a generated caption is scored exactly as it was produced.
    """

    words: list[str]

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Sequence[str], min_count: int = 5) -> "Vocab":
        """The specials, then every word seen at least ``min_count`` times, most frequent first."""
        counts = Counter(w for c in captions for w in metrics.caption_tokens(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, BOS, EOS, UNK] + kept)

    def __len__(self) -> int:
        return len(self.words)

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def encode(self, caption: str, max_len: int) -> list[int]:
        """``<bos> w_1 … w_n <eos>``, cut to at most ``max_len`` ids (the ``<eos>`` is kept), unknown → ``<unk>``."""
        ids = [self.index.get(w, self.unk_id) for w in metrics.caption_tokens(caption)][: max_len - 2]
        return [self.bos_id, *ids, self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Words up to the first ``<eos>``; ``<bos>`` and ``<pad>`` are dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                out.append(self.words[i])
        return " ".join(out)

    def encode_batch(self, captions: Sequence[str], max_len: int) -> torch.Tensor:
        """``(len(captions), max_len)`` ids, right-padded with ``<pad>``."""
        out = torch.full((len(captions), max_len), self.pad_id, dtype=torch.long)
        for row, caption in enumerate(captions):
            ids = self.encode(caption, max_len)
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def coverage(self, captions: Sequence[str]) -> float:
        """Share of word occurrences in ``captions`` that are in the vocabulary (not ``<unk>``)."""
        tokens = [w for c in captions for w in metrics.caption_tokens(c)]
        return sum(w in self.index for w in tokens) / max(1, len(tokens))


def shift_labels(tokens: torch.Tensor, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing (notebook 08, §2): inputs ``tokens[:, :-1]``, labels ``tokens[:, 1:]`` with −100 on padding.

    Position ``t`` of the input sees ``w_0 … w_t`` and must predict ``w_{t+1}``. Padding is not a
    word to learn: ``cross_entropy(..., ignore_index=-100)`` leaves those positions out of the loss.
    """
    labels = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad_id, -100)
    return tokens[:, :-1], labels


# ---------------------------------------------------------------- §3 visual tokens

def grid_tokens(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """MobileNetV2's last feature map as tokens: ``(B, 3, S, S)`` in [0, 1] → ``(B, (S/32)², 1280)``.

    The spatial grid is flattened in raster order (row by row), so token ``7·r + c`` covers the
    32 × 32-pixel cell in row ``r``, column ``c`` of a 224-px image (notebook 08, §3).
    """
    from mmcourse.data.transforms import normalize

    dev = next(model.parameters()).device
    with torch.inference_mode():
        fmap = model.features(normalize(images).to(dev))     # (B, 1280, S/32, S/32)
    return fmap.flatten(2).transpose(1, 2).cpu()               # (B, 49, 1280)


def grid_features_key(model: nn.Module, dataset, indices: Sequence[int], image_size: int) -> dict:
    """What :func:`grid_features` caches under: the weights' sha256, the image ids in order, the size."""
    from mmcourse import pretrained

    ids = [dataset.records[int(i)]["image_id"] if hasattr(dataset, "records") else str(i) for i in indices]
    return {"weights": pretrained.weights_key(model), "images": ids, "image_size": image_size,
            "source": dataset.info.source, "what": "mobilenet_v2 grid fp16 v1"}


def grid_features(model: nn.Module, dataset, indices: Sequence[int], image_size: int, chunk: int = 32,
                  use_cache: bool = True, progress: bool = True) -> np.ndarray:
    """Cached fp16 grid features ``(len(indices), 49, 1280)`` of ``dataset[i]["image"]`` (notebook 08, §3).

    The cache key holds :func:`mmcourse.pretrained.weights_key` of ``model``, the image ids in
    order and ``image_size``: another model, subset, order or size never gets stale features.
    fp16 halves the disk and memory (8,000 images: 1.0 GB instead of 2.0 GB); the features are
    post-ReLU6 activations in [0, 6], where fp16's 11 significant bits lose nothing that matters.
    """
    from tqdm.auto import tqdm

    from mmcourse.alignment import cached_array

    key = grid_features_key(model, dataset, indices, image_size)

    def compute() -> np.ndarray:
        out = []
        for start in tqdm(range(0, len(indices), chunk), desc="MobileNetV2 grid features", disable=not progress,
                          leave=False):
            batch = torch.stack([dataset[int(i)]["image"] for i in indices[start:start + chunk]])
            out.append(grid_tokens(model, batch).half().numpy())
        return np.concatenate(out) if out else np.zeros((0, (image_size // 32) ** 2, 1280), np.float16)

    return cached_array("caption_grid", key, compute, use_cache=use_cache)


# ---------------------------------------------------------------- §4 the decoder

class DecoderLayer(nn.Module):
    """Pre-norm decoder layer (notebook 08, §4): causal self-attention, cross-attention to the image, MLP.

    ``x ← x + SelfAttn(LN(x))``, ``x ← x + CrossAttn(LN(x), memory)``, ``x ← x + MLP(LN(x))``.
    With ``keep_attention`` the last cross-attention weights ``(B, heads, T, N)`` stay in ``.cross_weights``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads)
        self.cross_attn = MultiHeadAttention(d_model, n_heads)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)
        self.keep_attention = False
        self.cross_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norms[0](x)
        x = x + self.drop(self.self_attn(h, mask=mask)[0])
        out, weights = self.cross_attn(self.norms[1](x), context=memory)
        if self.keep_attention:
            self.cross_weights = weights.detach()
        x = x + self.drop(out)
        return x + self.drop(self.mlp(self.norms[2](x)))

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of the image, ``(R, heads, N, d_head)`` each: computed once per image."""
        a = self.cross_attn
        return split_heads(a.k_proj(memory), a.num_heads), split_heads(a.v_proj(memory), a.num_heads)

    def step(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
             memory_kv: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One new position ``x (R, 1, d)`` with the KV cache ``past`` of the earlier ones (inference only, §6).

        The new query attends to the cached keys and its own: causal by construction, no mask needed.
        Returns the output and the cache extended by this position.
        """
        a, c = self.self_attn, self.cross_attn
        h = self.norms[0](x)
        q, k, v = (split_heads(proj(h), a.num_heads) for proj in (a.q_proj, a.k_proj, a.v_proj))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        x = x + a.out_proj(merge_heads(scaled_dot_product_attention(q, k, v)[0]))
        q = split_heads(c.q_proj(self.norms[1](x)), c.num_heads)
        x = x + c.out_proj(merge_heads(scaled_dot_product_attention(q, *memory_kv)[0]))
        return x + self.mlp(self.norms[2](x)), (k, v)


class CaptionDecoder(nn.Module):
    """Visual tokens → a small Transformer decoder → next-word logits (notebook 08, §4).

    ``forward(features (B, N, d_visual), tokens (B, T)) → logits (B, T, vocab)``. The visual tokens
    get a LayerNorm, a linear map to ``d_model`` and a learned position per grid cell; words get an
    embedding and a learned position. The output layer shares the word embedding's weights
    (Press & Wolf 2017), which saves ``vocab × d_model`` parameters and helps on small data.
    """

    def __init__(self, vocab_size: int, d_visual: int = 1280, n_visual: int = 49, d_model: int = 256,
                 n_layers: int = 3, n_heads: int = 4, d_ff: int | None = None, dropout: float = 0.1,
                 max_len: int = 24):
        super().__init__()
        self.max_len = max_len
        self.visual = nn.Sequential(nn.LayerNorm(d_visual), nn.Linear(d_visual, d_model))
        self.visual_pos = nn.Parameter(torch.zeros(n_visual, d_model))
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff or 4 * d_model, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size, bias=False)
        self.out.weight = self.embed.weight
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.visual_pos, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def encode(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, d_visual)`` (fp16 or fp32) → memory ``(B, N, d_model)``; computed once per image."""
        return self.drop(self.visual(features.float()) + self.visual_pos)

    def decode(self, tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` for the words ``tokens (B, T)`` given the image ``memory``."""
        T = tokens.shape[1]
        if T > self.max_len:
            raise ValueError(f"{T} tokens, but the decoder has positions for {self.max_len} (max_len)")
        x = self.drop(self.embed(tokens) + self.pos(torch.arange(T, device=tokens.device)))
        mask = causal_mask(T, device=tokens.device)
        for layer in self.layers:
            x = layer(x, memory, mask)
        return self.out(self.norm(x))

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(tokens, self.encode(features))

    def keep_attention(self, on: bool = True) -> None:
        """Store each layer's cross-attention weights in ``layer.cross_weights`` (the §8 attention maps)."""
        for layer in self.layers:
            layer.keep_attention = on
            layer.cross_weights = None


@torch.no_grad()
def cross_attention_maps(model: CaptionDecoder, features: torch.Tensor, tokens: torch.Tensor, layer: int = -1,
                         pad_id: int = 0) -> np.ndarray:
    """Where a caption's words look in the image (notebook 08, §8; notebook 12, §6): the cross-attention
    weights of ``layer`` for the caption ``tokens`` (teacher-forced, dropout off), averaged over the
    heads and the positions that predict a word (``<bos>`` … the last word, not ``<eos>`` or padding):
    ``(B, N)``, one weight per grid cell, each row summing to 1."""
    was_training = model.training
    model.eval()
    model.keep_attention(True)
    try:
        inputs, labels = shift_labels(tokens, pad_id)
        model(features, inputs)
        weights = model.layers[layer].cross_weights.float()          # (B, heads, T, N)
    finally:
        model.keep_attention(False)
        model.train(was_training)
    real = (labels != -100).float().to(weights.device)              # (B, T): positions that predict a word
    maps = (weights.mean(1) * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
    return maps.cpu().numpy()


def loss_fn(model: CaptionDecoder, batch: tuple[torch.Tensor, torch.Tensor], label_smoothing: float = 0.0,
            pad_id: int = 0) -> torch.Tensor:
    """Teacher-forced cross-entropy over the real words (notebook 08, §4); ``batch = (features, tokens)``."""
    features, tokens = batch
    inputs, labels = shift_labels(tokens, pad_id)
    logits = model(features, inputs)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                           label_smoothing=label_smoothing)


# ---------------------------------------------------------------- §6 decoding

def decoder_step(model: CaptionDecoder, features: torch.Tensor, repeat: int = 1, cache: bool = True) -> StepFn:
    """A step function for :func:`beam_search`: prefixes ``(B·repeat, t)`` → log-probabilities ``(B·repeat, V)``.

    Row ``r`` of the prefixes belongs to image ``r // repeat``; the image memory is computed once.
    ``cache=True``: a :class:`CachedStep` (KV cache); ``cache=False`` re-runs the decoder on the
    whole prefix at every step — the same numbers, O(t) times the work (``bench/captioning.py``).
    """
    if cache:
        return CachedStep(model, features, repeat)
    memory = model.encode(features).repeat_interleave(repeat, dim=0)

    def step(prefixes: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(model.decode(prefixes, memory)[:, -1].float(), dim=-1)

    return step


class CachedStep:
    """:func:`decoder_step` with a KV cache: each call runs the decoder on the *newest* word only (§6).

    Each layer keeps the self-attention keys and values of every position seen so far, and the
    cross-attention keys and values of the image (computed once). Beam search reorders its
    hypotheses between calls; the cache follows them by looking up each new prefix's parent
    (the prefix without its last word, within the same image), so the step function keeps
    :func:`beam_search`'s plain interface. Inference only: no dropout is applied.
    """

    def __init__(self, model: CaptionDecoder, features: torch.Tensor, repeat: int = 1):
        self.model, self.repeat = model, repeat
        memory = model.encode(features).repeat_interleave(repeat, dim=0)
        self.memory_kv = [layer.memory_kv(memory) for layer in model.layers]
        self.past: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.rows: dict[tuple, int] = {}

    def __call__(self, prefixes: torch.Tensor) -> torch.Tensor:
        R, t = prefixes.shape
        keys = [(r // self.repeat, tuple(p)) for r, p in enumerate(prefixes.tolist())]
        past: list = [None] * len(self.model.layers)
        if t > 1:
            try:
                parents = torch.tensor([self.rows[(b, p[:-1])] for b, p in keys], device=prefixes.device)
            except KeyError:
                raise ValueError("CachedStep must see every prefix grow by one word per call, as beam_search "
                                 "does; use decoder_step(..., cache=False) for arbitrary prefixes") from None
            past = [(k[parents], v[parents]) for k, v in self.past]
        m = self.model
        x = m.embed(prefixes[:, -1:]) + m.pos(torch.tensor([t - 1], device=prefixes.device))
        self.past = []
        for layer, kv, memory_kv in zip(m.layers, past, self.memory_kv):
            x, kv = layer.step(x, kv, memory_kv)
            self.past.append(kv)
        self.rows = {key: r for r, key in enumerate(keys)}
        return F.log_softmax(m.out(m.norm(x))[:, -1].float(), dim=-1)


def normalised(log_prob: torch.Tensor, length: torch.Tensor | float, alpha: float) -> torch.Tensor:
    """Length-normalised score ``log p(y) / |y|^α`` (α = 0: the raw log-probability; notebook 08, §6).

    Every extra word multiplies p(y) by a number below 1, so raw log-probabilities favour short
    captions; dividing by the length (α = 1) or a power of it (0 < α < 1) removes that bias.
    """
    return log_prob / torch.as_tensor(length, dtype=log_prob.dtype) ** alpha


@torch.no_grad()
def beam_search(step: StepFn, batch_size: int, bos: int, eos: int, beam: int = 3, max_len: int = 20,
                alpha: float = 0.0) -> tuple[list[list[int]], list[float]]:
    """Beam search for ``batch_size`` sequences at once (notebook 08, §6); returns (tokens, log-probabilities).

    ``step(prefixes (batch_size·beam, t)) → log-probs (batch_size·beam, V)``; rows are image-major
    (``beam`` rows per sequence). Each step extends every live hypothesis by every word, scores the
    candidates by :func:`normalised` log-probability and keeps the best ``beam`` per sequence. A
    hypothesis that emits ``<eos>`` is finished: it stays in the beam, extends only by ``<eos>`` at
    log-probability 0, and keeps its length. ``beam = 1`` is greedy search. Returned tokens exclude
    ``<bos>`` and ``<eos>``; the log-probability is the raw (unnormalised) one, including ``<eos>``.
    """
    B, K = batch_size, beam
    seqs = torch.full((B * K, 1), bos, dtype=torch.long)
    raw = torch.zeros(B, K)
    raw[:, 1:] = -math.inf                                  # at the start, one hypothesis per sequence
    length = torch.zeros(B, K)
    done = torch.zeros(B, K, dtype=torch.bool)
    for _ in range(max_len):
        logp = step(seqs).view(B, K, -1).cpu()              # (B, K, V)
        V = logp.shape[-1]
        finished_row = torch.full((V,), -math.inf)
        finished_row[eos] = 0.0
        logp = torch.where(done[..., None], finished_row, logp)
        cand_raw = raw[..., None] + logp                    # (B, K, V)
        cand_len = (length + (~done).float())[..., None].expand(-1, -1, V)
        cand = normalised(cand_raw, cand_len.clamp(min=1), alpha).view(B, -1)
        top = cand.topk(K, dim=1).indices                   # (B, K) into K·V
        src, word = top // V, top % V
        raw = cand_raw.view(B, -1).gather(1, top)
        length = cand_len.reshape(B, -1).gather(1, top)
        done = (done.gather(1, src) | (word == eos))
        rows = (src + torch.arange(B)[:, None] * K).flatten()
        seqs = torch.cat([seqs[rows], word.flatten()[:, None]], dim=1)
        if bool(done.all()):
            break
    best = normalised(raw, length.clamp(min=1), alpha).argmax(dim=1)   # (B,)
    tokens, scores = [], []
    for b in range(B):
        row = seqs[b * K + int(best[b]), 1:].tolist()
        tokens.append(row[: row.index(eos)] if eos in row else row)
        scores.append(float(raw[b, best[b]]))
    return tokens, scores


def greedy(step: StepFn, batch_size: int, bos: int, eos: int, max_len: int = 20) -> tuple[list[list[int]], list[float]]:
    """Greedy search: the most likely next word at every step (beam search with one beam; notebook 08, §6)."""
    return beam_search(step, batch_size, bos, eos, beam=1, max_len=max_len)


@torch.no_grad()
def caption(model: CaptionDecoder, features: np.ndarray | torch.Tensor, vocab: Vocab, beam: int = 1,
            alpha: float = 0.0, max_len: int = 20, batch_size: int = 200, progress: bool = False,
            cache: bool = True) -> tuple[list[str], list[float]]:
    """Captions and their log-probabilities for a set of images' features ``(N, 49, d)`` (notebook 08, §6)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    texts, scores = [], []
    try:
        for start in tqdm(range(0, len(features), batch_size), desc=f"captioning (beam {beam})",
                          disable=not progress, leave=False):
            x = torch.as_tensor(features[start:start + batch_size]).to(dev)
            step = decoder_step(model, x, repeat=beam, cache=cache)
            ids, logp = beam_search(lambda p: step(p.to(dev)), len(x), vocab.bos_id, vocab.eos_id,
                                    beam=beam, max_len=min(max_len, model.max_len - 1), alpha=alpha)
            texts += [vocab.decode(i) for i in ids]
            scores += logp
    finally:
        model.train(was_training)
    return texts, scores


# ---------------------------------------------------------------- §6 self-critical training

@torch.no_grad()
def sample(model: CaptionDecoder, features: torch.Tensor, bos: int, eos: int, pad: int = 0, k: int = 5,
           max_len: int = 20) -> torch.Tensor:
    """``k`` captions per image, each word drawn from the model's distribution (notebook 08, §6).

    Returns ``(B·k, T)`` ids, image-major (rows ``i·k … i·k + k − 1`` belong to image ``i``): ``<bos>``,
    the sampled words, ``<eos>``, then ``pad`` — the layout :func:`shift_labels` expects, so the
    samples can be scored by the same teacher-forced forward pass as the training captions. A
    caption that has not ended after ``max_len`` words is cut there (without ``<eos>``). ``<pad>`` and
    ``<bos>`` are never drawn: a label-smoothed model gives them a little probability, but they are
    not words, and a ``<pad>`` inside a caption would be skipped by the loss.
    """
    step = decoder_step(model, features, repeat=k, cache=True)
    seqs = torch.full((len(features) * k, 1), bos, dtype=torch.long, device=features.device)
    done = torch.zeros(len(seqs), dtype=torch.bool, device=features.device)
    for _ in range(min(max_len, model.max_len - 1)):
        logp = step(seqs)
        logp[:, [pad, bos]] = -math.inf                 # never valid next words (label smoothing gives them mass)
        word = torch.multinomial(logp.exp(), 1)[:, 0]
        word = torch.where(done, torch.full_like(word, pad), word)
        seqs = torch.cat([seqs, word[:, None]], dim=1)
        done |= word == eos
        if bool(done.all()):
            break
    return seqs


def scst_loss(model: CaptionDecoder, batch: tuple[torch.Tensor, torch.Tensor], vocab: Vocab,
              scorer: metrics.CiderD, k: int = 5, max_len: int = 20) -> torch.Tensor:
    """Self-critical policy-gradient loss on CIDEr-D (Rennie et al. 2017; notebook 08, §6).

    ``batch = (features (B, 49, d), image indices into the scorer's references (B,))``. For each
    image, ``k`` captions are sampled (eval mode: no dropout), each gets the reward r = CIDEr-D
    against its image's references, and the loss is

        − Σ_captions (r − b) · log p(caption | image)  /  number of predicted tokens,

    whose gradient is the REINFORCE estimate of −∇ E[r]. The baseline b of a caption is the mean
    reward of the *other* k − 1 samples of the same image (Luo 2020's variant of the self-critical
    baseline): captions better than their siblings are made more likely, worse ones less, and b
    needs no extra decoding. ``log p`` is computed by one teacher-forced pass in the model's
    current mode. The words up to and including ``<eos>`` count; padding does not.
    """
    if k < 2:
        raise ValueError(f"k = {k}: the baseline is the mean reward of the other samples, so k must be at least 2")
    features, images = batch
    was_training = model.training
    model.eval()
    seqs = sample(model, features, vocab.bos_id, vocab.eos_id, vocab.pad_id, k=k, max_len=max_len)
    model.train(was_training)
    texts = [vocab.decode(row[1:]) for row in seqs.tolist()]
    reward = torch.tensor(scorer(texts, torch.as_tensor(images).repeat_interleave(k).tolist()),
                          device=features.device).view(-1, k)
    advantage = (reward - (reward.sum(1, keepdim=True) - reward) / (k - 1)).flatten()
    inputs, labels = shift_labels(seqs, vocab.pad_id)
    logits = model(features.repeat_interleave(k, dim=0), inputs)
    log_p = -F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                             reduction="none").view(labels.shape)
    return -(advantage[:, None] * log_p).sum() / (labels != -100).sum().clamp(min=1)


# ---------------------------------------------------------------- §7 metrics

def score(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L and CIDEr-D of captions ``hyps`` against ``refs`` (notebook 08, §7), all × 100.

    Every metric tokenises with :func:`mmcourse.metrics.caption_tokens` (lowercase, punctuation
    removed), so the numbers equal pycocoevalcap's on the same tokens (tested).
    """
    bleu = metrics.bleu(hyps, refs, max_n=4)
    out = {f"BLEU-{n}": 100 * b for n, b in enumerate(bleu, start=1)}
    out["ROUGE-L"] = 100 * metrics.rouge_l(hyps, refs)
    out["CIDEr-D"] = 100 * metrics.cider_d(hyps, refs)[0]
    return out


# ---------------------------------------------------------------- training (§4–6; `mmcourse finetune captioning`)

def caption_loader(features: torch.Tensor, tokens: torch.Tensor, image_of: torch.Tensor, batch_size: int,
                   shuffle: bool = True) -> torch.utils.data.DataLoader:
    """``(features, tokens)`` batches of captions; caption j describes image ``image_of[j]``, whose
    cached features are gathered per batch (notebook 08, §4)."""
    from torch.utils.data import DataLoader

    def collate(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor(rows)
        return features[image_of[rows]], tokens[rows]
    return DataLoader(range(len(tokens)), batch_size=batch_size, shuffle=shuffle, collate_fn=collate)


def image_loader(features: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    """``(features, image index)`` batches over the training images, for the self-critical loss (§5)."""
    from torch.utils.data import DataLoader

    def collate(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor(rows)
        return features[rows], rows
    return DataLoader(range(len(features)), batch_size=batch_size, shuffle=True, collate_fn=collate)


def dev_scorer(features: np.ndarray, refs: Sequence[Sequence[str]], vocab: Vocab) -> Callable[[nn.Module], dict]:
    """``scores(model)``: greedy captions of the dev images → ``{"dev_cider", "dev_bleu4"}`` (× 100), the
    early-stopping metrics of §4."""
    def scores(model: nn.Module, _loader: object = None) -> dict[str, float]:
        hyps, _ = caption(model, features, vocab, beam=1)
        s = score(hyps, refs)
        return {"dev_cider": s["CIDEr-D"], "dev_bleu4": s["BLEU-4"]}
    return scores


def train_decoder(decoder: CaptionDecoder, loader: object, dev_scores: Callable[[nn.Module], dict], *, epochs: int,
                  lr: float, label_smoothing: float = 0.1, run_dir: object = None, resume: bool = True,
                  device: object = None, progress: bool = True, **levers: object) -> object:
    """Cross-entropy training of the decoder with ``fit`` (§4): AdamW, weight decay 0.01, early stopping
    on dev CIDEr-D with patience 3, a checkpoint per epoch in ``run_dir``. Returns the History;
    the decoder holds the best weights."""
    from mmcourse.train import fit

    return fit(decoder, lambda m, b: loss_fn(m, b, label_smoothing=label_smoothing), loader, val_loader=[None],
               eval_fn=lambda m, _: dev_scores(m), epochs=epochs, lr=lr, weight_decay=0.01, monitor="dev_cider",
               mode="max", patience=3, checkpoint_dir=run_dir, checkpoint_every="epoch" if run_dir else None,
               resume=resume and run_dir is not None, seed=0, device=device, progress=progress, **levers)


def self_critical(decoder: CaptionDecoder, loader: object, vocab: Vocab, cider: metrics.CiderD,
                  dev_scores: Callable[[nn.Module], dict], *, epochs: int, k: int = 5, lr: float = 5e-5,
                  run_dir: object = None, resume: bool = True, device: object = None,
                  progress: bool = True) -> tuple[dict, dict]:
    """Self-critical training on CIDEr-D after cross-entropy (§5), at a constant learning rate, kept only
    if it raised dev CIDEr-D (selection on dev). Returns the dev scores before and after it."""
    import copy

    from mmcourse.train import fit

    before, weights = dev_scores(decoder), copy.deepcopy(decoder.state_dict())
    if epochs > 0:
        fit(decoder, lambda m, b: scst_loss(m, b, vocab, cider, k=k), loader, val_loader=[None],
            eval_fn=lambda m, _: dev_scores(m), epochs=epochs, lr=lr, min_lr=lr, warmup_steps=0, weight_decay=0.0,
            monitor="dev_cider", mode="max", checkpoint_dir=run_dir, checkpoint_every="epoch" if run_dir else None,
            resume=resume and run_dir is not None, seed=0, device=device, progress=progress)
    after = dev_scores(decoder)
    if after["dev_cider"] <= before["dev_cider"]:
        decoder.load_state_dict(weights)
    return before, after


def choose_beam(decoder: CaptionDecoder, features: np.ndarray, refs: Sequence[Sequence[str]], vocab: Vocab,
                beams: Sequence[int] = (1, 2, 3, 5), alphas: Sequence[float] = (0.0, 0.5, 1.0)) -> tuple[tuple, dict, dict]:
    """Beam width and length normalisation α chosen on dev CIDEr-D, the smaller beam on a tie (§6).
    Returns ((beam, alpha), scores per setting with the mean caption length, captions per setting)."""
    table, captions = {}, {}
    for beam in beams:
        for alpha in ((0.0,) if beam == 1 else tuple(alphas)):
            texts, _ = caption(decoder, features, vocab, beam=beam, alpha=alpha)
            table[(beam, alpha)] = score(texts, refs) | {"words": float(np.mean([len(t.split()) for t in texts]))}
            captions[(beam, alpha)] = texts
    best = max(table, key=lambda key: (table[key]["CIDEr-D"], -key[0]))
    return best, table, captions


def blind_caption(train_refs: Sequence[Sequence[str]], n: int) -> str:
    """The blind control of §7: of the first caption of each of the first ``n`` training images, the one
    with the highest CIDEr-D against those images' references; given to every test image, it scores
    what a model that ignores the image can reach."""
    refs = list(train_refs[:n])
    return max((r[0] for r in refs), key=lambda c: metrics.cider_d([c] * len(refs), refs)[0])
