"""Checks for notebook 04_alignment_contrastive.

Exercises: 4.1 ``cosine_similarity_matrix``, 4.2 ``clip_loss``, 4.3 ``recall_at_k``,
4.4 ``zero_shot_classify``. Each check runs the learner's function on small fixed inputs,
compares it with :mod:`mmcourse.alignment` / :func:`mmcourse.losses.clip_loss`, and names the
typical mistake when the answer equals what that mistake would produce (forgetting to
normalise, normalising the wrong axis, one-directional loss, temperature multiplied instead of
divided, off-by-one ranks, sorting the wrong way, ranking along the wrong axis ...).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmcourse import alignment, checks, losses

# ----------------------------------------------------------------------------------------
# exercise 4.1: cosine similarity matrix
# ----------------------------------------------------------------------------------------


def _cos_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(41)
    a = torch.randn(4, 6, generator=g, dtype=torch.float64) * torch.tensor([[0.5], [2.0], [1.0], [4.0]],
                                                                           dtype=torch.float64)
    b = torch.randn(5, 6, generator=g, dtype=torch.float64) * torch.tensor([[3.0], [0.2], [1.0], [1.5], [0.7]],
                                                                           dtype=torch.float64)
    return a, b


def check_cosine_similarity(fn: Callable) -> None:
    """Check ``cosine_similarity_matrix(a, b)`` → (N, M) cosine similarities of the rows."""
    name = "cosine_similarity_matrix"
    a, b = _cos_inputs()
    found = checks.attempt(name, fn, a.clone(), b.clone(), fallback="mmcourse.alignment.cosine_similarity_matrix")
    if checks.is_pending(found):
        return
    want = alignment.cosine_similarity_matrix(a, b)
    if checks.shape_mistake(name, found, want, {
            (5, 4): "S[i, j] compares a_i with b_j, so the shape is (rows of a, rows of b): "
                    "compute normalise(a) @ normalise(b).T, not b @ a.T"}):
        return
    na, nb = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    mistakes = [
        (a @ b.T, "you forgot to normalise: divide every row of a and of b by its L2 norm before the "
                  "product (a dot product is not a cosine)"),
        (F.normalize(a, dim=0) @ F.normalize(b, dim=0).T,
         "wrong axis: normalise each row (one vector per row, dim=-1 / axis=1), not each column"),
        (na @ b.T, "only a was normalised; normalise the rows of b too"),
        (a @ nb.T, "only b was normalised; normalise the rows of a too"),
        (a @ b.T / (a.norm() * b.norm()), "divide each entry by the norms of its own two rows, not by "
                                          "the norms of the whole matrices"),
        (na @ nb.T * 0.5 + 0.5, "return the cosine itself, in [−1, 1], not a rescaled version"),
    ]
    checks.close(name, found, want, atol=1e-6, rtol=1e-5, mistakes=mistakes,
                 hint="S = (a / ‖a_i‖) @ (b / ‖b_j‖).T, with the norms taken per row")


# ----------------------------------------------------------------------------------------
# exercise 4.2: CLIP's symmetric InfoNCE loss
# ----------------------------------------------------------------------------------------

CLIP_SCALE = 10.0


def _clip_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(42)
    img = torch.randn(6, 8, generator=g, dtype=torch.float64) * 3.0
    txt = img @ torch.randn(8, 8, generator=g, dtype=torch.float64) * 0.3 \
        + torch.randn(6, 8, generator=g, dtype=torch.float64)
    return img, txt


def _ce(logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits, torch.arange(logits.shape[0]), reduction=reduction)


def check_clip_loss(fn: Callable) -> None:
    """Check ``clip_loss(img_emb, txt_emb, logit_scale)`` (value and gradient w.r.t. the scale)."""
    name = "clip_loss"
    img, txt = _clip_inputs()
    scale = torch.tensor(CLIP_SCALE, dtype=torch.float64, requires_grad=True)
    found = checks.attempt(name, fn, img.clone(), txt.clone(), scale, fallback="mmcourse.losses.clip_loss")
    if checks.is_pending(found):
        return
    want = losses.clip_loss(img, txt, torch.tensor(CLIP_SCALE, dtype=torch.float64))
    cos = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    raw = img @ txt.T
    s = CLIP_SCALE
    with torch.no_grad():
        mistakes = [
            (0.5 * (_ce(s * raw) + _ce(s * raw.T)),
             "you forgot to L2-normalise the embeddings: the logits are (1/τ)·cosine, not (1/τ)·dot product"),
            (_ce(s * cos), "you kept only the image→text direction; CLIP averages it with text→image "
                           "(cross-entropy of the transposed logits)"),
            (_ce(s * cos.T), "you kept only the text→image direction; add image→text and average"),
            (0.5 * (_ce(cos / s) + _ce(cos.T / s)),
             "logit_scale is already 1/τ: multiply the cosines by it (you divided, i.e. multiplied by τ)"),
            (0.5 * (_ce(cos) + _ce(cos.T)), "the cosines must be multiplied by logit_scale (= 1/τ)"),
            (_ce(s * cos) + _ce(s * cos.T), "the two directions are averaged (× ½), not summed"),
            (0.5 * (_ce(s * cos, "sum") + _ce(s * cos.T, "sum")),
             "cross-entropy must be the mean over the batch, not the sum"),
            (0.5 * (_ce(s * cos) + _ce(s * cos)), "the second term needs the *transposed* logits (text→image)"),
        ]
    if not checks.close(name, found, want, atol=1e-6, rtol=1e-6, mistakes=mistakes,
                        hint="logits = logit_scale · normalise(img) @ normalise(txt).T; loss = ½[CE(logits, "
                             "arange(N)) + CE(logits.T, arange(N))]"):
        return
    if not (torch.is_tensor(found) and found.requires_grad):
        found_what = ("a Tensor with requires_grad=False (cut off from logit_scale)" if torch.is_tensor(found)
                      else type(found).__name__)
        checks.failed(name + " (gradient)", "a tensor that autograd can differentiate", found_what,
                      "stay in torch (no .item(), .numpy() or float(logit_scale)): a Python float of the "
                      "scale is a constant, so the temperature gets no gradient and cannot be learned")
        return
    (g_found,) = torch.autograd.grad(found, scale, allow_unused=True)
    if g_found is None:
        checks.failed(name + " (∂L/∂logit_scale)", "a gradient for logit_scale", "none (not in the graph)",
                      "the temperature must be learnable: use logit_scale itself, not a detached copy or a float")
        return
    ref_scale = torch.tensor(CLIP_SCALE, dtype=torch.float64, requires_grad=True)
    (g_want,) = torch.autograd.grad(losses.clip_loss(img, txt, ref_scale), ref_scale)
    checks.close(name + " (∂L/∂logit_scale)", g_found, g_want, atol=1e-6, rtol=1e-6,
                 hint="the temperature must be learnable: use logit_scale in the graph, not a detached copy")


# ----------------------------------------------------------------------------------------
# exercise 4.3: recall@K
# ----------------------------------------------------------------------------------------

RECALL_KS = (1, 2, 5)


def recall_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two fixed retrieval problems: one correct candidate each (a permutation, 10 × 10) and
    three correct candidates each (4 queries × 12 candidates, like image→text with 3 captions)."""
    g = torch.Generator().manual_seed(43)
    sim1 = torch.randn(10, 10, generator=g)
    perm = torch.randperm(10, generator=g)
    match1 = torch.zeros(10, 10, dtype=torch.bool)
    match1[torch.arange(10), perm] = True
    sim1[torch.arange(10), perm] += 0.8  # better than chance, not perfect
    sim2 = torch.randn(4, 12, generator=g)
    match2 = torch.as_tensor(alignment.match_matrix(np.repeat(np.arange(4), 3)[torch.randperm(12, generator=g).numpy()], 4))
    sim2 += 0.6 * match2
    return [(sim1, match1), (sim2, match2)]


