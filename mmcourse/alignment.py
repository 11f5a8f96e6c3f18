"""A shared image–text embedding space trained contrastively (notebook 04_alignment_contrastive).

Section by section:

* §1 "A shared space": :func:`cosine_similarity_matrix`.
* §2 "CLIP's loss": the loss itself is :func:`mmcourse.losses.clip_loss`; :func:`loss_fn` is the
  ``fit``-style wrapper that feeds it a :class:`DualEncoder`'s embeddings.
* §3 "Features, computed once": :func:`paired_features` (frozen MobileNetV2 image features and
  frozen MiniLM caption features for a Flickr8k split, cached on disk by :func:`cached_array`).
* §4 "A dual encoder": :class:`DualEncoder` (two trainable projection heads and a learnable
  temperature on top of the frozen features).
* §5 "Retrieval metrics": :func:`match_matrix`, :func:`ranks`, :func:`recall_at_k`,
  :func:`median_rank`, :func:`retrieval_metrics`, :func:`top_k`.
* §7 "Zero-shot classification": :func:`keyword_labels`, :func:`zero_shot_classify`.

Conventions: a similarity matrix ``sim`` is ``(queries, candidates)``; ``match[q, c]`` is True
when candidate ``c`` is a correct answer for query ``q``. Ranks are **1-based**: rank 1 means
the best-scoring candidate is correct.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmcourse import losses

# What the features are, in the feature-cache keys; *which* weights computed them is keyed
# separately by pretrained.weights_key (the sha256 of the weights), never by a model's name.
IMAGE_FEATURES = "mobilenet_v2-pooled"
TEXT_FEATURES = "meanpool-l2"


# ---------------------------------------------------------------- §1 a shared space

def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``S[i, j] = cos(a_i, b_j)`` for ``a`` (N, D) and ``b`` (M, D) → (N, M) (notebook 04, §1).

    Each *row* vector is divided by its own L2 norm, then one matrix product gives all pairs.
    """
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


# ---------------------------------------------------------------- §3 cached features

def cached_array(kind: str, key_items: Any, compute, use_cache: bool = True) -> np.ndarray:
    """``compute()`` as a NumPy array, cached under ``<cache_dir>/data_cache/<kind>/`` (notebook 04, §3).

    ``key_items`` (JSON-serialisable: the model's :func:`mmcourse.pretrained.weights_key`, image
    list, image size ...) is hashed into the key, so other weights, a different subset or size
    never return a stale entry. The write is atomic
    (temporary file + ``os.replace``, see :mod:`mmcourse.data.cache`); ``MMCOURSE_DATA_CACHE=0``
    turns the cache off.
    """
    from mmcourse.data import cache

    blob = json.dumps(key_items, sort_keys=True, default=str).encode()
    return cache.cached(kind, blob, (), lambda: np.asarray(compute()), use_cache=use_cache)


