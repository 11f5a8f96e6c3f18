"""mmcourse.attention (notebook 01, §3–4) against PyTorch's own implementations."""
import pytest
import torch
from torch.nn import functional as F

from mmcourse import attention

SHAPES = [((1, 1, 4), (1, 1, 4)), ((2, 3, 5, 8), (2, 3, 7, 8)), ((4, 1, 16), (4, 9, 16)),
          ((3, 2, 6, 1), (3, 2, 6, 1)), ((2, 4, 10, 32), (2, 4, 3, 32))]


def _qkv(q_shape, k_shape, seed, dv=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(q_shape, generator=g, dtype=torch.float64)
    k = torch.randn(k_shape, generator=g, dtype=torch.float64)
    v_shape = k_shape[:-1] + ((dv,) if dv else (k_shape[-1],))
    v = torch.randn(v_shape, generator=g, dtype=torch.float64)
    return q, k, v, g


def _random_bool_mask(shape, g):
    m = torch.rand(shape, generator=g) > 0.4
    m[..., 0] = True  # every query keeps at least one key (an all-masked row is NaN in both)
    return m


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("q_shape, k_shape", SHAPES)
def test_matches_torch_sdpa_without_and_with_masks(q_shape, k_shape, seed):
    q, k, v, g = _qkv(q_shape, k_shape, seed, dv=5)
    lq, lk = q_shape[-2], k_shape[-2]
    bool_mask = _random_bool_mask(q_shape[:-2] + (lq, lk), g)
    broadcast = _random_bool_mask((1, lk), g)  # one key mask for every batch, head and query
    additive = torch.randn(lq, lk, generator=g, dtype=torch.float64)
    for mask in (None, bool_mask, broadcast, additive, attention.additive_mask(bool_mask, torch.float64)):
        ours, w = attention.scaled_dot_product_attention(q, k, v, mask=mask)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        assert (ours - ref).abs().max() < 1e-6
        assert torch.allclose(w.sum(-1), torch.ones((), dtype=torch.float64))


@pytest.mark.parametrize("q_shape, k_shape", SHAPES)
def test_causal_matches_torch_and_hides_the_future(q_shape, k_shape):
    q, k, v, _ = _qkv(q_shape, k_shape, 7)
    ours, w = attention.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert (ours - ref).abs().max() < 1e-6
    lq, lk = w.shape[-2:]
    future = ~attention.causal_mask(lq, lk)
    assert (w[..., future] == 0).all()
    # the explicit boolean mask is the same thing
    ours2, _ = attention.scaled_dot_product_attention(q, k, v, mask=attention.causal_mask(lq, lk))
    assert (ours2 - ref).abs().max() < 1e-6


def test_scale_argument_and_expand_mask():
    q, k, v, _ = _qkv((2, 3, 4, 8), (2, 3, 6, 8), 3)
    ours, _ = attention.scaled_dot_product_attention(q, k, v, scale=0.3)
    assert (ours - F.scaled_dot_product_attention(q, k, v, scale=0.3)).abs().max() < 1e-6
    am = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    m = attention.expand_mask(am)
    assert m.shape == (2, 1, 1, 6) and m.dtype == torch.bool
    _, w = attention.scaled_dot_product_attention(q, k, v, mask=m)
    assert (w[0, ..., 4:] == 0).all() and (w[1] > 0).all()
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    assert (attention.scaled_dot_product_attention(q, k, v, mask=m)[0] - ref).abs().max() < 1e-6


def test_split_and_merge_heads_are_inverse_and_match_reshape_convention():
    x = torch.arange(2 * 5 * 12, dtype=torch.float64).view(2, 5, 12)
    h = attention.split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    assert torch.equal(h[1, 2, 4], x[1, 4, 8:12])  # head 2 holds features 8..11
    assert torch.equal(attention.merge_heads(h), x)


@pytest.mark.parametrize("d_model, heads, lq, lk", [(8, 2, 5, 5), (12, 3, 4, 7), (16, 1, 3, 3)])
def test_multi_head_attention_matches_torch(d_model, heads, lq, lk):
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(d_model, heads, batch_first=True, dtype=torch.float64)
    ours = attention.MultiHeadAttention(d_model, heads).double().load_from_torch(ref)
    x = torch.randn(2, lq, d_model, dtype=torch.float64)
    ctx = torch.randn(2, lk, d_model, dtype=torch.float64)
    keep = torch.ones(2, lk, dtype=torch.bool)
    keep[0, -2:] = False
    out_ref, w_ref = ref(x, ctx, ctx, key_padding_mask=~keep, average_attn_weights=False)  # torch: True = ignore
    out, w = ours(x, ctx, mask=keep[:, None, None, :])  # ours: True = may attend
    assert (out - out_ref).abs().max() < 1e-6 and (w - w_ref).abs().max() < 1e-6
    if lq == lk:
        cm = torch.nn.Transformer.generate_square_subsequent_mask(lq, dtype=torch.float64)
        out_ref, _ = ref(x, x, x, attn_mask=cm)
        out, _ = ours(x, is_causal=True)
        assert (out - out_ref).abs().max() < 1e-6


def test_multi_head_attention_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        attention.MultiHeadAttention(10, 3)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_encoder_block_matches_transformer_encoder_layer(norm_first, activation):
    torch.manual_seed(1)
    ref = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=40, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first, dtype=torch.float64).eval()
    ours = attention.EncoderBlock(16, 4, 40, activation=activation, norm_first=norm_first).double()
    ours.load_from_torch(ref)
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    am = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    # grad mode on: PyTorch's nested-tensor fast path (which zeroes padded rows) stays off
    y_ref = ref(x, src_key_padding_mask=am == 0)
    y = ours(x, mask=attention.expand_mask(am))
    assert (y - y_ref).abs().max() < 1e-6
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters())


def test_encoder_block_reproduces_a_minilm_layer(models_ready):
    from mmcourse import pretrained
    model, tok = pretrained.load("text")
    batch = tok(["a dog runs on the beach", "two people"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = model(**batch, output_hidden_states=True).hidden_states
        block = attention.EncoderBlock.from_bert_layer(model.encoder.layer[0], model.config.num_attention_heads,
                                                       model.config.layer_norm_eps)
        y = block(hs[0], mask=attention.expand_mask(batch["attention_mask"]))
    real = batch["attention_mask"].bool()
    assert (y - hs[1])[real].abs().max() < 1e-4
