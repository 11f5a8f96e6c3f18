"""Image encoders from scratch and pretrained (notebook 02_image_encoders).

Section by section:

* §1 "Images as tensors": :func:`to_model_input` (HWC uint8 → normalised CHW float32).
* §2 "Patches instead of convolutions": :func:`num_patches`, :func:`patchify`,
  :func:`patch_embedding_conv` (the same linear map as a ``Conv2d`` with kernel = stride = P),
  :func:`vit_tokens` (class token + patch embeddings + position embeddings).
* §3 "What attention costs": :func:`attention_cost`.
* §4–§6 "A pretrained CNN": :func:`topk`, :func:`pooled_features`, :func:`caption_mentions`.
* §7 "A linear probe": :func:`probe_accuracy`, :func:`probe_with_cv` (C chosen by cross-validation on train).

Shapes follow PyTorch: a batch of images is ``(B, C, H, W)``. A patch is flattened in the order
(channel, row, column) — the layout of a ``Conv2d`` weight ``(D, C, P, P)`` — and patches are
numbered in raster order (left to right, then top to bottom), as ``torch.nn.functional.unfold``
does and as in ViT (Dosovitskiy et al., ICLR 2021).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- §1 images as tensors

def to_model_input(image: np.ndarray | torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """An RGB photo ``(H, W, 3)`` uint8 in [0, 255] → ``(3, H, W)`` float32, ``(x/255 − mean) / std``.

    Notebook 02, §1. This is what torchvision's ``ToTensor`` + ``Normalize`` do (no resizing).
    """
    x = torch.as_tensor(np.asarray(image))
    if x.ndim != 3 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected an (H, W, C) image with C = 1 or 3, got shape {tuple(x.shape)}")
    x = x.permute(2, 0, 1).to(torch.float32) / 255.0  # (C, H, W) in [0, 1]
    m = torch.tensor(mean, dtype=torch.float32)[: x.shape[0], None, None]
    s = torch.tensor(std, dtype=torch.float32)[: x.shape[0], None, None]
    return (x - m) / s


# ---------------------------------------------------------------- §2 patches

def num_patches(height: int, width: int, patch: int) -> int:
    """N = (H / P) · (W / P) non-overlapping patches; H and W must be multiples of P (notebook 02, §2)."""
    if height % patch or width % patch:
        raise ValueError(f"image size {height}×{width} is not a multiple of the patch size {patch}")
    return (height // patch) * (width // patch)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, N, C·P·P)``: non-overlapping P×P patches, flattened (notebook 02, §2).

    Patches in raster order; each patch flattened as (channel, row, column). Equal to
    ``torch.nn.functional.unfold(images, patch, stride=patch).transpose(1, 2)``.
    """
    b, c, h, w = images.shape
    num_patches(h, w, patch)  # validates the size
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)  # (B, C, gh, P, gw, P)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def patch_embedding_conv(weight: torch.Tensor, bias: torch.Tensor | None, channels: int, patch: int) -> nn.Conv2d:
    """The patch embedding ``patchify(x) @ weight.T + bias`` as a ``Conv2d`` (kernel = stride = P).

    ``weight`` is ``(D, C·P·P)`` (an ``nn.Linear``'s weight). Notebook 02, §2: the "convolution"
    in a ViT is only this linear map applied to each non-overlapping patch.
    """
    dim = weight.shape[0]
    conv = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch, bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(dim, channels, patch, patch))
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def vit_tokens(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, cls_token: torch.Tensor,
               pos_embed: torch.Tensor, patch: int) -> torch.Tensor:
    """ViT input sequence ``z_0 = [x_class; x_p^1 E; …; x_p^N E] + E_pos`` → ``(B, N+1, D)`` (notebook 02, §2).

    ``weight`` ``(D, C·P·P)`` and ``bias`` ``(D,)`` project each patch; ``cls_token`` is ``(D,)``;
    ``pos_embed`` is ``(N+1, D)`` (row 0 belongs to the class token).
    """
    patches = patchify(images, patch) @ weight.T + bias  # (B, N, D)
    cls = cls_token.reshape(1, 1, -1).expand(patches.shape[0], 1, -1)  # (B, 1, D)
    return torch.cat([cls, patches], dim=1) + pos_embed  # (B, N+1, D)


