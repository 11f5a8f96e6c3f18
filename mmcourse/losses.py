"""Losses and their hand-derived gradients (notebook 06_gradient_derivation; CLIP loss: notebook 04).

NumPy functions, written to be read next to the derivations in notebook 06:

* binary cross-entropy for image–text matching, d̂ = σ(z): :func:`bce_loss`,
  :func:`bce_with_logits`, the seeds' gradient :func:`bce_grad_dhat` and its simplification
  :func:`bce_grad_z` (∂L/∂z_i = (d̂_i − d_i)/N);
* a small fusion head (concatenate image and text features → linear → tanh → linear → logit)
  with :func:`fusion_head_forward` / :func:`fusion_head_backward`;
* softmax cross-entropy (:func:`softmax_cross_entropy`, :func:`softmax_ce_grad`);
* the symmetric InfoNCE loss on a logit matrix (:func:`infonce_loss`, :func:`infonce_grad`).

All batch losses are *means* over the batch, so every gradient carries a factor 1/N.

:func:`clip_loss` is the PyTorch (autograd) version of CLIP's symmetric InfoNCE on two batches
of embeddings, used for training in notebook 04.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------
# binary cross-entropy (notebook 06, §2)
# ----------------------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    """σ(z) = 1 / (1 + e^{−z}), computed without overflow for large |z| (notebook 06, §2)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def bce_loss(d_hat: np.ndarray, d: np.ndarray) -> float:
    """L = −(1/N) Σ_i [d_i log d̂_i + (1 − d_i) log(1 − d̂_i)], the seeds' form (notebook 06, §2).

    Takes probabilities d̂ ∈ (0, 1); for logits use :func:`bce_with_logits` (stable).
    """
    d_hat, d = np.asarray(d_hat, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return float(-np.mean(d * np.log(d_hat) + (1 - d) * np.log(1 - d_hat)))


def bce_with_logits(z: np.ndarray, d: np.ndarray) -> float:
    """The same loss from logits z (d̂ = σ(z)), stable for any z (notebook 06, §2).

    Uses −[d log σ(z) + (1 − d) log(1 − σ(z))] = max(z, 0) − z·d + log(1 + e^{−|z|}).
    """
    z, d = np.asarray(z, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return float(np.mean(np.maximum(z, 0) - z * d + np.log1p(np.exp(-np.abs(z)))))


def bce_grad_dhat(d_hat: np.ndarray, d: np.ndarray) -> np.ndarray:
    """∂L/∂d̂_i = −(1/N) (d_i/d̂_i − (1 − d_i)/(1 − d̂_i)): the seeds' gradient (notebook 06, §2)."""
    d_hat, d = np.asarray(d_hat, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return -(d / d_hat - (1 - d) / (1 - d_hat)) / d_hat.shape[0]


def bce_grad_z(d_hat: np.ndarray, d: np.ndarray) -> np.ndarray:
    """∂L/∂z_i = (d̂_i − d_i)/N for d̂ = σ(z) and the mean BCE loss (notebook 06, §2)."""
    d_hat, d = np.asarray(d_hat, dtype=np.float64), np.asarray(d, dtype=np.float64)
    return (d_hat - d) / d_hat.shape[0]


# ----------------------------------------------------------------------------------------
# the fusion head (notebook 06, §3)
# ----------------------------------------------------------------------------------------


def fusion_head_forward(img: np.ndarray, txt: np.ndarray,
                        params: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """Matching logit of a two-layer fusion head (notebook 06, §3).

    x = [u ; v] (N, D_u + D_v), a = x W1 + b1 (N, K), h = tanh(a), z = h W2 + b2 (N,).
    ``params``: W1 (D, K), b1 (K,), W2 (K,), b2 (); K is the hidden width. Returns
    ``(z, cache)``; the cache holds what the backward pass needs: x, h, W1, W2 and the image
    width ``n_img``.
    """
    x = np.concatenate([img, txt], axis=1)            # (N, D)
    a = x @ params["W1"] + params["b1"]               # (N, K)
    h = np.tanh(a)                                    # (N, K)
    z = h @ params["W2"] + params["b2"]               # (N,)
    cache = {"x": x, "h": h, "W1": params["W1"], "W2": params["W2"], "n_img": img.shape[1]}
    return z, cache


def fusion_head_backward(cache: dict, dz: np.ndarray) -> dict[str, np.ndarray]:
    """All gradients of the fusion head given the upstream gradient dz = ∂L/∂z (N,) (notebook 06, §3).

    Returns ∂L/∂ of W1, b1, W2, b2 and of the inputs ``img`` and ``txt`` (each with the shape
    of what it differentiates).
    """
    x, h, W1, W2 = cache["x"], cache["h"], cache["W1"], cache["W2"]
    dW2 = h.T @ dz                                    # (K,)
    db2 = np.sum(dz)                                  # ()
    dh = np.outer(dz, W2)                             # (N, K)
    da = dh * (1.0 - h**2)                            # tanh'(a) = 1 − tanh(a)²
    dW1 = x.T @ da                                    # (D, K)
    db1 = da.sum(axis=0)                              # (K,)
    dx = da @ W1.T                                    # (N, D)
    n = cache["n_img"]
    return {"W1": dW1, "b1": db1, "W2": dW2, "b2": np.asarray(db2),
            "img": dx[:, :n], "txt": dx[:, n:]}


# ----------------------------------------------------------------------------------------
# softmax cross-entropy and InfoNCE (notebook 06, §5)
# ----------------------------------------------------------------------------------------


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum so exp never overflows (notebook 06, §5)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """log softmax(z) along ``axis``, computed stably (log-sum-exp trick)."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def softmax_cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    """L = −(1/N) Σ_i log softmax(z_i)[y_i] for logits z (N, C), integer labels y (N,) (notebook 06, §5)."""
    y = np.asarray(y)
    return float(-np.mean(log_softmax(z, axis=1)[np.arange(len(y)), y]))


def softmax_ce_grad(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂L/∂z = (softmax(z) − onehot(y)) / N, shape (N, C) (notebook 06, §5)."""
    p = softmax(z, axis=1)
    p[np.arange(len(y)), np.asarray(y)] -= 1.0
    return p / p.shape[0]


def infonce_loss(S: np.ndarray) -> float:
    """Symmetric InfoNCE on a square logit matrix S (notebook 06, §5; CLIP, notebook 04).

    S[i, j] is the (temperature-scaled) similarity of image i and text j; pair i matches i.
    L = ½ [ −(1/N) Σ_i log softmax_row(S)[i, i]  −(1/N) Σ_j log softmax_col(S)[j, j] ].
    """
    S = np.asarray(S, dtype=np.float64)
    i2t = -np.mean(np.diag(log_softmax(S, axis=1)))   # each image picks its text
    t2i = -np.mean(np.diag(log_softmax(S, axis=0)))   # each text picks its image
    return float(0.5 * (i2t + t2i))


def infonce_grad(S: np.ndarray) -> np.ndarray:
    """∂L/∂S = [(softmax_row(S) − I) + (softmax_col(S) − I)] / (2N) (notebook 06, §5)."""
    S = np.asarray(S, dtype=np.float64)
    n = S.shape[0]
    eye = np.eye(n)
    return ((softmax(S, axis=1) - eye) + (softmax(S, axis=0) - eye)) / (2 * n)


# ----------------------------------------------------------------------------------------
# CLIP's loss in PyTorch (notebook 04; derived in notebook 06, §5)
# ----------------------------------------------------------------------------------------


def clip_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor,
              logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE loss for a batch of matching pairs (notebook 04; gradient: notebook 06).

    ``img_emb`` (N, D) and ``txt_emb`` (N, D): row i of each is a matching pair. Both are
    L2-normalised here (a no-op if they already are). ``logit_scale`` is the *multiplier*
    1/τ applied to the cosine similarities — if a model stores the learnable
    log-scale, as CLIP does, pass ``log_scale.exp()``. Returns the mean of the image→text and
    text→image cross-entropies (a scalar tensor, differentiable in all three inputs).
    """
    img = F.normalize(img_emb, dim=-1)
    txt = F.normalize(txt_emb, dim=-1)
    logits = logit_scale * img @ txt.T                      # (N, N): logits[i, j] = s(img i, txt j)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
