"""mmcourse.fusion (notebook 05): shapes, parameter counts equal to the formulas, FLOPs equal to
torch's counter, gradients reach every parameter, equivalences between operators, golden values."""
import math

import numpy as np
import pytest
import torch

from mmcourse import fusion

DIMS = [3, 5, 4]
OUT = 6


def _zs(dims=DIMS, b=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g) for d in dims]


def _dims_for(kind, dims=DIMS, out=OUT):
    equal = kind in ("sum_fixed", "sum_learned", "sum_softmax", "cross_attention")
    return [out] * len(dims) if equal else dims


@pytest.mark.parametrize("kind", fusion.KINDS)
@pytest.mark.parametrize("n_mod", [2, 3])
def test_shapes_params_and_flops_match_the_formulas(kind, n_mod):
    dims = _dims_for(kind, DIMS[:n_mod])
    torch.manual_seed(0)
    module = fusion.make_fusion(kind, dims, OUT, rank=3)
    zs = _zs(dims)
    assert module(zs).shape == (7, OUT)
    assert fusion.count_parameters(module) == fusion.param_formula(kind, dims, OUT, rank=3)
    assert fusion.measure_flops(module, zs) == fusion.flops(kind, dims, OUT, rank=3)


@pytest.mark.parametrize("kind", [k for k in fusion.KINDS if k != "sum_fixed"])
def test_gradients_reach_every_parameter(kind):
    dims = _dims_for(kind)
    torch.manual_seed(0)
    module = fusion.make_fusion(kind, dims, OUT)
    zs = [z.requires_grad_() for z in _zs(dims)]
    module(zs).square().sum().backward()
    params = dict(module.named_parameters())
    assert params, kind
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{kind}: no gradient for {name}"
    for z in zs:
        assert z.grad is not None and z.grad.abs().sum() > 0


def test_low_rank_factors_are_registered_parameters():
    """The bug of public LMF code: factors kept as plain tensors are invisible to the optimiser."""
    lmf = fusion.LowRankFusion(DIMS, OUT, rank=4)
    names = {n for n, _ in lmf.named_parameters()}
    assert {f"factors.{i}" for i in range(3)} <= names
    assert fusion.count_parameters(lmf) == 4 * sum(d + 1 for d in DIMS) * OUT + OUT
    assert len(lmf.state_dict()) == 4
    lmf.double()
    assert all(w.dtype == torch.float64 for w in lmf.factors)

    class Buggy(torch.nn.Module):  # the bug, for contrast
        def __init__(self):
            super().__init__()
            self.factors = [torch.randn(4, d + 1, OUT, requires_grad=True) for d in DIMS]
            self.bias = torch.nn.Parameter(torch.zeros(OUT))
    assert fusion.count_parameters(Buggy()) == OUT


def test_low_rank_equals_tensor_fusion_with_the_full_weight():
    torch.manual_seed(0)
    lmf = fusion.LowRankFusion(DIMS, OUT, rank=3).double()
    zs = [z.double() for z in _zs()]
    W = lmf.full_weight()
    assert W.shape == (math.prod(d + 1 for d in DIMS), OUT)
    torch.testing.assert_close(lmf(zs), fusion.tensor_fusion(zs) @ W + lmf.bias, rtol=1e-10, atol=1e-10)


def test_tensor_fusion_contains_all_lower_order_terms():
    zs = _zs([2, 3, 4], b=2)
    t = fusion.tensor_fusion(zs).view(2, 3, 4, 5)
    torch.testing.assert_close(t[:, :2, 3, 4], zs[0])          # unimodal terms
    torch.testing.assert_close(t[:, 2, :3, 4], zs[1])
    torch.testing.assert_close(t[:, 2, 3, :4], zs[2])
    torch.testing.assert_close(t[:, :2, :3, 4], zs[0][:, :, None] * zs[1][:, None, :])  # a bimodal term
    assert torch.all(t[:, 2, 3, 4] == 1)                       # the constant


def test_bilinear_with_two_modalities_is_nn_bilinear():
    torch.manual_seed(0)
    fus = fusion.BilinearFusion([3, 5], OUT)
    ref = torch.nn.Bilinear(3, 5, OUT)
    with torch.no_grad():
        ref.weight.copy_(fus.linear.weight.view(OUT, 3, 5))
        ref.bias.copy_(fus.linear.bias)
    x, y = _zs([3, 5])
    torch.testing.assert_close(fus([x, y]), ref(x, y))


def test_gmu_bimodal_is_the_papers_formula():
    torch.manual_seed(0)
    gmu = fusion.GatedFusion([3, 5], OUT)
    x, y = _zs([3, 5])
    hv, ht = torch.tanh(gmu.proj[0](x)), torch.tanh(gmu.proj[1](y))
    z = torch.sigmoid(gmu.gate(torch.cat([x, y], 1)))
    torch.testing.assert_close(gmu([x, y]), z * hv + (1 - z) * ht)
    g = fusion.GatedFusion([4, 4, 4], OUT).gates(_zs([4, 4, 4]))
    assert g.shape == (7, 3, OUT) and torch.all((g > 0) & (g < 1))


def test_weighted_sums():
    feats = torch.randn(4, 3, 5)
    w = torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(fusion.weighted_sum(feats, w), 0.2 * feats[:, 0] + 0.3 * feats[:, 1] + 0.5 * feats[:, 2])
    logits = torch.randn(4, 3)
    p = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(fusion.softmax_weighted_sum(feats, logits), (p[..., None] * feats).sum(1))
    ws = fusion.WeightedSumFusion(3, "softmax")
    assert torch.allclose(ws.weights().sum(), torch.tensor(1.0))
    torch.testing.assert_close(ws(list(feats.unbind(1))), feats.mean(1))  # zero logits: equal weights
    fixed = fusion.WeightedSumFusion(3, "fixed", weights=[0.2, 0.3, 0.5])
    assert fusion.count_parameters(fixed) == 0 and torch.equal(fixed.weights(), w)
    with pytest.raises(ValueError):
        fusion.make_fusion("sum_softmax", [3, 4], 3)


