"""Checks of notebook 05: the library references pass, typical wrong answers get ✗ and a
specific hint, unattempted exercises are pending, strict mode raises."""
import math

import pytest
import torch

from mmcourse import checks, fusion
from mmcourse.checks import nb05


def _stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("check, ref", [
    (nb05.check_softmax_weighted_sum, fusion.softmax_weighted_sum),
    (nb05.check_tensor_fusion, fusion.tensor_fusion),
    (nb05.check_cross_attention, fusion.cross_attention),
])
def test_reference_passes_and_stub_is_pending(lenient, capsys, check, ref):
    check(ref)
    out = capsys.readouterr().out
    assert out.count("✓") == 1 and "✗" not in out
    check(_stub)
    out = capsys.readouterr().out
    assert "pending" in out and "✗" not in out


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="wrong axis"):
        nb05.check_softmax_weighted_sum(lambda f, a: fusion.weighted_sum(f, torch.softmax(a, dim=0)))
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb05.check_cross_attention(_stub)


# ---- exercise 5.1 ---------------------------------------------------------------------------

@pytest.mark.parametrize("wrong, hint", [
    (lambda f, a: fusion.weighted_sum(f, torch.softmax(a, dim=0)), "softmax over the wrong axis"),
    (lambda f, a: fusion.weighted_sum(f, a), "apply softmax first"),
    (lambda f, a: fusion.weighted_sum(f, a / a.sum(-1, keepdim=True)), "exponentiate first"),
    (lambda f, a: f.mean(1), "plain mean"),
    (lambda f, a: f.sum(1), "unweighted sum"),
    (lambda f, a: torch.softmax(a, -1)[..., None] * f, "did not add them up"),
    (lambda f, a: None, "return"),
])
def test_softmax_weighted_sum_mistakes(lenient, capsys, wrong, hint):
    nb05.check_softmax_weighted_sum(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


# ---- exercise 5.2 ---------------------------------------------------------------------------

def _outer(vs):
    out = vs[0]
    for v in vs[1:]:
        out = (out[:, :, None] * v[:, None, :]).reshape(len(out), -1)
    return out


def _cat(z, value, front=False):
    c = torch.full_like(z[:, :1], value)
    return torch.cat([c, z] if front else [z, c], dim=1)


@pytest.mark.parametrize("wrong, hint", [
    (lambda zs: _outer(zs), "forgot the appended 1"),
    (lambda zs: _outer([_cat(z, 1.0, front=True) for z in zs]), "you prepended the 1"),
    (lambda zs: _outer([_cat(z, 1.0) for z in zs[::-1]]), "reverse order"),
    (lambda zs: _outer([_cat(z, 0.0) for z in zs]), "appended 0 instead of 1"),
    (lambda zs: torch.cat([_cat(z, 1.0) for z in zs], dim=1), "that is a concatenation"),
    (lambda zs: torch.einsum("bi,bj,bk->bijk", *[_cat(z, 1.0) for z in zs]), "flatten it"),
    (lambda zs: 1 / 0, "ZeroDivisionError"),
])
def test_tensor_fusion_mistakes(lenient, capsys, wrong, hint):
    nb05.check_tensor_fusion(wrong)
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


# ---- exercise 5.3 ---------------------------------------------------------------------------

def _xattn(scale="sqrt_dk", dim=-1, residual="input", self_attn=False, swap_kv=False):
    def fn(q_in, kv_in, Wq, Wk, Wv, Wo):
        src = q_in if self_attn else kv_in
        Q, K, V = q_in @ Wq, src @ Wk, src @ Wv
        if swap_kv:
            K, V = V, K
        s = Q @ K.transpose(-2, -1)
        s = {"sqrt_dk": s / math.sqrt(Wq.shape[1]), "none": s, "dk": s / Wq.shape[1],
             "sqrt_d": s / math.sqrt(q_in.shape[-1])}[scale]
        av = torch.softmax(s, dim=dim) @ V
        if residual == "input":
            return q_in + av @ Wo
        if residual == "none":
            return av @ Wo
        if residual == "Q":
            return Q @ Wo + av @ Wo
        return (av + Q) @ Wo  # "inside"
    return fn


@pytest.mark.parametrize("kwargs, hint", [
    ({"scale": "none"}, "missing scaling"),
    ({"scale": "dk"}, "not 1/d_k"),
    ({"scale": "sqrt_d"}, "not by √d of the input"),
    ({"dim": -2}, "softmax over the wrong axis"),
    ({"residual": "none"}, "the residual is missing"),
    ({"residual": "Q"}, "not the projected queries"),
    ({"residual": "inside"}, "not the projected queries"),
    ({"self_attn": True}, "self-attention"),
    ({"swap_kv": True}, "keys and values are swapped"),
])
def test_cross_attention_mistakes(lenient, capsys, kwargs, hint):
    nb05.check_cross_attention(_xattn(**kwargs))
    out = capsys.readouterr().out
    assert "✗" in out and hint in out


def test_cross_attention_swapped_inputs(lenient, capsys):
    nb05.check_cross_attention(lambda q, kv, Wq, Wk, Wv, Wo: _xattn()(kv, q, Wq, Wk, Wv, Wo))
    out = capsys.readouterr().out
    assert "✗" in out and "swapped the two inputs" in out


def test_correct_variants_pass(lenient, capsys):
    """Equivalent correct code (explicit loops / F.scaled_dot_product_attention) is accepted."""
    def sdpa(q_in, kv_in, Wq, Wk, Wv, Wo):
        return q_in + torch.nn.functional.scaled_dot_product_attention(q_in @ Wq, kv_in @ Wk, kv_in @ Wv) @ Wo
    nb05.check_cross_attention(sdpa)
    nb05.check_tensor_fusion(lambda zs: torch.einsum("bi,bj,bk->bijk", *[_cat(z, 1.0) for z in zs]).flatten(1))
    nb05.check_softmax_weighted_sum(lambda f, a: torch.einsum("bm,bmd->bd", torch.softmax(a, 1), f))
    out = capsys.readouterr().out
    assert out.count("✓") == 3 and "✗" not in out


# ---- quiz items -------------------------------------------------------------------------------

@pytest.mark.parametrize("check, right, wrong, explained", [
    (nb05.check_quiz_5_1, 305, 125, "Forgetting the appended 1s"),
    (nb05.check_quiz_5_2, "a", "b", "Bayes' rule"),
    (nb05.check_quiz_5_3, "a", "c", "'which digit' and 'which offset'"),
])
def test_quiz_items(quiz_behaviour, check, right, wrong, explained):
    quiz_behaviour(check, right, wrong, explained)
