"""Checks for notebook 05_fusion_math: softmax-weighted sum, tensor fusion, cross-attention.

Each check runs the learner's function on a small float64 problem, compares it with the library
version in :mod:`mmcourse.fusion`, and recognises the typical mistakes (softmax over the wrong
axis, a forgotten appended 1, a missing 1/√d_k, a wrong residual, ...) to give a specific hint.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from mmcourse import checks, fusion


def _rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------------------
# exercise 5.1: weighted sum with softmax weights
# ----------------------------------------------------------------------------------------

def weighted_sum_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """``feats (4, 3, 5)`` (batch, modality, dim) and per-example logits ``(4, 3)``."""
    feats = _rand(4, 3, 5, seed=51)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, -0.5], [-2.0, 1.0, 0.0], [0.3, -0.7, 1.2]],
                          dtype=torch.float64)
    return feats, logits


def check_softmax_weighted_sum(fn: Callable) -> None:
    """Check ``softmax_weighted_sum(feats, logits)`` = Σ_m softmax(logits)_m · feats[:, m]."""
    name = "softmax_weighted_sum"
    feats, logits = weighted_sum_problem()
    found = checks.attempt(name, fn, feats.clone(), logits.clone(), fallback="mmcourse.fusion.softmax_weighted_sum")
    if checks.is_pending(found):
        return
    want = fusion.softmax_weighted_sum(feats, logits)
    if checks.shape_mistake(name, found, want, {
            tuple(feats.shape): "you weighted each modality but did not add them up: sum over the modality axis (dim=1)"}):
        return
    mistakes = [
        (fusion.weighted_sum(feats, torch.softmax(logits, dim=0)),
         "softmax over the wrong axis: normalise each example's M weights (dim=-1, the modality axis), "
         "not each modality's weights across the batch (dim=0)"),
        (fusion.weighted_sum(feats, logits), "the logits were used as weights: apply softmax first, so the "
                                             "weights are positive and sum to one"),
        (fusion.weighted_sum(feats, logits / logits.sum(dim=-1, keepdim=True)),
         "dividing by the sum is not a softmax: exponentiate first, w = exp(a) / Σ exp(a)"),
        (feats.mean(dim=1), "that is the plain mean (equal weights 1/M): multiply by the softmax weights"),
        (feats.sum(dim=1), "that is the unweighted sum: multiply each modality by its softmax weight"),
        (fusion.weighted_sum(feats, torch.softmax(logits, dim=-1).flip(-1)),
         "weights applied to the wrong modalities: weight m multiplies feats[:, m]"),
    ]
    checks.close(name, found, want, atol=1e-10, rtol=1e-8, mistakes=mistakes,
                 hint="w = softmax(logits, dim=-1) has shape (B, M); F = Σ_m w[:, m, None] * feats[:, m]")


# ----------------------------------------------------------------------------------------
# exercise 5.2: tensor fusion
# ----------------------------------------------------------------------------------------

def tensor_fusion_problem() -> list[torch.Tensor]:
    """Three modalities of dims 2, 3, 5 for a batch of 3 (different dims, so orders are visible; with
    2, 3, 4 each [z_m; 1] would be as long as the next z, and a mix-up of the two could pass)."""
    return [_rand(3, d, seed=520 + d) for d in (2, 3, 5)]


def _outer_all(vecs: list[torch.Tensor]) -> torch.Tensor:
    out = vecs[0]
    for v in vecs[1:]:
        out = fusion.outer_flat(out, v)
    return out


def _prepend_one(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones_like(z[:, :1]), z], dim=-1)


def check_tensor_fusion(fn: Callable) -> None:
    """Check ``tensor_fusion(zs)`` = vec([z_1; 1] ⊗ [z_2; 1] ⊗ [z_3; 1]) with row-major flattening."""
    name = "tensor_fusion"
    zs = tensor_fusion_problem()
    found = checks.attempt(name, fn, [z.clone() for z in zs], fallback="mmcourse.fusion.tensor_fusion")
    if checks.is_pending(found):
        return
    want = fusion.tensor_fusion(zs)
    b = zs[0].shape[0]
    dims = [z.shape[1] for z in zs]
    concatenation = "that is a concatenation; tensor fusion takes the *outer* product of the [z_m; 1]"
    if checks.shape_mistake(name, found, want, {
            (b, math.prod(dims)): "(B, Π d_m) instead of (B, Π(d_m + 1)): you forgot the appended 1: use [z_m; 1] "
                                  "(torch.cat with a column of ones) for every modality, or the unimodal and "
                                  "bimodal terms are lost",
            (b, sum(d + 1 for d in dims)): concatenation,
            (b, sum(dims)): concatenation,
            (b, *[d + 1 for d in dims]): "right tensor, but flatten it to one vector per example: .reshape(B, -1)"}):
        return
    ones = [fusion.append_one(z) for z in zs]
    mistakes = [
        (_outer_all([_prepend_one(z) for z in zs]),
         "you prepended the 1 ([1; z], as the original TFN code does); this course follows the paper's formula "
         "[z; 1] — append it at the end"),
        (_outer_all(ones[::-1]), "the modalities are in reverse order: the first modality must vary slowest "
                                 "(row-major flattening of z1' ⊗ z2' ⊗ z3')"),
        (_outer_all([torch.cat([z, torch.zeros_like(z[:, :1])], dim=-1) for z in zs]),
         "you appended 0 instead of 1: a 0 wipes out the lower-order terms the constant is there to keep"),
        (_outer_all([ones[0], ones[2], ones[1]]), "the modalities are out of order: keep z1, z2, z3"),
        (_outer_all([ones[1], ones[0], ones[2]]), "the modalities are out of order: keep z1, z2, z3"),
    ]
    checks.close(name, found, want, atol=1e-10, rtol=1e-8, mistakes=mistakes,
                 hint="z' = torch.cat([z, ones], dim=1); outer products with (a[:, :, None] * b[:, None, :])"
                      ".reshape(B, -1), first modality first")


# ----------------------------------------------------------------------------------------
# exercise 5.3: a cross-attention block
# ----------------------------------------------------------------------------------------

def cross_attention_problem() -> tuple[torch.Tensor, ...]:
    """``q_in (2, 3, 6)``, ``kv_in (2, 4, 6)``, ``Wq, Wk, Wv (6, 4)``, ``Wo (4, 6)`` (d = 6, d_k = 4)."""
    q_in, kv_in = _rand(2, 3, 6, seed=531), _rand(2, 4, 6, seed=532)
    Wq, Wk, Wv = (_rand(6, 4, seed=533 + i) for i in range(3))
    Wo = _rand(4, 6, seed=536) * 0.5
    return q_in, kv_in, Wq, Wk, Wv, Wo


def check_cross_attention(fn: Callable) -> None:
    """Check ``cross_attention(q_in, kv_in, Wq, Wk, Wv, Wo)`` = q_in + softmax(QKᵀ/√d_k) V Wo."""
    name = "cross_attention"
    args = cross_attention_problem()
    found = checks.attempt(name, fn, *[a.clone() for a in args], fallback="mmcourse.fusion.cross_attention")
    if checks.is_pending(found):
        return
    q_in, kv_in, Wq, Wk, Wv, Wo = args
    want = fusion.cross_attention(*args)
    Q, K, V = q_in @ Wq, kv_in @ Wk, kv_in @ Wv
    d_k = Wq.shape[1]
    s = Q @ K.transpose(-2, -1)

    def out(scores: torch.Tensor, dim: int = -1, values: torch.Tensor = V) -> torch.Tensor:
        return (torch.softmax(scores, dim=dim) @ values) @ Wo

    if checks.shape_mistake(name, found, want, {
            (2, 4, 6): "one output per *query*: queries come from q_in and keys/values from kv_in; "
                       "you may have swapped the two inputs"}):
        return
    mistakes = [
        (q_in + out(s), "missing scaling: divide the scores Q Kᵀ by √d_k before the softmax"),
        (q_in + out(s / d_k), "scale by 1/√d_k, not 1/d_k"),
        (q_in + out(s / math.sqrt(q_in.shape[-1])), "scale by √d_k (the query/key width, Wq.shape[1]), "
                                                    "not by √d of the input"),
        (q_in + out(s / math.sqrt(d_k), dim=-2), "softmax over the wrong axis: each query's weights over the "
                                                 "keys must sum to one (dim=-1), not each key's over the queries"),
        (out(s / math.sqrt(d_k)), "the residual is missing: return q_in + (A V) Wo"),
        (Q @ Wo + out(s / math.sqrt(d_k)), "wrong residual: add the block's input q_in after Wo, not the "
                                           "projected queries Q (out = q_in + (A V) Wo)"),
        (q_in + out(Q @ (q_in @ Wk).transpose(-2, -1) / math.sqrt(d_k), values=q_in @ Wv),
         "that is self-attention: keys and values must come from the other modality, kv_in"),
        (q_in + out(Q @ V.transpose(-2, -1) / math.sqrt(d_k), values=K),
         "keys and values are swapped: scores use K = kv_in Wk, the output mixes V = kv_in Wv"),
    ]
    checks.close(name, found, want, atol=1e-10, rtol=1e-8, mistakes=mistakes,
                 hint="Q = q_in Wq, K = kv_in Wk, V = kv_in Wv; A = softmax(Q Kᵀ / √d_k, dim=-1); "
                      "return q_in + (A V) Wo")


# ----------------------------------------------------------------------------------------
# quiz items (auto-checked; each verdict explains the answer)
# ----------------------------------------------------------------------------------------

def check_quiz_5_1(fn: Callable) -> None:
    """Parameters of tensor fusion for widths 2, 3, 4 and fused width h = 5 (a number)."""
    checks.quiz(
        "quiz_5_1", fn, fusion.param_formula("tensor", [2, 3, 4], 5),
        "Tensor fusion's linear layer reads vec([z1;1]⊗[z2;1]⊗[z3;1]) of length (2+1)(3+1)(4+1) = 60 and "
        "maps it to h = 5: 60·5 weights + 5 biases = 305. Forgetting the appended 1s gives 2·3·4·5 + 5 = 125; "
        "the product of the widths, not their sum, is why the count explodes with more modalities.")


QUIZ_5_2_CHOICES = {
    "a": "late fusion: add the per-modality log-probabilities (logits)",
    "b": "tensor fusion: it contains every product of the modalities' features",
    "c": "early fusion: only a model that sees all raw inputs at once can be optimal",
}


def check_quiz_5_2(fn: Callable) -> None:
    """Which fusion is (near) Bayes-optimal when the views are conditionally independent given the label?"""
    checks.quiz(
        "quiz_5_2", fn, "a",
        "If audio, image and text are independent given the digit y, Bayes' rule gives "
        "log p(y | a, i, t) = log p(y | a) + log p(y | i) + log p(y | t) − 2 log p(y) + const: a sum of "
        "per-modality scores, which is exactly what late fusion computes. Products of features (b) or a joint "
        "model (c) can represent this too, but they have nothing more to find and more to overfit.",
        QUIZ_5_2_CHOICES)


QUIZ_5_3_CHOICES = {
    "a": "with one token per modality its softmax only chooses how much of each other modality to mix in; "
         "the mixed value vectors are linear in the inputs, so no digit × offset table can be built",
    "b": "it has too few parameters to learn anything",
    "c": "its 1/√d_k scaling makes the attention weights too small to train",
}


def check_quiz_5_3(fn: Callable) -> None:
    """Why does cross-attention (one token per modality) stay near chance on the relation task?"""
    checks.quiz(
        "quiz_5_3", fn, "a",
        "Each query attends to two keys, so A is just two numbers that sum to one, and the block outputs "
        "z_m + Wo(a_1 V z_j + a_2 V z_k): a data-dependent mixture of linear maps. The relation task needs the "
        "answer to depend on the *product* of 'which digit' and 'which offset' (a 10 × 10 table); bilinear and "
        "tensor fusion contain those products explicitly. Cross-attention shines when each modality is a "
        "sequence of many tokens and the question is *where* to look (notebook 08), not here. It has about as "
        "many parameters as concatenation (b is false), and the scaling is the standard one (c is false).",
        QUIZ_5_3_CHOICES)
