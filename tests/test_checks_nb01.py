"""Checks of notebook 01 (mmcourse.checks.nb01): the reference passes, typical mistakes get their hint."""
import math

import pytest
import torch
from torch.nn import functional as F

from mmcourse import attention, checks, text
from mmcourse.checks import nb01


def _run(check, fn, capsys):
    check(fn)
    return capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- references pass

@pytest.mark.parametrize("check, ref, n_ok", [
    (nb01.check_attention, lambda q, k, v, mask=None: attention.scaled_dot_product_attention(q, k, v, mask=mask), 4),
    (nb01.check_split_heads, attention.split_heads, 1),
    (nb01.check_mean_pool, text.mean_pool, 1),
    (nb01.check_top_k, lambda q, c, k: text.nearest_neighbours(q, c, k)[1], 1),
])
def test_reference_passes_in_strict_mode(monkeypatch, capsys, check, ref, n_ok):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    out = _run(check, ref, capsys)
    assert out.count("✓") == n_ok and "✗" not in out


def test_attention_via_torch_sdpa_passes(lenient, capsys):
    def via_torch(q, k, v, mask=None):
        d = q.shape[-1]
        s = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), s.softmax(-1)
    out = _run(nb01.check_attention, via_torch, capsys)
    assert out.count("✓") == 4 and "✗" not in out


# ---------------------------------------------------------------- typical mistakes

def _attn(scale=None, axis=-1, mask_mode="fill", dtype=None, swap=False):
    def fn(q, k, v, mask=None):
        d = q.shape[-1]
        s = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale(d))
        if mask is not None and mask_mode == "fill":
            s = s.masked_fill(~mask, float("-inf"))
        if mask is not None and mask_mode == "inverted":
            s = s.masked_fill(mask, float("-inf"))
        if mask is not None and mask_mode == "zero":
            s = s.masked_fill(~mask, 0.0)
        w = s.softmax(axis)
        if mask is not None and mask_mode == "after":
            w = w * mask
        if dtype is not None:
            w, v = w.to(dtype), v.to(dtype)
        return (w, w @ v) if swap else (w @ v, w)
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (_attn(scale=lambda d: 1.0), "not scaled"),
    (_attn(scale=lambda d: 1 / d), "divided by d_k"),
    (_attn(axis=-2), "wrong axis"),
    (_attn(mask_mode="inverted"), "inverted"),
    (_attn(mask_mode="after"), "after the softmax"),
    (_attn(mask_mode="zero"), "-inf"),
    (_attn(dtype=torch.float32), "dtype"),
    (_attn(swap=True), "swapped"),
    (lambda q, k, v, mask=None: q @ k.transpose(-2, -1), "(output, weights)"),
    (lambda q, k, v, mask=None: (q @ k.transpose(0, 1)) @ v, "Error"),  # transposed the wrong axes
])
def test_attention_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb01.check_attention, wrong, capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), "scrambles tokens"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], h, -1), "transpose(1, 2)"),
    (lambda x, h: x.view(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2), "interleaved"),
    (lambda x, h: x.view(x.shape[0] * h, x.shape[1], -1), "separate axes"),
])
def test_split_heads_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb01.check_split_heads, wrong, capsys)
    assert "✗" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda h, m: h.mean(1), "over padding"),
    (lambda h, m: (h * m.unsqueeze(-1)).sum(1) / h.shape[1], "padded length"),
    (lambda h, m: (h * m.unsqueeze(-1)).sum(1), "did not divide"),
    (lambda h, m: h[:, 0], "[CLS]"),
    (lambda h, m: (h * m.unsqueeze(-1)).sum(1) / (m.sum(1, keepdim=True) - 1), "off by one"),
    (lambda h, m: (h * m.unsqueeze(-1)).mean(2), "feature axis"),
    (lambda h, m: ((h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)).float(), "dtype"),
    (lambda h, m: (h * m).sum(1), "Error"),  # forgot unsqueeze: shapes do not broadcast
])
def test_mean_pool_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb01.check_mean_pool, wrong, capsys)
    assert "✗" in out and hint in out, out


def _cos(q, c):
    return F.normalize(q, dim=-1) @ F.normalize(c, dim=-1).T


@pytest.mark.parametrize("wrong, hint", [
    (lambda q, c, k: _cos(q, c).argsort(dim=-1)[:, :k], "least"),
    (lambda q, c, k: (q @ c.T).topk(k, dim=-1).indices, "L2-normalise"),
    (lambda q, c, k: _cos(q, c).topk(k + 1, dim=-1).indices, "off by one"),
    (lambda q, c, k: _cos(q, c).argsort(dim=-1, descending=True)[:, 1:k + 1], "off by one"),
    (lambda q, c, k: _cos(q, c).argsort(dim=0, descending=True)[:, :k], "corpus axis"),
    (lambda q, c, k: _cos(q, c).argsort(dim=-1, descending=True), "best k"),
    (lambda q, c, k: _cos(q, c).topk(k, dim=-1).values, "indices"),
])
def test_top_k_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb01.check_top_k, wrong, capsys)
    assert "✗" in out and hint in out, out


def test_top_k_probe_separates_cosine_from_dot_product():
    q, c, k = nb01._probe_neighbours()
    assert not torch.equal((q @ c.T).topk(k, dim=-1).indices, text.nearest_neighbours(q, c, k)[1])


# ---------------------------------------------------------------- pending and strict

@pytest.mark.parametrize("check", [nb01.check_attention, nb01.check_split_heads, nb01.check_mean_pool,
                                   nb01.check_top_k])
def test_pending_is_reported_not_crashed(lenient, capsys, check):
    out = _run(check, _stub, capsys)
    assert "pending" in out and "✗" not in out


def test_strict_mode_raises_on_mistake_and_pending(monkeypatch):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="not scaled"):
        nb01.check_attention(_attn(scale=lambda d: 1.0))
    with pytest.raises(checks.CheckFailed, match="pending"):
        nb01.check_mean_pool(_stub)


# ---------------------------------------------------------------- the hints live in the ✗ feedback (issue 11, A.4)

def test_code_level_hints_come_with_the_mistake(lenient, capsys):
    def transpose_all(q, k, v, mask=None):  # k.T on a 4-D tensor reverses every axis
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = (q @ k.T / math.sqrt(q.shape[-1])).softmax(-1)
        return w @ v, w

    def ignores_mask(q, k, v, mask=None):
        w = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
        return w @ v, w

    assert "k.transpose(-2, -1)" in _run(nb01.check_attention, transpose_all, capsys)
    out = _run(nb01.check_attention, ignores_mask, capsys)
    assert "the mask was ignored" in out and "masked_fill(~mask" in out


@pytest.mark.parametrize("check, right, wrong", [
    (nb01.check_quiz_1_1, 4800, 400),
    (nb01.check_quiz_1_2, "b", "a"),
    (nb01.check_quiz_1_3, 0.25, 1.0),
])
def test_quiz_items(quiz_behaviour, check, right, wrong):
    quiz_behaviour(check, right, wrong)
