"""Splits that leak, and splits that do not (notebook 12, §Leakage in evaluation).

Examples that share a source — the recordings of one speaker (FSDD), the clips cut from one
recording (ESC-10), the X-rays of one patient (Kermany) — are more alike than two random
examples. A random split puts some of them on both sides, and the test score then measures
recognition of the source as well as the task. :func:`grouped_folds` keeps every group in one
fold (``sklearn``'s ``GroupKFold``); :func:`random_folds` is the leaky split it is compared with;
:func:`crossing_groups` finds the groups a split cuts.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grouped_folds(groups: Sequence, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..n_folds-1) of every example; all examples of a group share one fold.

    ``sklearn.model_selection.GroupKFold(shuffle=True)``: groups are shuffled by ``seed`` and
    assigned so that the folds are about the same size. Needs at least ``n_folds`` groups.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ValueError(f"{n_groups} groups cannot fill {n_folds} folds without splitting a group; "
                         f"use n_folds <= {n_groups}")
    folds = np.empty(len(groups), dtype=int)
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups)):
        folds[test] = k
    return folds


def random_folds(n: int, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index of each of ``n`` examples by a plain shuffled split (groups ignored: the leaky split)."""
    from sklearn.model_selection import KFold

    folds = np.empty(n, dtype=int)
    for k, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.zeros(n))):
        folds[test] = k
    return folds


def crossing_groups(groups: Sequence, folds: Sequence[int]) -> list:
    """The groups whose examples sit in more than one fold (empty for a grouped split)."""
    seen: dict = {}
    for g, f in zip(groups, folds):
        seen.setdefault(g, set()).add(int(f))
    return sorted(g for g, fs in seen.items() if len(fs) > 1)