def test_cross_attention_function_and_module_agree():
    torch.manual_seed(0)
    blk = fusion.CrossAttentionFusion(3, 8)
    q, kv = torch.randn(2, 1, 8), torch.randn(2, 2, 8)
    out, a = blk.attend(q, kv)
    assert a.shape == (2, 1, 2) and torch.allclose(a.sum(-1), torch.ones(2, 1))
    # without biases the module block is exactly the function
    for lin in (blk.q, blk.k, blk.v, blk.o):
        torch.nn.init.zeros_(lin.bias)
    out, _ = blk.attend(q, kv)
    ref = fusion.cross_attention(q, kv, blk.q.weight.T, blk.k.weight.T, blk.v.weight.T, blk.o.weight.T)
    torch.testing.assert_close(out, ref)
    fused, maps = blk(_zs([8, 8, 8]), return_attention=True)
    assert fused.shape == (7, 8) and maps.shape == (7, 3, 2)


def test_cross_attention_uses_scaling_and_residual():
    q_in, kv_in = torch.randn(1, 2, 4), torch.randn(1, 3, 4)
    eye = torch.eye(4)
    out = fusion.cross_attention(q_in, kv_in, eye * 3, eye, eye, eye)
    a = torch.softmax(3 * q_in @ kv_in.transpose(1, 2) / 2.0, dim=-1)
    torch.testing.assert_close(out, q_in + a @ kv_in)


def test_modality_dropout_never_drops_everything():
    xs = [torch.ones(1000, 2), torch.ones(1000, 3), torch.ones(1000, 4)]
    g = torch.Generator().manual_seed(0)
    out = fusion.modality_dropout(xs, 0.6, generator=g)
    kept = torch.stack([o[:, 0] for o in out], dim=1)
    assert kept.sum(1).min() >= 1
    assert 0.3 < kept.mean() < 0.5  # ≈ 1 − 0.6, a little more because of the rescue
    assert fusion.modality_dropout(xs, 0.0) == xs
    assert torch.equal(fusion.zero_modality(xs, 1)[1], torch.zeros(1000, 3))


def test_tensor_batches_cover_every_row_once_and_follow_the_generator():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    tb = fusion.TensorBatches([x, y], batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(tb) == 3
    seen = torch.cat([b[1] for b in tb])
    assert sorted(seen.tolist()) == list(range(10))
    tb.generator = torch.Generator().manual_seed(1)
    first = torch.cat([b[1] for b in tb])
    tb.generator = torch.Generator().manual_seed(1)
    assert torch.equal(first, torch.cat([b[1] for b in tb]))


@pytest.mark.parametrize("kind", fusion.CLASSIFIER_KINDS)
def test_classifier_forward_and_gradients(kind):
    torch.manual_seed(0)
    model = fusion.FusionClassifier([6, 4, 5], kind, d=8, n_classes=10, modality_dropout=0.3)
    xs = _zs([6, 4, 5])
    logits = model(xs)
    assert logits.shape == (7, 10)
    torch.nn.functional.cross_entropy(logits, torch.arange(7)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{kind}: {name} got no gradient"
    model.eval()
    assert torch.equal(model(xs), model(xs))  # no dropout of any kind at evaluation


def test_unimodal_classifier_ignores_other_modalities():
    model = fusion.FusionClassifier([6, 4, 5], only=1, d=8).eval()
    xs = _zs([6, 4, 5])
    torch.testing.assert_close(model(xs), model(fusion.zero_modality(fusion.zero_modality(xs, 0), 2)))


def test_cost_table_skips_equal_dim_kinds_for_unequal_dims():
    rows = fusion.cost_table([3, 4, 5], 6)
    kinds = [r["fusion"] for r in rows]
    assert "sum_softmax" not in kinds and "tensor" in kinds
    assert all(r["params"] == r["params_counted"] and r["flops"] == r["flops_counted"] for r in rows)


# ---- golden values (fixed init, independent of torch's random init) ---------------------------

def _fixed_init_(module: torch.nn.Module) -> None:
    """Every parameter from NumPy's seeded generator (stable across versions), not torch's init."""
    rng = np.random.RandomState(5)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(p.shape))).to(p.dtype))


def _fixed_inputs(dims, b=2):
    rng = np.random.RandomState(11)
    return [torch.from_numpy(rng.standard_normal((b, d))).float() for d in dims]


GOLDEN = {'concat': -0.34381, 'sum_fixed': -4.445892, 'sum_learned': -0.513323, 'sum_softmax': -4.945024,
          'gmu': 0.129117, 'tensor': 7.209733, 'low_rank': 0.932389, 'bilinear': 1.072156,
          'cross_attention': -0.984991}


@pytest.mark.parametrize("kind", fusion.KINDS)
def test_golden_values(kind):
    """Pins each operator's output on fixed weights and inputs: a refactor that changes the maths fails."""
    dims = _dims_for(kind, [4, 4, 4], 4)
    module = fusion.make_fusion(kind, dims, 4, rank=2)
    _fixed_init_(module)
    value = (module(_fixed_inputs(dims)) * torch.linspace(-1.0, 2.0, 4)).sum().item()
    assert value == pytest.approx(GOLDEN[kind], rel=1e-5, abs=1e-6)
