"""Checks for notebook 01_text_encoders: attention, split_heads, mean pooling, nearest neighbours.

Each check compares the learner's function with the library version (``mmcourse.attention``,
``mmcourse.text``) on small float64 probes, and recognises the typical mistakes: missing
1/√d_k, softmax over the wrong axis, an inverted or late mask, a reshape without transpose,
pooling over padding, ascending order, an off-by-one k, the wrong dtype.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from mmcourse import attention, checks, text


def _probe_qkv(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2, 5, 8, generator=g, dtype=torch.float64)  # (batch, heads, Lq, d_k)
    k = torch.randn(2, 2, 7, 8, generator=g, dtype=torch.float64)  # (batch, heads, Lk, d_k)
    v = torch.randn(2, 2, 7, 3, generator=g, dtype=torch.float64)  # (batch, heads, Lk, d_v)
    mask = torch.rand(2, 1, 5, 7, generator=g) > 0.35               # True = may attend
    mask[..., 0] = True
    return q, k, v, mask


def _softmax_variants(q, k, v, mask) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """(weights, output, hint) that typical mistakes in attention produce."""
    d_k = q.shape[-1]
    raw = q @ k.transpose(-2, -1)
    scaled = raw / math.sqrt(d_k)
    neg = float("-inf")

    def fill(s, m):
        return s if m is None else s.masked_fill(~m, neg)

    out = []
    for w, why in [
        (fill(raw, mask).softmax(-1), "the scores are not scaled: divide q·kᵀ by √d_k (the square root of the "
                                      "key width, q.shape[-1]) before the softmax"),
        (fill(raw / d_k, mask).softmax(-1), "you divided by d_k; divide by √d_k (math.sqrt(d_k))"),
        (fill(raw * math.sqrt(d_k), mask).softmax(-1), "multiply q·kᵀ by 1/√d_k, not by √d_k"),
        (fill(raw / math.sqrt(k.shape[-2]), mask).softmax(-1),
         "scale by the key *width* d_k = q.shape[-1], not by the number of keys"),
        (fill(scaled, mask).softmax(-2), "softmax over the wrong axis: normalise over the keys (dim=-1), so each "
                                         "query's weights sum to 1"),
    ]:
        out.append((w, w @ v, why))
    if mask is not None:
        w_inv = scaled.masked_fill(mask, neg).softmax(-1)
        w_late = scaled.softmax(-1) * mask
        w_zero = scaled.masked_fill(~mask, 0.0).softmax(-1)
        w_none = scaled.softmax(-1)
        out += [
            (w_none, w_none @ v, "the mask was ignored: hide the forbidden keys before the softmax with "
                                 "scores.masked_fill(~mask, float(\"-inf\")) (~mask is True where a key is forbidden)"),
            (w_inv, w_inv @ v, "the mask is inverted: True means *may attend*, so fill the scores where the mask "
                               "is False (masked_fill(~mask, -inf))"),
            (w_late, w_late @ v, "the mask was applied after the softmax, so the rows no longer sum to 1: set "
                                 "masked scores to -inf *before* the softmax"),
            (w_zero, w_zero @ v, "masked scores were set to 0, but e⁰ = 1 still gets weight: use -inf"),
        ]
    return out


def _unpack(name: str, found: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not (isinstance(found, (tuple, list)) and len(found) == 2):
        checks.failed(name, "a pair (output, weights)", type(found).__name__,
                      "return both: `return weights @ v, weights`")
        return None
    return tuple(torch.as_tensor(x) for x in found)  # type: ignore[return-value]


_TRANSPOSE_HINT = ("q @ kᵀ must multiply (…, Lq, d_k) by (…, d_k, Lk): transpose only the last two axes of k, "
                   "k.transpose(-2, -1) — k.T reverses all four axes of a (batch, heads, L, d) tensor")


def check_attention(fn: Callable) -> None:
    """Check ``attention(q, k, v, mask=None) -> (output, weights)`` against mmcourse.attention."""
    name = "attention"
    q, k, v, mask = _probe_qkv()
    for label, m in (("no mask", None), ("boolean mask", mask)):
        tag = f"{name} ({label})"
        found = checks.attempt(tag, fn, q, k, v, mask=m,
                               fallback="mmcourse.attention.scaled_dot_product_attention",
                               shape_hint=_TRANSPOSE_HINT)
        if checks.is_pending(found):
            return
        pair = _unpack(tag, found)
        if pair is None:
            return
        out, w = pair
        want_out, want_w = attention.scaled_dot_product_attention(q, k, v, mask=m)
        if out.shape == want_w.shape and w.shape == want_out.shape:
            checks.failed(tag, "(output, weights)", "(weights, output)",
                          "the two results are swapped: return the output first, then the weights")
            return
        if w.dtype != torch.float64 or out.dtype != torch.float64:
            checks.failed(tag, "float64 results for float64 inputs", f"{out.dtype} / {w.dtype}",
                          "do not convert the dtype (no .float() / .half()): keep the inputs' precision")
            return
        if w.shape == want_w.shape and torch.isfinite(w).all() and not torch.allclose(
                w.sum(-1), torch.ones((), dtype=w.dtype)) and torch.allclose(w.sum(-2), torch.ones((), dtype=w.dtype)):
            checks.failed(tag + " weights", "rows that sum to 1 (over the keys)", "columns that sum to 1",
                          "softmax over the wrong axis: use dim=-1 (the keys)")
            return
        mistakes = _softmax_variants(q, k, v, m)
        if not checks.close(tag + " weights", w, want_w, mistakes=[(mw, why) for mw, _, why in mistakes],
                            hint="weights = softmax(q @ kᵀ / √d_k) over the last axis, with kᵀ = k.transpose(-2, -1) "
                                 "(only the last two axes) and forbidden keys filled with -inf "
                                 "(scores.masked_fill(~mask, float(\"-inf\"))) before the softmax"):
            return
        if not checks.close(tag + " output", out, want_out,
                            hint="output = weights @ v: a weighted average of the value vectors"):
            return


def check_split_heads(fn: Callable) -> None:
    """Check ``split_heads(x, num_heads)``: (batch, seq, d_model) → (batch, heads, seq, d_head)."""
    name = "split_heads"
    b, s, d, h = 2, 5, 12, 3
    x = torch.arange(b * s * d, dtype=torch.float64).view(b, s, d)
    found = checks.attempt(name, fn, x, h, fallback="mmcourse.attention.split_heads")
    if checks.is_pending(found):
        return
    got = torch.as_tensor(found)
    want = attention.split_heads(x, h)
    by_shape = {
        (b, s, h, d // h): "the head axis must come before the sequence axis: after view(b, s, heads, d_head) "
                           "do .transpose(1, 2)",
        (b, h, s * (d // h)): "keep the sequence and feature axes separate: 4 dims (batch, heads, seq, d_head)",
        (b * h, s, d // h): "keep batch and heads as separate axes: (batch, heads, seq, d_head)",
    }
    if checks.shape_mistake(name, got, want, by_shape):
        return
    mistakes = [
        (x.reshape(b, h, s, d // h), "a plain reshape to (batch, heads, seq, d_head) scrambles tokens across heads: "
                                     "first view(b, seq, heads, d_head), then transpose(1, 2)"),
        (x.view(b, s, d // h, h).permute(0, 3, 1, 2), "the heads are interleaved (head 0 got features 0, 3, 6, …): "
                                                      "each head takes a *contiguous* block of d_head features, so "
                                                      "view(b, seq, heads, d_head)"),
    ]
    checks.close(name, got, want, mistakes=mistakes,
                 hint="head h should hold features h·d_head … (h+1)·d_head − 1 of every token")


def _probe_pool() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])  # int64, like a tokenizer's
    hidden[mask == 0] += 5.0  # padding vectors far from the real tokens, so pooling them shows
    return hidden, mask


def check_mean_pool(fn: Callable) -> None:
    """Check ``mean_pool(hidden, mask)``: (batch, seq, dim), (batch, seq) → (batch, dim)."""
    name = "mean_pool"
    hidden, mask = _probe_pool()
    found = checks.attempt(name, fn, hidden, mask, fallback="mmcourse.text.mean_pool")
    if checks.is_pending(found):
        return
    got = torch.as_tensor(found)
    want = text.mean_pool(hidden, mask)
    by_shape = {
        (3, 6): "you averaged over the feature axis: average over the tokens (dim=1)",
        (6, 4): "you averaged over the batch axis: average over the tokens (dim=1)",
        (3, 6, 4): "reduce over the token axis (sum over dim=1) to get one vector per sentence",
    }
    if checks.shape_mistake(name, got, want, by_shape):
        return
    if got.dtype != hidden.dtype:
        checks.failed(name, f"dtype {hidden.dtype} (the hidden states' dtype)", f"dtype {got.dtype}",
                      "cast the 0/1 mask to the hidden states' dtype (mask.to(hidden.dtype)), not the other way round")
        return
    m = mask.unsqueeze(-1).to(hidden.dtype)
    mistakes = [
        (hidden.mean(1), "you averaged over padding too: multiply by the attention mask and divide by the number "
                         "of real tokens"),
        ((hidden * m).sum(1) / hidden.shape[1], "divide by the number of *real* tokens (mask.sum(dim=1)), not by "
                                                "the padded length"),
        ((hidden * m).sum(1), "you summed but did not divide by the number of real tokens"),
        (hidden[:, 0], "that is the first ([CLS]) token's vector, not the mean over all real tokens"),
        ((hidden * m).sum(1) / (mask.sum(1, keepdim=True) - 1), "off by one: divide by mask.sum(dim=1), the count "
                                                                "of real tokens"),
    ]
    checks.close(name, got, want, mistakes=mistakes,
                 hint="sum(hidden · mask) over the tokens / sum(mask) over the tokens")


def _probe_neighbours() -> tuple[torch.Tensor, torch.Tensor, int]:
    g = torch.Generator().manual_seed(3)
    corpus = torch.randn(20, 6, generator=g, dtype=torch.float64)
    corpus *= torch.logspace(-1, 1, 20, dtype=torch.float64)[torch.randperm(20, generator=g)][:, None]
    queries = torch.randn(3, 6, generator=g, dtype=torch.float64)
    return queries, corpus, 4


def check_top_k(fn: Callable) -> None:
    """Check ``top_k(queries, corpus, k)`` → indices (n_queries, k) of the most cosine-similar corpus rows."""
    name = "top_k"
    queries, corpus, k = _probe_neighbours()
    found = checks.attempt(name, fn, queries, corpus, k, fallback="mmcourse.text.nearest_neighbours")
    if checks.is_pending(found):
        return
    got = torch.as_tensor(found)
    want = text.nearest_neighbours(queries, corpus, k)[1]
    if got.shape == (queries.shape[0], k + 1) or got.shape == (queries.shape[0], k - 1):
        checks.failed(name, f"shape {tuple(want.shape)}", f"shape {tuple(got.shape)}",
                      f"off by one: return exactly k = {k} indices per query (slice [:, :k])")
        return
    if tuple(got.shape) == tuple(sim_shape := (queries.shape[0], corpus.shape[0])):
        checks.failed(name, f"shape {tuple(want.shape)}", f"shape {sim_shape}",
                      f"keep only the best k = {k} columns per query")
        return
    if got.shape == (k, corpus.shape[0]) or got.shape == (k, queries.shape[0]) or got.shape == (corpus.shape[0], k):
        checks.failed(name, f"shape {tuple(want.shape)}", f"shape {tuple(got.shape)}",
                      "rank along the corpus axis (dim=-1 of the (n_queries, n_corpus) similarity matrix)")
        return
    if got.is_floating_point():
        checks.failed(name, "integer indices (torch.long)", f"dtype {got.dtype}",
                      "return the *indices* of the neighbours (topk(...).indices or argsort), not their scores")
        return
    sim = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(corpus, dim=-1).T
    mistakes = [
        (sim.argsort(dim=-1)[:, :k], "these are the *least* similar rows: sort in descending order "
                                     "(descending=True, or topk)"),
        ((queries @ corpus.T).topk(k, dim=-1).indices, "plain dot products favour long vectors: L2-normalise the "
                                                       "queries and the corpus first (cosine similarity)"),
        (torch.cdist(queries, corpus).topk(k, dim=-1).indices, "the largest *distances* are the farthest rows"),
        (sim.argsort(dim=0, descending=True)[:, :k], "you ranked the queries for each corpus row: rank along the "
                                                     "corpus axis (dim=-1 of the (n_queries, n_corpus) matrix)"),
        (sim.argsort(dim=-1, descending=True)[:, 1:k + 1], "off by one: the best match is at position 0; slice [:, :k]"),
    ]
    checks.close(name, got, want, mistakes=mistakes,
                 hint="indices of the k largest cosine similarities, most similar first")


# ---------------------------------------------------------------- quiz items (issue 11, A.3)

def check_quiz_1_1(fn: Callable) -> None:
    """Quiz 1.1: attention weights of one MiniLM layer for a 20-token sentence (a number)."""
    checks.quiz(
        "quiz 1.1 (attention weights per layer)", fn, 12 * 20 * 20,
        "each of the 12 heads computes an L × L matrix of weights: 12 · 20² = 4,800. The count grows with "
        "the square of the length — twice the tokens, four times the weights (notebook 02 §3 turns this "
        "into compute cost).", rel_tol=1e-3)


def check_quiz_1_2(fn: Callable) -> None:
    """Quiz 1.2: a tokenizer's attention_mask passed as nn.MultiheadAttention's key_padding_mask (choice)."""
    checks.quiz(
        "quiz 1.2 (mask conventions)", fn, "b",
        "key_padding_mask uses True = IGNORE, the attention_mask 1 = real token: passed unchanged, it hides "
        "the real tokens and leaves only [PAD] keys; a sentence without padding has every key hidden, so "
        "its softmax is over nothing and gives NaN. No error is raised — pass `attention_mask == 0`.",
        choices={"a": "it works: both say which tokens are real",
                 "b": "queries attend only to [PAD] keys, and a sentence without padding gets NaN outputs",
                 "c": "PyTorch raises an error because the conventions differ"})


def check_quiz_1_3(fn: Callable) -> None:
    """Quiz 1.3: the weight of the real tokens in an unmasked mean over padding (a number)."""
    checks.quiz(
        "quiz 1.3 (pooling over padding)", fn, 0.25,
        "the plain mean over 20 positions is (5/20)·mean(real) + (15/20)·mean(padding): the real tokens get "
        "weight 5/20 = 0.25 and the [PAD] positions 0.75 — why the cosine to the unpadded embedding drops "
        "so far in §5.")