def image_features(model: nn.Module, dataset, indices: Sequence[int], chunk: int = 64,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Pooled MobileNetV2 features ``(len(indices), 1280)`` of ``dataset[i]["image"]`` (notebook 04, §3).

    Images are decoded ``chunk`` at a time, so 6,000 photos at 224 px never sit in memory at once.
    """
    from mmcourse import image

    out = []
    for start in range(0, len(indices), chunk):
        batch = torch.stack([dataset[int(i)]["image"] for i in indices[start:start + chunk]])
        out.append(image.pooled_features(model, batch, batch_size=chunk, device=device).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


@dataclass
class PairedFeatures:
    """Frozen features of one Flickr8k split (notebook 04, §3).

    ``image_feats`` (n_images, 1280), ``text_feats`` (n_captions, 384); caption ``j`` describes
    image ``caption_image[j]``. ``source`` is ``"real"`` or ``"synthetic"``.
    """

    split: str
    image_ids: list[str]
    captions: list[str]
    caption_image: np.ndarray
    image_feats: np.ndarray
    text_feats: np.ndarray
    source: str
    image_size: int
    seconds: dict[str, float] = field(default_factory=dict)
    dataset: Any = None
    indices: list[int] = field(default_factory=list)

    @property
    def captions_per_image(self) -> list[list[str]]:
        """The captions of each image, in image order."""
        out: list[list[str]] = [[] for _ in self.image_ids]
        for c, i in zip(self.captions, self.caption_image):
            out[int(i)].append(c)
        return out

    def match(self) -> np.ndarray:
        """``(n_images, n_captions)`` bool: True where the caption describes the image."""
        return match_matrix(self.caption_image, len(self.image_ids))

    def image(self, i: int) -> torch.Tensor:
        """The ``(3, S, S)`` picture of image ``i`` (decoded again, for figures)."""
        return self.dataset[self.indices[i]]["image"]


def paired_features(split: str, n_images: int | None, image_size: int, captions_per_image: int = 5,
                    image_model: nn.Module | None = None, text_model: tuple | None = None,
                    seed: int = 0, use_cache: bool = True, device: torch.device | str | None = None,
                    **load_kwargs) -> PairedFeatures:
    """Frozen image and caption features of ``n_images`` random images of a Flickr8k split (notebook 04, §3).

    ``n_images=None`` (or more than the split has) takes the whole split, in file order. Each
    image keeps its first ``captions_per_image`` captions. ``image_model`` is MobileNetV2 and
    ``text_model`` is ``(MiniLM, tokenizer)`` from :func:`mmcourse.pretrained.load`; they are
    only called on a cache miss. Features are cached keyed by (weights, image list, size) and
    (weights, caption list), the weights by :func:`mmcourse.pretrained.weights_key` (the sha256
    of the pinned weights, or of the model's tensors for an override or a fine-tuned model), so
    a changed encoder never gets the features of another one. Without a model the pinned one's
    key is used (:func:`mmcourse.pretrained.role_key`): a cache hit needs no model at all.
    """
    from mmcourse import data, text

    load_kwargs.setdefault("cache", False)  # the features are cached; decoded pixels need not be
    ds = data.load("flickr8k", split=split, view="image", image_size=image_size, **load_kwargs)
    n = len(ds)
    if n_images is None or n_images >= n:
        idx = list(range(n))
    else:
        idx = sorted(np.random.default_rng(seed).permutation(n)[:n_images].tolist())
    ids = [ds.records[i]["image_id"] for i in idx]
    caps_all = [ds.records[i]["captions"][:captions_per_image] for i in idx]
    captions = [c for caps in caps_all for c in caps]
    caption_image = np.array([k for k, caps in enumerate(caps_all) for _ in caps], dtype=np.int64)
    source = ds.info.source
    seconds = {}

    def need(what: str, obj: Any) -> Any:
        if obj is None:
            raise ValueError(f"features of {split} are not cached yet: pass {what}")
        return obj

    image_key = _model_key("image", image_model, "image_model")
    text_key = _model_key("text", text_model[0] if text_model is not None else None, "text_model")
    t0 = time.perf_counter()
    img = cached_array("features-image", [IMAGE_FEATURES, image_key, source, split, image_size, ids],
                       lambda: image_features(need("image_model", image_model), ds, idx, device=device),
                       use_cache)
    seconds["image"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    def embed() -> np.ndarray:
        model, tokenizer = need("text_model", text_model)
        return text.embed_sentences(model, tokenizer, captions, batch_size=128).float().cpu().numpy()

    txt = cached_array("features-text", [TEXT_FEATURES, text_key, captions], embed, use_cache)
    seconds["text"] = time.perf_counter() - t0
    return PairedFeatures(split, ids, captions, caption_image, img.astype(np.float32), txt.astype(np.float32),
                          source, image_size, seconds, ds, idx)


def _model_key(role: str, model: nn.Module | None, what: str) -> str:
    """The feature-cache key of an encoder: its weights' sha256, or the pinned model's without one."""
    from mmcourse import pretrained

    if model is not None:
        return pretrained.weights_key(model)
    key = pretrained.role_key(role)
    if key is None:
        raise ValueError(f"pass {what}: the cached features are keyed on the model's weights, and the "
                         f"{role!r} model is overridden (MMCOURSE_MODEL_{role.upper()}) or not fetched")
    return key


# ---------------------------------------------------------------- §4 the dual encoder

class DualEncoder(nn.Module):
    """Two projection heads into a shared ``embed_dim`` space plus a learnable temperature (notebook 04, §4).

    ``image_head``: ``image_dim`` → ``embed_dim``; ``text_head``: ``text_dim`` → ``embed_dim``.
    With ``hidden`` set, a head is Linear → GELU → Dropout → Linear (an MLP), otherwise one
    Linear (CLIP's choice), with ``dropout`` applied to its input features. The temperature is stored as CLIP stores it, ``log_scale = log(1/τ)``,
    initialised to ``τ = init_temperature`` and clamped so that ``1/τ ≤ max_scale`` (CLIP: 100).
    ``learn_temperature=False`` keeps τ fixed. The encoders themselves stay frozen (their
    features are inputs), so only the heads and τ train.
    """

    def __init__(self, image_dim: int = 1280, text_dim: int = 384, embed_dim: int = 256,
                 hidden: int | None = None, dropout: float = 0.4, init_temperature: float = 0.07,
                 learn_temperature: bool = True, max_scale: float = 100.0):
        super().__init__()
        self.image_head = self._head(image_dim, embed_dim, hidden, dropout)
        self.text_head = self._head(text_dim, embed_dim, hidden, dropout)
        self.image_norm = nn.LayerNorm(image_dim)  # MobileNetV2's pooled features are not centred
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1.0 / init_temperature))),
                                      requires_grad=learn_temperature)
        self.max_scale = max_scale

    @staticmethod
    def _head(d_in: int, d_out: int, hidden: int | None, dropout: float) -> nn.Module:
        if hidden is None:  # one linear map; dropout on its input features regularises it
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(d_in, d_out)) if dropout else nn.Linear(d_in, d_out)
        return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out))

    def logit_scale(self) -> torch.Tensor:
        """``1/τ = exp(log_scale)``, clamped to ``max_scale`` (what :func:`losses.clip_loss` multiplies by)."""
        return self.log_scale.exp().clamp(max=self.max_scale)

    def temperature(self) -> float:
        """The current τ as a float."""
        return float(1.0 / self.logit_scale().detach())

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen image features ``(N, image_dim)`` → unit vectors ``(N, embed_dim)``."""
        return F.normalize(self.image_head(self.image_norm(x)), dim=-1)

    def encode_text(self, t: torch.Tensor) -> torch.Tensor:
        """Frozen text features ``(N, text_dim)`` → unit vectors ``(N, embed_dim)``."""
        return F.normalize(self.text_head(t), dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings of a batch of pairs."""
        return self.encode_image(x), self.encode_text(t)


def loss_fn(model: DualEncoder, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``fit``'s loss: CLIP's symmetric InfoNCE on a batch of (image feature, caption feature) pairs (§4)."""
    x, t = batch
    img, txt = model(x, t)
    return losses.clip_loss(img, txt, model.logit_scale())


@torch.no_grad()
def embed(model: DualEncoder, feats: PairedFeatures, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared-space embeddings of all images and captions of ``feats`` (eval mode, on CPU) (§5)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        img = torch.cat([model.encode_image(torch.as_tensor(feats.image_feats[i:i + batch_size]).to(dev)).float().cpu()
                         for i in range(0, len(feats.image_feats), batch_size)])
        txt = torch.cat([model.encode_text(torch.as_tensor(feats.text_feats[i:i + batch_size]).to(dev)).float().cpu()
                         for i in range(0, len(feats.text_feats), batch_size)])
    finally:
        model.train(was)
    return img, txt


# ---------------------------------------------------------------- §5 retrieval metrics

def match_matrix(caption_image: Sequence[int] | np.ndarray, n_images: int) -> np.ndarray:
    """``(n_images, n_captions)`` bool, True where caption ``j`` belongs to image ``i`` (notebook 04, §5).

    Image→text retrieval uses it as is; text→image uses its transpose.
    """
    ci = np.asarray(caption_image)
    return np.arange(n_images)[:, None] == ci[None, :]


def ranks(sim: torch.Tensor | np.ndarray, match: torch.Tensor | np.ndarray) -> np.ndarray:
    """1-based rank of the best-ranked correct candidate for each query (notebook 04, §5).

    ``sim`` (Q, C), ``match`` (Q, C) bool. Rank = 1 + the number of candidates scoring strictly
    higher than the best correct one (ties counted in the query's favour).
    """
    s = torch.as_tensor(np.asarray(sim) if not torch.is_tensor(sim) else sim).float()
    m = torch.as_tensor(np.asarray(match) if not torch.is_tensor(match) else match).bool()
    if not bool(m.any(dim=1).all()):
        raise ValueError("every query needs at least one correct candidate (a row of match is all False)")
    best_correct = s.masked_fill(~m, float("-inf")).max(dim=1, keepdim=True).values  # (Q, 1)
    return ((s > best_correct).sum(dim=1) + 1).numpy()


def recall_at_k(sim: torch.Tensor | np.ndarray, match: torch.Tensor | np.ndarray, k: int) -> float:
    """R@K: the fraction of queries with at least one correct candidate among their top ``k`` (notebook 04, §5)."""
    return float(np.mean(ranks(sim, match) <= k))


def median_rank(sim: torch.Tensor | np.ndarray, match: torch.Tensor | np.ndarray) -> float:
    """Median over queries of the 1-based rank of the first correct candidate (notebook 04, §5)."""
    return float(np.median(ranks(sim, match)))


def retrieval_metrics(img_emb: torch.Tensor, txt_emb: torch.Tensor, caption_image: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image→text and text→image R@K and median rank (notebook 04, §5).

    Keys ``i2t_R@1`` … ``t2i_R@10``, ``i2t_medr``, ``t2i_medr`` and ``rsum`` (the sum of the six
    recalls, a common single number to select models on).
    """
    sim = cosine_similarity_matrix(img_emb.float(), txt_emb.float())  # (images, captions)
    match = match_matrix(caption_image, img_emb.shape[0])
    r_i2t, r_t2i = ranks(sim, match), ranks(sim.T, match.T)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float(np.mean(r_i2t <= k))
    for k in ks:
        out[f"t2i_R@{k}"] = float(np.mean(r_t2i <= k))
    out["i2t_medr"] = float(np.median(r_i2t))
    out["t2i_medr"] = float(np.median(r_t2i))
    out["rsum"] = sum(v for key, v in out.items() if "R@" in key)
    return out


def top_k(query: torch.Tensor, candidates: torch.Tensor, k: int = 5) -> tuple[list[float], list[int]]:
    """Scores and indices of the ``k`` candidates most cosine-similar to one ``query`` vector (§6)."""
    s, i = cosine_similarity_matrix(query.reshape(1, -1), candidates)[0].topk(k)
    return s.tolist(), i.tolist()


# ---------------------------------------------------------------- §7 zero-shot classification

def keyword_labels(captions_per_image: Sequence[Sequence[str]], keywords: Sequence[str]) -> np.ndarray:
    """Class of each image = the *only* keyword its captions mention; −1 for none or several (§7)."""
    from mmcourse.image import caption_mentions

    out = []
    for caps in captions_per_image:
        hits = [k for k, kw in enumerate(keywords) if caption_mentions(caps, kw)]
        out.append(hits[0] if len(hits) == 1 else -1)
    return np.array(out, dtype=np.int64)


def zero_shot_classify(image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Predicted class per image: the class prompt with the highest cosine similarity (notebook 04, §7).

    ``image_emb`` (N, D), ``class_emb`` (C, D) → ``(N,)`` int64 in ``0 … C−1``.
    """
    return cosine_similarity_matrix(image_emb, class_emb).argmax(dim=1)