def _recall_variant(sim: torch.Tensor, match: torch.Tensor, k: int, kind: str) -> float:
    """What a typical mistake computes."""
    if kind == "ir":  # fraction of all correct candidates that are in the top k
        top = sim.topk(min(k, sim.shape[1]), dim=1).indices
        return float((match.gather(1, top).sum(1).float() / match.sum(1)).mean())
    if kind == "k-1":
        return alignment.recall_at_k(sim, match, k - 1) if k > 1 else 0.0
    if kind == "k+1":
        return alignment.recall_at_k(sim, match, k + 1)
    if kind == "ascending":
        return alignment.recall_at_k(-sim, match, k)
    if kind == "axis":
        return alignment.recall_at_k(sim.T, match.T, k)
    if kind == "diagonal":
        return alignment.recall_at_k(sim, torch.eye(*sim.shape, dtype=torch.bool), k)
    if kind == "count":
        return float((torch.as_tensor(alignment.ranks(sim, match)) <= k).sum())
    raise ValueError(kind)


def check_recall_at_k(fn: Callable) -> None:
    """Check ``recall_at_k(sim, match, k)`` on two problems for k = 1, 2, 5."""
    name = "recall_at_k"
    hints = {
        "ir": "R@K asks whether *at least one* correct candidate is in the top K (then the query counts "
              "1), not which fraction of all correct candidates is",
        "k-1": "off by one: you count the top K−1 (ranks start at 1; use rank <= K, or topk(K))",
        "k+1": "off by one: you count the top K+1 (ranks start at 1; use rank <= K, or topk(K))",
        "ascending": "you took the K *least* similar candidates: sort in descending order (topk, or "
                     "argsort(descending=True))",
        "axis": "wrong axis: rank the candidates of each query along dim=1 (each row), not the "
                "queries of each candidate",
        "diagonal": "use `match`: the correct candidates are where match is True, not on the diagonal",
        "count": "return the fraction of queries (a mean in [0, 1]), not their count",
    }
    for case, (sim, match) in enumerate(recall_cases(), start=1):
        found = []
        for k in RECALL_KS:
            got = checks.attempt(name, fn, sim.clone(), match.clone(), k, fallback="mmcourse.alignment.recall_at_k")
            if checks.is_pending(got):
                return
            found.append(float(got) if np.ndim(checks._as_array(got)) == 0 else np.nan)
        want = [alignment.recall_at_k(sim, match, k) for k in RECALL_KS]
        mistakes = []
        for kind, hint in hints.items():
            try:
                mistakes.append(([_recall_variant(sim, match, k, kind) for k in RECALL_KS], hint))
            except (RuntimeError, ValueError, IndexError):  # a mistake impossible on this problem
                pass
        label = f"{name} (problem {case}: {sim.shape[0]} queries × {sim.shape[1]} candidates, k = {RECALL_KS})"
        if any(np.isnan(found)):
            checks.failed(label, "one float per call", found, "return a single number, e.g. float(hits.mean())")
            return
        if not checks.close(label, np.array(found), np.array(want), atol=1e-6, rtol=1e-6, mistakes=mistakes,
                            hint="rank the candidates of each query by similarity (descending); the query is a "
                                 "hit when a correct candidate is among the first k; R@K = hits / queries"):
            return