# ---------------------------------------------------------------- §3 the cost of attention

def attention_cost(image_size: int, patch: int, dim: int = 768) -> dict[str, int]:
    """Cost of one self-attention layer on a ViT's tokens (notebook 02, §3).

    ``tokens`` = N + 1 (patches + class token); ``attention_entries`` = tokens² (one score per
    pair); ``attention_flops`` = 4·tokens²·D (QKᵀ and the weighted sum of V, a multiply-add
    counting 2); ``projection_flops`` = 8·tokens·D² (the Q, K, V and output projections).
    """
    t = num_patches(image_size, image_size, patch) + 1
    return {"image_size": image_size, "patch": patch, "tokens": t, "attention_entries": t * t,
            "attention_flops": 4 * t * t * dim, "projection_flops": 8 * t * dim * dim}


# ---------------------------------------------------------------- §4–§6 a pretrained CNN

def topk(logits: torch.Tensor, categories: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of one logit vector as ``[(name, probability), …]`` (notebook 02, §4)."""
    probs = torch.softmax(logits.reshape(-1).float(), dim=0)
    p, i = probs.topk(k)
    return [(categories[j], float(q)) for j, q in zip(i.tolist(), p.tolist())]


def pooled_features(model: nn.Module, images: torch.Tensor, batch_size: int = 32,
                    normalize: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """MobileNetV2's pooled feature vector, ``(B, 1280)``, for images ``(B, 3, H, W)`` in [0, 1] (notebook 02, §6).

    ``model.features`` → global average pooling; this is the input of ``model.classifier``, so
    ``model.classifier(pooled_features(model, x, normalize=False))`` equals ``model(x)``.
    Runs in batches under ``torch.inference_mode()``; normalises with ImageNet mean/std first.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mean = torch.tensor(IMAGENET_MEAN, device=device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[:, None, None]
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            if normalize:
                x = (x - mean) / std
            fmap = model.features(x)  # (b, 1280, H/32, W/32)
            out.append(fmap.mean(dim=(2, 3)).cpu())
    return torch.cat(out) if out else torch.empty(0, 1280)


def caption_mentions(captions: Sequence[str], keyword: str) -> bool:
    """True when any caption contains ``keyword`` (or its plural with -s) as a whole word (notebook 02, §6)."""
    pattern = re.compile(rf"\b{re.escape(keyword.lower())}s?\b")
    return any(pattern.search(c.lower()) for c in captions)


# ---------------------------------------------------------------- §7 a linear probe

def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                   c: float = 1.0, max_iter: int = 2000) -> float:
    """Fit a logistic-regression probe on standardised frozen features; accuracy on the eval set (notebook 02, §7).

    The scaler is fitted on the training features only (fitting it on the evaluation set would leak).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    clf.fit(np.asarray(x_train), np.asarray(y_train))
    return float(clf.score(np.asarray(x_eval), np.asarray(y_eval)))


PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)  # the regularisation strengths notebook 02's probe chooses from


def probe_with_cv(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                  cs: Sequence[float] = PROBE_CS, folds: int = 5, max_iter: int = 2000) -> tuple[float, float]:
    """A probe whose ``C`` is chosen by cross-validation on the training set only: ``(eval accuracy, C)``.

    Every candidate ``C`` is scored by ``folds``-fold cross-validation of the whole pipeline
    (scaler + logistic regression) on the training data, so each fold's scaler sees only that
    fold's training part; the best ``C`` is refitted on all training data and scored once on the
    evaluation set, which plays no part in any choice (notebook 02, §7).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter)),
                          {"logisticregression__C": list(cs)}, cv=folds)
    search.fit(np.asarray(x_train), np.asarray(y_train))
    return float(search.score(np.asarray(x_eval), np.asarray(y_eval))), float(search.best_params_["logisticregression__C"])
