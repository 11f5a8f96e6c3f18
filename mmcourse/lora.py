"""LoRA from scratch (notebook 07_finetuning_recipe, §LoRA).

A frozen linear layer ``y = W x + b`` gets a trainable low-rank update:

    y = W x + b + (alpha / r) * B A x,    A: (r, in), B: (out, r), r << min(in, out)

``A`` starts like ``peft`` (Kaiming-uniform, a = sqrt(5)) and ``B`` at zero, so training starts
from exactly the pretrained model. After training, ``merge()`` folds ``(alpha / r) * B A`` into
``W``: inference then costs nothing extra. Notebook 07 checks this file against ``peft``.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """An ``nn.Linear`` with a frozen base and a trainable rank-``r`` update (notebook 07, §LoRA).

    Parameter names follow peft's idea: ``base`` (the original layer), ``lora_A`` (r, in),
    ``lora_B`` (out, r). Adapters of a half-precision base are kept in float32.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        dtype = torch.float32 if base.weight.dtype in (torch.float16, torch.bfloat16) else base.weight.dtype
        kw = {"device": base.weight.device, "dtype": dtype}
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **kw))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **kw))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (some model code reads ``layer.weight``)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        """``(alpha / r) * B @ A``, shape (out, in): what merging adds to ``W``."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = self.base(x)
        if self.merged:  # the update is already inside base.weight
            return y
        h = F.linear(F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A), self.lora_B)  # (..., out)
        return y + (h * self.scaling).to(y.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (for inference; do not train while merged)."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight (exact up to rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, target: str | list[str]) -> bool:
    """peft's rule: a string is a regex matched against the full name; a list holds name suffixes."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


def add_lora(model: nn.Module, target: str | list[str], r: int = 8, alpha: float = 16,
             dropout: float = 0.0) -> list[str]:
    """Replace the matching ``nn.Linear`` layers by :class:`LoRALinear`; freeze everything else.

    ``target``: a regex over full module names (``r".*\\.(query|value)"``) or a list of name
    suffixes (``["query", "value"]``). Works in place on any model, e.g. a ``transformers``
    BertModel. Only plain ``nn.Linear`` layers are wrapped (not ``nn.MultiheadAttention``'s
    ``out_proj``, whose weight that module reads directly). Returns the replaced module names
    (notebook 07, §LoRA).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    inside_lora = {f"{n}.base" for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    names = [name for name, m in model.named_modules()
             if type(m) is nn.Linear and name not in inside_lora and _matches(name, target)]
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:8]
        raise ValueError(f"no nn.Linear matches {target!r}; linear layers are named like {linears}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return names


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    """All :class:`LoRALinear` modules in ``model``."""
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRA layer (inference at the base model's speed)."""
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Unmerge every LoRA layer (to train further)."""
    for layer in lora_layers(model):
        layer.unmerge()


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, like peft's ``get_nb_trainable_parameters()``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter weights: a few MB to save instead of the whole model."""
    return {k: v for k, v in model.state_dict().items() if k.endswith(("lora_A", "lora_B"))}