# ----------------------------------------------------------------------------------------
# exercise 4.4: zero-shot classification
# ----------------------------------------------------------------------------------------


def _zero_shot_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(44)
    classes = torch.randn(4, 8, generator=g) * torch.tensor([[0.2], [1.0], [3.0], [10.0]])
    images = torch.randn(12, 8, generator=g) * torch.rand(12, 1, generator=g) * 3
    return images, classes


def check_zero_shot_classify(fn: Callable) -> None:
    """Check ``zero_shot_classify(image_emb, class_emb)`` → predicted class index per image."""
    name = "zero_shot_classify"
    images, classes = _zero_shot_inputs()
    found = checks.attempt(name, fn, images.clone(), classes.clone(),
                           fallback="mmcourse.alignment.zero_shot_classify")
    if checks.is_pending(found):
        return
    want = alignment.zero_shot_classify(images, classes)
    got = checks._as_array(found) if found is not None else None
    if got is not None and got.shape == (classes.shape[0],):
        checks.failed(name, f"shape ({images.shape[0]},): one class per image", f"shape {got.shape}",
                      "wrong axis: take the argmax over the classes (dim=1 of the (images, classes) "
                      "similarity matrix), not over the images")
        return
    if got is not None and got.shape == (images.shape[0], classes.shape[0]):
        checks.failed(name, f"shape ({images.shape[0]},): class indices", f"shape {got.shape}",
                      "that is the similarity matrix; return its argmax over the classes (dim=1)")
        return
    cos = alignment.cosine_similarity_matrix(images, classes)
    mistakes = [
        ((images @ classes.T).argmax(dim=1),
         "you forgot to normalise: with raw dot products a class embedding with a large norm wins "
         "for every image; use cosine similarity"),
        (cos.argmin(dim=1), "argmin picks the *least* similar class; use argmax"),
    ]
    checks.close(name, found, want, atol=0, rtol=0, mistakes=mistakes,
                 hint="predicted class = argmax over classes of cos(image, class prompt)")


