"""Multimodal fusion operators (notebook 05_fusion_math).

Every operator takes the per-modality vectors ``zs = [z_1, ..., z_M]`` (each ``(B, d_m)``) and
returns one fused vector per example. The flat functions are the formulas of notebook 05; the
small ``nn.Module`` classes wrap them with learnable weights; :class:`FusionClassifier` puts
per-modality encoders, one fusion operator and a linear head together (MultiBench's
``encoders → fusion → head`` split).

==================  =========================================================  notebook 05
concatenation       ``[z_1; ...; z_M]`` then a linear layer                     §2
weighted sum        ``F = Σ_m w_m z_m``: fixed, learned, softmax-normalised    §3
gated (GMU)         ``h = Σ_m g_m ⊙ tanh(W_m z_m)``, ``g = σ(W_g [z])``        §4
tensor fusion       ``vec([z_1; 1] ⊗ [z_2; 1] ⊗ [z_3; 1])`` then linear       §5
low-rank fusion     ``Σ_r Π_m (W_m^(r) [z_m; 1])`` (same map, rank-r weight)  §5
bilinear pooling    ``vec(z_i ⊗ z_j)`` for every pair, then linear              §6
cross-attention     each modality's token attends to the others'               §7
==================  =========================================================  ==========

:func:`param_formula` and :func:`flops` give each operator's cost as a formula; :func:`cost_table`
checks both against the built module (``sum(p.numel())``, ``torch.utils.flop_counter``).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmcourse.attention import attention_weights

KINDS = ("concat", "sum_fixed", "sum_learned", "sum_softmax", "gmu", "tensor", "low_rank", "bilinear",
         "cross_attention")
"""Intermediate-fusion operators that :func:`make_fusion` builds (notebook 05, §2–§7)."""

CLASSIFIER_KINDS = ("early", "late", "hybrid") + KINDS
"""Everything :class:`FusionClassifier` accepts besides ``only=m`` (one modality)."""


# ------------------------------------------------------------------------------- functions

def concat(zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenation ``[z_1; ...; z_M]``: ``(B, d_m)`` each → ``(B, Σ d_m)`` (notebook 05, §2)."""
    return torch.cat(list(zs), dim=-1)


