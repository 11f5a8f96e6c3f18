"""Checks for notebook 07_finetuning_recipe: the LoRA forward pass (exercise 7.1), the warm-up +
cosine learning-rate schedule (7.2), early stopping's best-state bookkeeping (7.3), the quizzes,
and an audit of which parameters an optimizer decays."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from mmcourse import checks
from mmcourse.lora import LoRALinear
from mmcourse.train import warmup_cosine


# --------------------------------------------------------------------------- exercise 7.1: LoRA forward

def reference_lora_forward(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                           B: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """``y = x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ`` (notebook 07, §LoRA); same as :class:`LoRALinear`."""
    y = x @ W.T + (b if b is not None else 0)
    return y + (alpha / r) * (x @ A.T) @ B.T


def _lora_case(seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    d_in, d_out, r, alpha = 6, 5, 2, 8.0
    base = nn.Linear(d_in, d_out)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=gen))
        base.bias.copy_(torch.randn(d_out, generator=gen))
    layer = LoRALinear(base, r=r, alpha=alpha)
    with torch.no_grad():  # B = 0 at init would hide every mistake in the update: use a non-zero B
        layer.lora_A.copy_(torch.randn(r, d_in, generator=gen))
        layer.lora_B.copy_(torch.randn(d_out, r, generator=gen))
    x = torch.randn(3, d_in, generator=gen)
    with torch.no_grad():
        y = layer(x)
    return {"x": x, "W": base.weight.detach().clone(), "b": base.bias.detach().clone(),
            "A": layer.lora_A.detach().clone(), "B": layer.lora_B.detach().clone(),
            "alpha": alpha, "r": r, "expected": y}


def check_lora_forward(fn: Callable) -> None:
    """Check ``lora_forward(x, W, b, A, B, alpha, r)`` against :class:`mmcourse.lora.LoRALinear`."""
    name = "lora_forward"
    c = _lora_case()
    x, W, b, A, B, alpha, r = c["x"], c["W"], c["b"], c["A"], c["B"], c["alpha"], c["r"]
    found = checks.attempt(name, fn, x, W, b, A, B, alpha, r, fallback="mmcourse.lora.LoRALinear")
    if checks.is_pending(found):
        return
    base, delta = x @ W.T + b, (x @ A.T) @ B.T
    mistakes = [
        (base + delta, "the update must be scaled by alpha / r (here 8 / 2 = 4); you left the scaling out"),
        (base + alpha * delta, "scale by alpha / r, not by alpha alone"),
        (base + (r / alpha) * delta, "the scaling is alpha / r, not r / alpha"),
        (x @ W.T + (alpha / r) * delta, "you dropped the bias b of the frozen layer"),
        ((alpha / r) * delta, "you returned only the low-rank update: add the frozen layer's output x Wᵀ + b"),
        (base, "you returned only the frozen layer: add (alpha / r) · x Aᵀ Bᵀ"),
    ]
    if not checks.close(name, found, c["expected"], atol=1e-5, mistakes=mistakes,
                        hint="y = x Wᵀ + b + (alpha / r) · (x Aᵀ) Bᵀ with A: (r, in) and B: (out, r)"):
        return
    # B = 0 (the initialisation) must give exactly the frozen layer's output
    zero = checks.attempt(name, fn, x, W, b, A, torch.zeros_like(B), alpha, r)
    if not checks.is_pending(zero):
        checks.close(name + " (B = 0 gives the pretrained layer)", zero, base, atol=1e-5,
                     hint="with B = 0 the update vanishes: training starts from exactly the pretrained model")


# --------------------------------------------------------------------------- exercise 7.3: best state

def reference_update_best(state_dict: dict[str, torch.Tensor], metric: float,
                          best: dict[str, Any] | None) -> dict[str, Any]:
    """Keep ``{"metric", "state"}`` of the best evaluation so far (higher is better); the state is a
    deep copy (notebook 07, §Early stopping), like ``mmcourse.train._snapshot``."""
    if best is None or metric > best["metric"]:
        return {"metric": metric, "state": {k: v.detach().clone() for k, v in state_dict.items()}}
    return best


def _shares_memory(stored: dict[str, Any], model: nn.Module) -> bool:
    ptrs = {p.data_ptr() for p in model.state_dict().values()}
    return any(isinstance(v, torch.Tensor) and v.data_ptr() in ptrs for v in stored.values())


def check_update_best(fn: Callable) -> None:
    """Check ``update_best(state_dict, metric, best) -> best``: keeps a *copy*, only on improvement."""
    name = "update_best"
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    w0 = model.weight.detach().clone()
    sd = model.state_dict()
    best = checks.attempt(name, fn, sd, 0.6, None,
                          fallback="mmcourse.train.fit(..., monitor=...), which keeps a deep copy")
    if checks.is_pending(best):
        return
    if not isinstance(best, dict) or "metric" not in best or "state" not in best:
        checks.failed(name, 'a dict {"metric": ..., "state": ...}', f"{type(best).__name__} {best!r:.80}",
                      "the first call (best=None) must start the record: return {'metric': metric, 'state': ...}")
        return
    if best["metric"] != 0.6:
        checks.failed(name + " (first evaluation)", "metric 0.6", f"metric {best['metric']!r}",
                      "with best=None the first evaluation is the best so far")
        return
    state = best["state"]
    if not isinstance(state, dict) or set(state) != {"weight", "bias"}:
        checks.failed(name, "the model's state dict (keys weight, bias)", f"{type(state).__name__}",
                      "store the weights (a copy of state_dict), not the metric or the model")
        return
    with torch.no_grad():  # training goes on: the model's weights change in place
        model.weight.add_(1.0)
    if state is sd or _shares_memory(state, model):
        how = ("you stored the state_dict itself" if state is sd else
               "`dict(state_dict)` / `state_dict.copy()` copies the dict but not the tensors inside it")
        checks.failed(name + " (the model trained on after the best evaluation)",
                      "the stored weights to stay at the best step's values",
                      "they changed with the model",
                      "you kept a reference, not a copy (the MedMNIST script's `best_model = model` bug): "
                      "clone every tensor, e.g. {k: v.detach().clone() for k, v in state_dict.items()} "
                      "or copy.deepcopy(state_dict) (" + how + ")")
        return
    if not torch.equal(state["weight"], w0):
        checks.failed(name, "the stored weights equal to the model's at that evaluation",
                      "different weights", "copy state_dict's tensors as they are")
        return
    worse = checks.attempt(name, fn, model.state_dict(), 0.4, best)
    if checks.is_pending(worse):
        return
    if not isinstance(worse, dict) or worse.get("metric") != 0.6 or not torch.equal(worse["state"]["weight"], w0):
        checks.failed(name + " (a worse evaluation, 0.4 after 0.6)", "the old best (metric 0.6) kept",
                      f"metric {worse.get('metric') if isinstance(worse, dict) else worse!r}",
                      "only replace the best when the new metric is higher (accuracy: higher is better); "
                      "otherwise return `best` unchanged")
        return
    better = checks.attempt(name, fn, model.state_dict(), 0.9, best)
    if checks.is_pending(better):
        return
    if not isinstance(better, dict) or better.get("metric") != 0.9 \
            or not torch.equal(better["state"]["weight"], model.weight.detach()):
        checks.failed(name + " (a better evaluation, 0.9 after 0.6)", "metric 0.9 with the current weights",
                      f"metric {better.get('metric') if isinstance(better, dict) else better!r}",
                      "compare with best['metric'] and replace both the metric and the state when it improves")
        return
    checks.passed(name, "keeps a deep copy, replaces it only on improvement")


# --------------------------------------------------------------------------- exercise 7.2: schedule

def check_lr_at(fn: Callable) -> None:
    """Check ``lr_at(step, total, warmup, base_lr, min_lr)`` against ``mmcourse.train.warmup_cosine``."""
    name = "lr_at"
    total, warmup, base, low = 100, 10, 1e-3, 1e-5
    steps = range(total + 1)
    first = checks.attempt(name, fn, 0, total, warmup, base, low, fallback="mmcourse.train.warmup_cosine")
    if checks.is_pending(first):
        return
    found = checks.attempt(name, lambda: [float(fn(s, total, warmup, base, low)) for s in steps])
    if checks.is_pending(found):
        return
    want = [warmup_cosine(s, total, warmup, base, low) for s in steps]

    def curve(f: Callable[[int], float]) -> list[float]:
        return [f(s) for s in steps]

    def cos_part(p: float, lo: float = low) -> float:
        return lo + (base - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    warm = lambda s: base * s / warmup  # noqa: E731
    mistakes = [
        (curve(lambda s: warm(s) if s < warmup else cos_part((s - warmup) / (total - warmup), 0.0)),
         "the decay ends at 0: it must end at min_lr, lr = min_lr + (base_lr - min_lr)·(1 + cos πp)/2"),
        (curve(lambda s: base * (s + 1) / warmup if s < warmup else cos_part((s - warmup) / (total - warmup))),
         "off by one in the warm-up: step 0 has lr 0, lr = base_lr · step / warmup"),
        (curve(lambda s: warm(s) if s < warmup else cos_part(s / total)),
         "the cosine's progress must start at the end of the warm-up: p = (step - warmup) / (total - warmup)"),
        (curve(lambda s: warm(s) if s < warmup else low + (base - low) * math.cos(math.pi * (s - warmup) / (total - warmup))),
         "use (1 + cos πp) / 2, which goes from 1 to 0; cos πp alone goes from 1 to −1"),
        (curve(lambda s: cos_part((s - warmup) / (total - warmup)) if s >= warmup else base),
         "no warm-up: the learning rate must rise linearly from 0 to base_lr over the first `warmup` steps"),
        (curve(lambda s: warm(s) if s < warmup else cos_part(1 - (s - warmup) / (total - warmup))),
         "the schedule runs backwards: it must decay from base_lr to min_lr"),
    ]
    if not checks.close(name + " (total 100, warm-up 10, base 1e-3, min 1e-5)", np.array(found), np.array(want),
                        atol=1e-9, rtol=1e-6, mistakes=[(np.array(m), h) for m, h in mistakes],
                        hint="warm-up: base_lr·step/warmup; then min_lr + (base_lr − min_lr)(1 + cos πp)/2"):
        return
    past = checks.attempt(name, fn, 150, total, warmup, base, low)
    if not checks.is_pending(past):
        checks.close(name + " (after the last step it stays at min_lr)", float(past), low, atol=1e-12, rtol=1e-6,
                     hint="clip the progress p at 1 so steps past `total` stay at min_lr")



# --------------------------------------------------------------------------- weight-decay audit

def decay_audit(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, list[str]]:
    """Which trainable parameters an optimizer decays wrongly or forgets (notebook 07, §3).

    ``{"decayed_vectors": names of biases / LayerNorm weights (ndim < 2) in a group with
    weight_decay > 0, "decayed_matrices": matrices that are decayed, "missing": trainable
    parameters in no group}``. Decay belongs on weight matrices only (``default_optimizer``).
    """
    decay = {id(p): g.get("weight_decay", 0.0) for g in optimizer.param_groups for p in g["params"]}
    out: dict[str, list[str]] = {"decayed_vectors": [], "decayed_matrices": [], "missing": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) not in decay:
            out["missing"].append(name)
        elif decay[id(p)] > 0:
            out["decayed_vectors" if p.ndim < 2 else "decayed_matrices"].append(name)
    return out


# --------------------------------------------------------------------------- quizzes

def check_quiz_7_1(fn: Callable) -> None:
    """Trainable parameters of LoRA with r = 4 on a 384 × 384 projection."""
    checks.quiz("quiz 7.1", fn, 3072,
                "A is (r, d_in) = (4, 384) and B is (d_out, r) = (384, 4): r·(d_in + d_out) = 4 · 768 = 3,072 "
                "trainable numbers, against 384 · 384 = 147,456 for the full matrix (2 %). The frozen W0 "
                "and its bias do not count.")


def check_quiz_7_2(fn: Callable) -> None:
    """The warm-up + cosine learning rate half-way through the decay."""
    checks.quiz("quiz 7.2", fn, 5e-4,
                "after the warm-up the progress is p = (550 − 100)/(1000 − 100) = 0.5, and "
                "min_lr + (base − min_lr)·(1 + cos πp)/2 = 1e-3 · (1 + 0)/2 = 5e-4: half-way through the decay "
                "the rate is half the base rate.")


def check_quiz_7_3(fn: Callable) -> None:
    """Gradient accumulation with BatchNorm."""
    checks.quiz(
        "quiz 7.3", fn, "b",
        "dividing each micro-batch loss by k makes the accumulated gradient the big batch's only when "
        "every example is processed independently. BatchNorm normalises with the statistics of the batch it "
        "sees — here 8 examples, not 32 — so the forward pass, and the gradient, differ (use LayerNorm, "
        "GroupNorm, or frozen BatchNorm statistics).",
        choices={"a": "the same as one batch of 32, because each micro-batch loss is divided by k = 4",
                 "b": "different: BatchNorm normalises each micro-batch of 8 with its own statistics",
                 "c": "different: the losses must not be divided by k"})