# ----------------------------------------------------------------------------------------
# quizzes
# ----------------------------------------------------------------------------------------

def check_quiz_4_1(fn: Callable) -> None:
    """The symmetric InfoNCE loss of a batch of 128 pairs when every logit is equal."""
    checks.quiz("quiz 4.1 (chance level)", fn, correct=float(np.log(128)), rel_tol=0.005,
                explanation="equal logits make each softmax uniform over the N = 128 candidates, so each "
                            "cross-entropy is −log(1/128) = log 128 ≈ 4.852, and so is their average. Only "
                            "*equal* logits give log N: random embeddings at a small τ give confident, "
                            "wrong logits and a much larger loss (§2).")


QUIZ_4_2 = {
    "a": "R@1, R@5 and R@10",
    "b": "R@5 and R@10",
    "c": "R@10 only",
    "d": "none: its rank is 2, because ranks start at 0",
}


def check_quiz_4_2(fn: Callable) -> None:
    """A query's only correct candidate has the 3rd-highest similarity: which recalls count it?"""
    checks.quiz("quiz 4.2 (rank and recall)", fn, correct="b", choices=QUIZ_4_2,
                explanation="ranks start at 1, so the 3rd most similar candidate has rank 3; R@K counts "
                            "rank ≤ K, so it is a hit for R@5 and R@10 and a miss for R@1.")


QUIZ_4_3 = {
    "a": "an image query has 5 times fewer candidates to search than a caption query",
    "b": "an image query scores when the best of its 5 captions ranks first; a caption query must be answered "
         "by its one image, however vague the caption",
    "c": "the chance level of text→image R@1 is 5 times lower",
    "d": "the text encoder is weaker than the image encoder",
}


def check_quiz_4_3(fn: Callable) -> None:
    """Why is text→image R@1 lower than image→text R@1 on Flickr8k, although chance is the same?"""
    checks.quiz("quiz 4.3 (best of 5 positives)", fn, correct="b", choices=QUIZ_4_3,
                explanation="chance is equal in both directions (5 of 5,000 captions = 1 of 1,000 images). "
                            "Image→text takes the maximum over 5 positives: the clearest caption decides and "
                            "the vague ones cannot hurt. Text→image asks every caption, vague ones included; "
                            "with one caption per image, image→text drops to about the text→image level (§5).")