def weighted_sum(feats: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The seeds' ``F = w_T·T + w_I·I + w_A·A``: feats ``(B, M, d)``, weights ``(M,)`` or ``(B, M)`` → ``(B, d)``.

    The weights are used as given (notebook 05, §3); see :func:`softmax_weighted_sum` for
    weights that are positive and sum to one.
    """
    w = weights if weights.ndim == 2 else weights.expand(feats.shape[0], -1)
    return (w.unsqueeze(-1) * feats).sum(dim=1)


def softmax_weighted_sum(feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``F = Σ_m softmax(a)_m z_m``: feats ``(B, M, d)``, logits ``(M,)`` or ``(B, M)`` → ``(B, d)``.

    The softmax runs over the **modality** axis (the last axis of ``logits``), so the M weights
    of each example are positive and sum to one (notebook 05, §3, exercise 5.1).
    """
    return weighted_sum(feats, torch.softmax(logits, dim=-1))


def append_one(z: torch.Tensor) -> torch.Tensor:
    """``[z; 1]``: ``(B, d)`` → ``(B, d + 1)``, the constant that keeps lower-order terms (notebook 05, §5)."""
    return torch.cat([z, torch.ones_like(z[..., :1])], dim=-1)


def outer_flat(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched outer product, flattened row-major: ``(B, a)``, ``(B, b)`` → ``(B, a·b)``, entry ``i·b + j = x_i y_j``."""
    return (x.unsqueeze(-1) * y.unsqueeze(-2)).flatten(start_dim=-2)


def tensor_fusion(zs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensor Fusion (Zadeh et al., 2017): ``vec([z_1; 1] ⊗ ... ⊗ [z_M; 1])``, ``(B, Π (d_m + 1))``.

    The appended 1 (at the end, as in the paper's formula) makes the product contain every
    unimodal vector, every pairwise product and the trimodal product, plus the constant 1
    (notebook 05, §5, exercise 5.2). Flattening is row-major: the first modality varies slowest.
    """
    out = append_one(zs[0])
    for z in zs[1:]:
        out = outer_flat(out, append_one(z))
    return out


def low_rank_fusion(zs: Sequence[torch.Tensor], factors: Sequence[torch.Tensor],
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Low-rank Multimodal Fusion (Liu et al., 2018): ``h = Σ_r Π_m ([z_m; 1] W_m^(r)) + b``.

    ``factors[m]`` has shape ``(rank, d_m + 1, out)``. Equal to :func:`tensor_fusion` followed by
    a linear map whose weight tensor is ``Σ_r W_1^(r) ⊗ ... ⊗ W_M^(r)``, without ever building the
    ``Π (d_m + 1)``-dimensional product (notebook 05, §5).
    """
    prod = None
    for z, w in zip(zs, factors):
        proj = torch.einsum("bi,rio->rbo", append_one(z), w)  # (rank, B, out)
        prod = proj if prod is None else prod * proj
    h = prod.sum(dim=0)
    return h if bias is None else h + bias


def bilinear_pool(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear pooling of two vectors: ``vec(x ⊗ y)``, ``(B, a)``, ``(B, b)`` → ``(B, a·b)`` (notebook 05, §6).

    A linear map of it is a bilinear form per output, ``h_k = xᵀ W_k y`` (``torch.nn.Bilinear``).
    Unlike tensor fusion there is no appended 1: only multiplicative (pairwise) terms.
    """
    return outer_flat(x, y)


def cross_attention(q_in: torch.Tensor, kv_in: torch.Tensor, Wq: torch.Tensor, Wk: torch.Tensor,
                    Wv: torch.Tensor, Wo: torch.Tensor) -> torch.Tensor:
    """One single-head cross-attention block with a residual connection (notebook 05, §7, exercise 5.3).

    ``q_in (B, Lq, d)`` asks, ``kv_in (B, Lk, d)`` answers::

        Q = q_in Wq,  K = kv_in Wk,  V = kv_in Wv                      (d_k = Wq.shape[1])
        A = softmax(Q Kᵀ / √d_k)    softmax over the keys (last axis)   (B, Lq, Lk)
        out = q_in + (A V) Wo                                          (B, Lq, d)
    """
    q, k, v = q_in @ Wq, kv_in @ Wk, kv_in @ Wv
    return q_in + (attention_weights(q, k) @ v) @ Wo


def modality_dropout(xs: Sequence[torch.Tensor], p: float, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Zero each modality of each example with probability ``p``, never all of one example's (notebook 05, §9).

    Training with it teaches the model the "missing modality" inputs it will meet at test time
    (the zeroed vector). When every modality of an example was drawn as dropped, one of them,
    chosen at random, is kept.
    """
    if p <= 0:
        return list(xs)
    b, m = xs[0].shape[0], len(xs)
    dev = xs[0].device
    keep = torch.rand(b, m, generator=generator, device="cpu" if generator is not None else dev).to(dev) >= p
    none = ~keep.any(dim=1)
    if none.any():
        pick = torch.randint(m, (b,), generator=generator, device="cpu" if generator is not None else dev).to(dev)
        keep[none, pick[none]] = True
    return [x * keep[:, i:i + 1].to(x.dtype) for i, x in enumerate(xs)]


def zero_modality(xs: Sequence[torch.Tensor], missing: int | None) -> list[torch.Tensor]:
    """Replace modality ``missing`` by zeros (a missing input at test time; notebook 05, §9)."""
    return [torch.zeros_like(x) if i == missing else x for i, x in enumerate(xs)]


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` — only those registered as ``nn.Parameter`` count."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------- modules

class ConcatFusion(nn.Module):
    """``h = W [z_1; ...; z_M] + b`` (notebook 05, §2)."""

    def __init__(self, dims: Sequence[int], out: int):
        super().__init__()
        self.linear = nn.Linear(sum(dims), out)

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.linear(concat(zs))


class WeightedSumFusion(nn.Module):
    """``F = Σ_m w_m z_m`` with equal dims (notebook 05, §3).

    ``mode="fixed"``: weights given (default 1/M), not trained; ``"learned"``: M free weights;
    ``"softmax"``: M logits, weights ``softmax(a)`` (positive, summing to one).
    """

    def __init__(self, n_modalities: int, mode: str = "softmax", weights: Sequence[float] | None = None):
        super().__init__()
        if mode not in ("fixed", "learned", "softmax"):
            raise ValueError(f"mode must be fixed, learned or softmax, not {mode!r}")
        self.mode = mode
        init = torch.full((n_modalities,), 1.0 / n_modalities) if weights is None else torch.tensor(weights, dtype=torch.float32)
        if mode == "fixed":
            self.register_buffer("w", init)
        elif mode == "learned":
            self.w = nn.Parameter(init.clone())
        else:
            self.logits = nn.Parameter(torch.zeros(n_modalities) if weights is None else init.log())

    def weights(self) -> torch.Tensor:
        """The M weights actually applied."""
        return torch.softmax(self.logits, dim=-1) if self.mode == "softmax" else self.w

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return weighted_sum(torch.stack(list(zs), dim=1), self.weights())


class GatedFusion(nn.Module):
    """Gated Multimodal Unit (Arevalo et al., 2017) (notebook 05, §4).

    ``h_m = tanh(W_m z_m)``; two modalities: ``g = σ(W_g [z_1; z_2])``, ``h = g ⊙ h_1 + (1 − g) ⊙ h_2``
    (the paper's bimodal unit); M > 2: one gate per modality, ``h = Σ_m σ(W_gm [z]) ⊙ h_m``.
    """

    def __init__(self, dims: Sequence[int], out: int):
        super().__init__()
        self.m = len(dims)
        self.proj = nn.ModuleList(nn.Linear(d, out) for d in dims)
        self.gate = nn.Linear(sum(dims), out * (1 if self.m == 2 else self.m))
        self.out = out

    def gates(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Gate values ``(B, M, out)`` in (0, 1)."""
        g = torch.sigmoid(self.gate(concat(zs)))
        if self.m == 2:
            return torch.stack([g, 1 - g], dim=1)
        return g.view(-1, self.m, self.out)

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        h = torch.stack([torch.tanh(p(z)) for p, z in zip(self.proj, zs)], dim=1)  # (B, M, out)
        return (self.gates(zs) * h).sum(dim=1)


class TensorFusion(nn.Module):
    """Tensor Fusion Network's fusion layer: :func:`tensor_fusion`, then ``Linear(Π (d_m + 1), out)`` (§5)."""

    def __init__(self, dims: Sequence[int], out: int):
        super().__init__()
        self.linear = nn.Linear(math.prod(d + 1 for d in dims), out)

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.linear(tensor_fusion(zs))


class LowRankFusion(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al., 2018): :func:`low_rank_fusion` with rank-``rank`` factors (§5).

    The factors live in an ``nn.ParameterList``. Kept as plain tensors (or in a Python list)
    they would not be registered: absent from ``parameters()``, never trained, not moved by
    ``.to(device)`` — the bug the unit tests guard against.
    """

    def __init__(self, dims: Sequence[int], out: int, rank: int = 4):
        super().__init__()
        self.rank = rank
        self.factors = nn.ParameterList(nn.Parameter(torch.empty(rank, d + 1, out)) for d in dims)
        self.bias = nn.Parameter(torch.zeros(out))
        # Each rank-r term is a product of M projections; scale the factors so the product has
        # roughly unit variance at initialisation whatever M and rank.
        for w in self.factors:
            nn.init.normal_(w, std=(1.0 / rank) ** (1.0 / len(dims)) / math.sqrt(w.shape[1]))

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return low_rank_fusion(zs, list(self.factors), self.bias)

    def full_weight(self) -> torch.Tensor:
        """The equivalent tensor-fusion weight ``(Π (d_m + 1), out)``: ``Σ_r W_1^(r) ⊗ ... ⊗ W_M^(r)``."""
        total = None
        for r in range(self.rank):
            w = self.factors[0][r]
            for f in list(self.factors)[1:]:
                w = (w.unsqueeze(1) * f[r].unsqueeze(0)).flatten(0, 1)
            total = w if total is None else total + w
        return total


class BilinearFusion(nn.Module):
    """Bilinear pooling of every pair of modalities, concatenated, then linear (notebook 05, §6).

    With two modalities this is ``torch.nn.Bilinear``: ``h_k = z_1ᵀ W_k z_2 + b_k``.
    """

    def __init__(self, dims: Sequence[int], out: int):
        super().__init__()
        self.pairs = list(itertools.combinations(range(len(dims)), 2))
        self.linear = nn.Linear(sum(dims[i] * dims[j] for i, j in self.pairs), out)

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat([bilinear_pool(zs[i], zs[j]) for i, j in self.pairs], dim=-1))


class CrossAttentionFusion(nn.Module):
    """Cross-modal attention (notebook 05, §7): each modality's token is the query of a
    :func:`cross_attention` block over the *other* modalities' tokens (shared weights, with
    biases), followed by LayerNorm; the M outputs are averaged. All dims must equal ``d``.
    """

    def __init__(self, n_modalities: int, d: int):
        super().__init__()
        self.m = n_modalities
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm = nn.LayerNorm(d)

    def attend(self, q_in: torch.Tensor, kv_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q_in + Wo(A V), A)`` for ``q_in (B, Lq, d)``, ``kv_in (B, Lk, d)``."""
        a = attention_weights(self.q(q_in), self.k(kv_in))
        return q_in + self.o(a @ self.v(kv_in)), a

    def forward(self, zs: Sequence[torch.Tensor], return_attention: bool = False):
        tokens = torch.stack(list(zs), dim=1)  # (B, M, d)
        outs, maps = [], []
        for m in range(self.m):
            others = [i for i in range(self.m) if i != m]
            out, a = self.attend(tokens[:, m:m + 1], tokens[:, others])
            outs.append(out)
            maps.append(a[:, 0])
        fused = self.norm(torch.cat(outs, dim=1)).mean(dim=1)
        return (fused, torch.stack(maps, dim=1)) if return_attention else fused


def make_fusion(kind: str, dims: Sequence[int], out: int, rank: int = 4) -> nn.Module:
    """Build the fusion operator ``kind`` (one of :data:`KINDS`) for input dims ``dims`` → ``out``.

    Weighted sums and cross-attention need every ``d_m == out``.
    """
    dims = list(dims)
    if kind in ("sum_fixed", "sum_learned", "sum_softmax", "cross_attention") and any(d != out for d in dims):
        raise ValueError(f"{kind} needs every modality dim equal to out={out}, got {dims}")
    if kind == "concat":
        return ConcatFusion(dims, out)
    if kind.startswith("sum_"):
        return WeightedSumFusion(len(dims), kind[4:])
    if kind == "gmu":
        return GatedFusion(dims, out)
    if kind == "tensor":
        return TensorFusion(dims, out)
    if kind == "low_rank":
        return LowRankFusion(dims, out, rank)
    if kind == "bilinear":
        return BilinearFusion(dims, out)
    if kind == "cross_attention":
        return CrossAttentionFusion(len(dims), out)
    raise ValueError(f"unknown fusion {kind!r}; choose one of {KINDS}")


# ------------------------------------------------------------------------------- costs

def param_formula(kind: str, dims: Sequence[int], out: int, rank: int = 4) -> int:
    """Parameters of :func:`make_fusion` ``(kind, dims, out)`` from the formula of notebook 05, §8."""
    dims = list(dims)
    m, s = len(dims), sum(dims)
    formulas = {
        "concat": s * out + out,
        "sum_fixed": 0,
        "sum_learned": m,
        "sum_softmax": m,
        "gmu": sum(d * out + out for d in dims) + (s * out + out) * (1 if m == 2 else m),
        "tensor": math.prod(d + 1 for d in dims) * out + out,
        "low_rank": rank * sum(d + 1 for d in dims) * out + out,
        "bilinear": sum(a * b for a, b in itertools.combinations(dims, 2)) * out + out,
        "cross_attention": 4 * (out * out + out) + 2 * out,
    }
    if kind not in formulas:
        raise ValueError(f"unknown fusion {kind!r}; choose one of {KINDS}")
    return formulas[kind]


def flops(kind: str, dims: Sequence[int], out: int, rank: int = 4) -> int:
    """Matrix-product FLOPs per example (2 per multiply-add) of :func:`make_fusion` ``(kind, dims, out)``.

    The convention of ``torch.utils.flop_counter.FlopCounterMode``: matrix products only;
    element-wise work (biases, the outer products themselves, gates, softmax) is not counted
    (notebook 05, §8).
    """
    dims = list(dims)
    m, s = len(dims), sum(dims)
    macs = {
        "concat": s * out,
        "sum_fixed": 0,
        "sum_learned": 0,
        "sum_softmax": 0,
        "gmu": s * out + s * out * (1 if m == 2 else m),
        "tensor": math.prod(d + 1 for d in dims) * out,
        "low_rank": rank * sum(d + 1 for d in dims) * out,
        "bilinear": sum(a * b for a, b in itertools.combinations(dims, 2)) * out,
        # per query token: q, k, v, o projections of its own / the others' tokens, scores, A·V
        "cross_attention": m * (out * out + 2 * (m - 1) * out * out + out * out + 2 * (m - 1) * out),
    }
    if kind not in macs:
        raise ValueError(f"unknown fusion {kind!r}; choose one of {KINDS}")
    return 2 * macs[kind]


def measure_flops(module: nn.Module, zs: Sequence[torch.Tensor]) -> int:
    """FLOPs of one forward pass per example, counted by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(list(zs))
    return counter.get_total_flops() // zs[0].shape[0]


def output_dim(kind: str, dims: Sequence[int], out: int) -> int:
    """Width of the fused vector (the input of the head)."""
    return out


def cost_table(dims: Sequence[int], out: int, rank: int = 4, kinds: Sequence[str] = KINDS,
               measure: bool = True) -> list[dict]:
    """One row per fusion operator: formula parameters and FLOPs, and (``measure``) the counts of the
    built module, so the two can be compared (notebook 05, §8). Kinds that need equal dims are
    skipped when ``dims`` differ."""
    rows = []
    for kind in kinds:
        if kind in ("sum_fixed", "sum_learned", "sum_softmax", "cross_attention") and any(d != out for d in dims):
            continue
        row = {"fusion": kind, "params": param_formula(kind, dims, out, rank), "flops": flops(kind, dims, out, rank)}
        if measure:
            module = make_fusion(kind, dims, out, rank)
            zs = [torch.randn(2, d) for d in dims]
            row["params_counted"] = count_parameters(module)
            row["flops_counted"] = measure_flops(module, zs)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------- training data

class TensorBatches:
    """Mini-batches of in-memory tensors, sliced whole (notebook 05, §9).

    A drop-in for ``DataLoader(TensorDataset(*tensors), batch_size, shuffle)`` for small feature
    vectors: it indexes each tensor once per batch instead of once per example (a ``DataLoader``
    over a ``TensorDataset`` spends most of its time collating single rows). ``fit`` seeds the
    shuffling through the ``generator`` attribute, as it does for a ``DataLoader``.
    """

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int | None = None, shuffle: bool = False,
                 generator: torch.Generator | None = None):
        self.tensors = list(tensors)
        self.n = len(self.tensors[0])
        self.batch_size = batch_size or self.n
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        for i in range(0, self.n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


# ------------------------------------------------------------------------------- classifier

class FusionClassifier(nn.Module):
    """Encoders → fusion → head, for M feature vectors (notebook 05, §9).

    * ``only=m``: unimodal baseline on modality ``m``;
    * ``"early"``: concatenate the *raw* features, then one shared MLP (fusion before any
      modality-specific processing);
    * ``"late"``: one classifier per modality, logits averaged (decision-level fusion);
    * ``"hybrid"``: the average of an intermediate (concat) classifier and the late ones;
    * any of :data:`KINDS`: encoders ``z_m = ReLU(W_m x_m + b_m)`` of width ``d``, the fusion
      operator (output width ``d``), ReLU, a linear head.

    ``modality_dropout=p`` zeroes whole input modalities during training
    (:func:`modality_dropout`); at evaluation nothing is dropped.
    """

    def __init__(self, in_dims: Sequence[int], kind: str = "concat", *, d: int = 16, n_classes: int = 10,
                 rank: int = 4, dropout: float = 0.1, modality_dropout: float = 0.0, only: int | None = None):
        super().__init__()
        self.in_dims, self.kind, self.only, self.p_drop = list(in_dims), kind, only, modality_dropout
        m = len(in_dims)

        def encoder(d_in: int) -> nn.Module:
            return nn.Sequential(nn.Linear(d_in, d), nn.ReLU(), nn.Dropout(dropout))

        if only is not None:
            self.kind = f"only_{only}"
            self.encoders = nn.ModuleList([encoder(in_dims[only])])
            self.head = nn.Linear(d, n_classes)
        elif kind == "early":
            self.encoders = nn.ModuleList([encoder(sum(in_dims))])
            self.head = nn.Linear(d, n_classes)
        elif kind in ("late", "hybrid"):
            self.encoders = nn.ModuleList(encoder(k) for k in in_dims)
            self.heads = nn.ModuleList(nn.Linear(d, n_classes) for _ in range(m))
            if kind == "hybrid":
                self.head = nn.Linear(m * d, n_classes)
        elif kind in KINDS:
            self.encoders = nn.ModuleList(encoder(k) for k in in_dims)
            self.fusion = make_fusion(kind, [d] * m, d, rank)
            self.head = nn.Linear(d, n_classes)
        else:
            raise ValueError(f"unknown kind {kind!r}; choose one of {CLASSIFIER_KINDS} or only=m")

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        xs = list(xs)
        if self.training and self.p_drop > 0:
            xs = modality_dropout(xs, self.p_drop)
        if self.only is not None:
            return self.head(self.encoders[0](xs[self.only]))
        if self.kind == "early":
            return self.head(self.encoders[0](concat(xs)))
        zs = [enc(x) for enc, x in zip(self.encoders, xs)]
        if self.kind in ("late", "hybrid"):
            logits = [h(z) for h, z in zip(self.heads, zs)]
            if self.kind == "hybrid":
                logits.append(self.head(concat(zs)))
            return torch.stack(logits).mean(dim=0)
        return self.head(F.relu(self.fusion(zs)))
