"""Attention from scratch (notebook 01_text_encoders, §3 "Scaled dot-product attention" and §4
"Multi-head attention and the encoder block"; reused in 05 for cross-attention and 08 for the
captioning decoder).

Everything here is plain PyTorch and matches the library versions exactly (see
tests/test_attention.py):

* :func:`scaled_dot_product_attention` ↔ ``torch.nn.functional.scaled_dot_product_attention``
  (same mask convention: a **boolean** mask is ``True`` where a query *may* attend, a **float**
  mask is *added* to the scores, ``is_causal`` hides the future);
* :class:`MultiHeadAttention` ↔ ``torch.nn.MultiheadAttention``;
* :class:`EncoderBlock` ↔ ``torch.nn.TransformerEncoderLayer`` (post-norm, like BERT) and
  ↔ one ``BertLayer`` of the pretrained MiniLM (:func:`EncoderBlock.from_bert_layer`).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def causal_mask(n_query: int, n_key: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (n_query, n_key) mask, ``True`` on and below the diagonal: position i sees keys ≤ i (§3)."""
    n_key = n_query if n_key is None else n_key
    return torch.ones(n_query, n_key, dtype=torch.bool, device=device).tril()


def expand_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Tokenizer ``attention_mask`` (batch, seq) of 1/0 → boolean (batch, 1, 1, seq) key mask (§3).

    Broadcasts over heads and queries: every query may attend to every *real* key, never to padding.
    (:func:`mmcourse.data.batching.padding_mask` builds the (batch, seq) mask from lengths; this
    one expands such a mask for the attention scores.)
    """
    return attention_mask.bool()[:, None, None, :]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask → additive float mask: 0 where allowed, −inf where forbidden (§3)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None,
                      is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ / √d_k + mask) over the keys: (..., Lq, d), (..., Lk, d) → (..., Lq, Lk) (§3).

    Rows in which every key is masked would be 0/0; they come out as NaN, exactly as in PyTorch.
    """
    d_k = q.shape[-1]
    scale = 1.0 / math.sqrt(d_k) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale  # (..., Lq, Lk)
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.to(scores.dtype)
    return scores.softmax(dim=-1)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, is_causal: bool = False,
                                 scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(QKᵀ/√d_k + M) V, returning ``(output, weights)`` (§3).

    Shapes: q (..., Lq, d_k), k (..., Lk, d_k), v (..., Lk, d_v) → output (..., Lq, d_v),
    weights (..., Lq, Lk). ``mask`` broadcasts to (..., Lq, Lk): boolean ``True`` = may attend,
    or a float mask that is added to the scores (use −inf to forbid). Same convention and
    result as ``torch.nn.functional.scaled_dot_product_attention`` (without dropout).
    """
    w = attention_weights(q, k, mask, is_causal, scale)
    return w @ v, w


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, seq, d_model) → (batch, heads, seq, d_head): head h gets features h·d_head … (h+1)·d_head − 1 (§4)."""
    b, s, d = x.shape
    return x.view(b, s, num_heads, d // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(batch, heads, seq, d_head) → (batch, seq, heads·d_head): the inverse of :func:`split_heads` (§4)."""
    b, h, s, dh = x.shape
    return x.transpose(1, 2).reshape(b, s, h * dh)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project to Q, K, V, attend in ``num_heads`` subspaces, concatenate, project (§4).

    ``forward(x, context=None, mask=None)``: self-attention when ``context`` is None, else
    cross-attention (queries from ``x``, keys and values from ``context``; notebooks 05, 08).
    Returns ``(output (batch, Lq, d_model), weights (batch, heads, Lq, Lk))``.
    """

    def __init__(self, d_model: int, num_heads: int, bias: bool = True):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        context = x if context is None else context
        q = split_heads(self.q_proj(x), self.num_heads)        # (batch, heads, Lq, d_head)
        k = split_heads(self.k_proj(context), self.num_heads)  # (batch, heads, Lk, d_head)
        v = split_heads(self.v_proj(context), self.num_heads)  # (batch, heads, Lk, d_head)
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
        return self.out_proj(merge_heads(out)), w

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> "MultiHeadAttention":
        """Copy the weights of a ``torch.nn.MultiheadAttention`` (its fused ``in_proj`` is q, k, v stacked)."""
        d = self.d_model
        for i, proj in enumerate((self.q_proj, self.k_proj, self.v_proj)):
            proj.weight.copy_(mha.in_proj_weight[i * d:(i + 1) * d])
            if proj.bias is not None:
                proj.bias.copy_(mha.in_proj_bias[i * d:(i + 1) * d])
        self.out_proj.load_state_dict(mha.out_proj.state_dict())
        return self


class EncoderBlock(nn.Module):
    """One Transformer encoder layer, post-norm as in the original Transformer and BERT (§4)::

        h = LayerNorm(x + MultiHeadAttention(x))
        y = LayerNorm(h + W₂ act(W₁ h + b₁) + b₂)

    ``norm_first=True`` gives the pre-norm variant (x + MHA(LN(x)), …) used by most LLMs.
    No dropout (add it when training from scratch). ``forward(x, mask)`` → (batch, seq, d_model).
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, activation: str = "gelu",
                 eps: float = 1e-5, norm_first: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, num_heads)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.ff1 = nn.Linear(d_model, d_ff)
        self.ff2 = nn.Linear(d_ff, d_model)
        self.norm2 = nn.LayerNorm(d_model, eps=eps)
        self.act = {"gelu": F.gelu, "relu": F.relu}[activation]
        self.norm_first = norm_first
        self.last_weights: torch.Tensor | None = None

    def _ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff2(self.act(self.ff1(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            a, self.last_weights = self.attn(self.norm1(x), mask=mask)
            x = x + a
            return x + self._ff(self.norm2(x))
        a, self.last_weights = self.attn(x, mask=mask)
        h = self.norm1(x + a)
        return self.norm2(h + self._ff(h))

    @torch.no_grad()
    def load_from_torch(self, layer: nn.TransformerEncoderLayer) -> "EncoderBlock":
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` with the same sizes."""
        self.attn.load_from_torch(layer.self_attn)
        self.ff1.load_state_dict(layer.linear1.state_dict())
        self.ff2.load_state_dict(layer.linear2.state_dict())
        self.norm1.load_state_dict(layer.norm1.state_dict())
        self.norm2.load_state_dict(layer.norm2.state_dict())
        return self

    @classmethod
    @torch.no_grad()
    def from_bert_layer(cls, layer: nn.Module, num_heads: int, eps: float = 1e-12) -> "EncoderBlock":
        """An :class:`EncoderBlock` holding a copy of one Hugging Face ``BertLayer`` (MiniLM, §5)."""
        sa, so = layer.attention.self, layer.attention.output
        d_model, d_ff = sa.query.in_features, layer.intermediate.dense.out_features
        block = cls(d_model, num_heads, d_ff, activation="gelu", eps=eps)
        block.attn.q_proj.load_state_dict(sa.query.state_dict())
        block.attn.k_proj.load_state_dict(sa.key.state_dict())
        block.attn.v_proj.load_state_dict(sa.value.state_dict())
        block.attn.out_proj.load_state_dict(so.dense.state_dict())
        block.norm1.load_state_dict(so.LayerNorm.state_dict())
        block.ff1.load_state_dict(layer.intermediate.dense.state_dict())
        block.ff2.load_state_dict(layer.output.dense.state_dict())
        block.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
        return block.to(sa.query.weight.dtype).eval()
