"""Checks of notebook 07_finetuning_recipe: the reference passes, typical mistakes get their hint."""
from __future__ import annotations

import copy
import math

import pytest

from mmcourse.checks import nb07
from mmcourse.train import warmup_cosine
from checkhelp import verdict


pytestmark = pytest.mark.usefixtures("lenient")


# ---------------------------------------------------------------- lora_forward

def test_lora_forward_reference_passes(capsys):
    out = verdict(nb07.check_lora_forward, nb07.reference_lora_forward, capsys)
    assert out.count("✓") == 2 and "✗" not in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, W, b, A, B, alpha, r: x @ W.T + b + (x @ A.T) @ B.T, "left the scaling out"),
    (lambda x, W, b, A, B, alpha, r: x @ W.T + b + alpha * (x @ A.T) @ B.T, "not by alpha alone"),
    (lambda x, W, b, A, B, alpha, r: x @ W.T + b + (r / alpha) * (x @ A.T) @ B.T, "not r / alpha"),
    (lambda x, W, b, A, B, alpha, r: x @ W.T + (alpha / r) * (x @ A.T) @ B.T, "dropped the bias"),
    (lambda x, W, b, A, B, alpha, r: (alpha / r) * (x @ A.T) @ B.T, "only the low-rank update"),
    (lambda x, W, b, A, B, alpha, r: x @ W + b, "RuntimeError"),  # W not transposed: shapes clash
])
def test_lora_forward_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb07.check_lora_forward, wrong, capsys)
    assert "✗" in out and hint in out


def test_lora_forward_pending(capsys):
    def stub(*args):
        raise NotImplementedError
    out = verdict(nb07.check_lora_forward, stub, capsys)
    assert "pending" in out and "✗" not in out


# ---------------------------------------------------------------- update_best

def test_update_best_reference_and_deepcopy_pass(capsys):
    out = verdict(nb07.check_update_best, nb07.reference_update_best, capsys)
    assert "✓" in out and "✗" not in out

    def deep(state_dict, metric, best):
        if best is None or metric > best["metric"]:
            return {"metric": metric, "state": copy.deepcopy(state_dict)}
        return best
    assert "✓" in verdict(nb07.check_update_best, deep, capsys)


def _keep(how):
    def update_best(state_dict, metric, best):
        if best is None or metric > best["metric"]:
            return {"metric": metric, "state": how(state_dict)}
        return best
    return update_best


@pytest.mark.parametrize("wrong, hint", [
    (_keep(lambda sd: sd), "you stored the state_dict itself"),
    (_keep(lambda sd: dict(sd)), "copies the dict but not the tensors"),
    (_keep(lambda sd: sd.copy()), "kept a reference, not a copy"),
    (lambda sd, metric, best: {"metric": metric, "state": copy.deepcopy(sd)}, "only replace the best when"),
    (lambda sd, metric, best: best if best is not None and metric > best["metric"]
     else {"metric": metric, "state": copy.deepcopy(sd)}, "only replace the best when"),
    (lambda sd, metric, best: metric, "the first call (best=None) must start the record"),
])
def test_update_best_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb07.check_update_best, wrong, capsys)
    assert "✗" in out and hint in out


# ---------------------------------------------------------------- lr_at

def test_lr_at_reference_passes(capsys):
    out = verdict(nb07.check_lr_at, warmup_cosine, capsys)
    assert out.count("✓") == 2 and "✗" not in out


def _cos(step, total, warmup, base, low):
    return low + (base - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, t, w, b, m: b * s / w if s < w else _cos(s, t, w, b, 0.0), "must end at min_lr"),
    (lambda s, t, w, b, m: b * (s + 1) / w if s < w else _cos(s, t, w, b, m), "off by one in the warm-up"),
    (lambda s, t, w, b, m: b * s / w if s < w else m + (b - m) * 0.5 * (1 + math.cos(math.pi * s / t)),
     "start at the end of the warm-up"),
    (lambda s, t, w, b, m: _cos(s, t, w, b, m) if s >= w else b, "no warm-up"),
    (lambda s, t, w, b, m: b * s / w if s < w else m + (b - m) * math.cos(math.pi * (s - w) / (t - w)),
     "(1 + cos πp) / 2"),
])
def test_lr_at_typical_mistakes(capsys, wrong, hint):
    out = verdict(nb07.check_lr_at, wrong, capsys)
    assert "✗" in out and hint in out


def test_lr_at_without_clipping_past_the_end(capsys):
    def unclipped(s, t, w, b, m):
        return b * s / w if s < w else m + (b - m) * 0.5 * (1 + math.cos(math.pi * (s - w) / (t - w)))
    out = verdict(nb07.check_lr_at, unclipped, capsys)
    assert "✓" in out and "✗" in out and "clip the progress" in out


def test_strict_mode_raises(monkeypatch):
    from mmcourse import checks
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed, match="reference"):
        nb07.check_update_best(_keep(lambda sd: sd))


# ---------------------------------------------------------------- quizzes

@pytest.mark.parametrize("check, right, wrong, explains", [
    (nb07.check_quiz_7_1, 3072, 147456, "r·(d_in + d_out)"),
    (nb07.check_quiz_7_1, 3072, 6144, "4 · 768"),
    (nb07.check_quiz_7_2, 5e-4, 4.2e-4, "p = (550 − 100)/(1000 − 100)"),
    (nb07.check_quiz_7_3, "b", "a", "BatchNorm"),
])
def test_quizzes(quiz_behaviour, check, right, wrong, explains):
    quiz_behaviour(check, right, wrong, explains)


# ---------------------------------------------------------------- weight-decay audit

def test_decay_audit_finds_decayed_biases_and_norms_and_forgotten_parameters():
    import torch
    from torch import nn
    from mmcourse.train import default_optimizer
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    good = nb07.decay_audit(model, default_optimizer(model))
    assert good == {"decayed_vectors": [], "decayed_matrices": ["0.weight", "2.weight"], "missing": []}
    naive = nb07.decay_audit(model, torch.optim.AdamW(model.parameters(), weight_decay=0.01))
    assert naive["decayed_vectors"] == ["0.bias", "1.weight", "1.bias", "2.bias"]
    partial = nb07.decay_audit(model, torch.optim.AdamW(model[0].parameters(), weight_decay=0.0))
    assert partial["missing"] == ["1.weight", "1.bias", "2.weight", "2.bias"] and not partial["decayed_vectors"]
    model[1].requires_grad_(False)  # frozen parameters are not the optimizer's business
    assert "1.weight" not in nb07.decay_audit(model, torch.optim.AdamW(model[0].parameters()))["missing"]
