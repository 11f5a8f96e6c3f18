"""Batching samples of different lengths: audio, spectrograms and token ids (notebooks 03, 04, 08, 10).

Every loader returns samples as dicts. :func:`collate` stacks what has the same shape, pads
along the last (time) dimension what does not and records the true lengths in
``<key>_lengths``, and keeps strings and lists as lists. :func:`text_collate` adds tokenising.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch


def pad_sequence(items: Sequence[torch.Tensor], pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad tensors along their last dimension → ``(padded (B, ..., T_max), lengths (B,))``."""
    if not items:
        raise ValueError("pad_sequence needs at least one tensor")
    lengths = torch.tensor([t.shape[-1] for t in items], dtype=torch.long)
    lead = items[0].shape[:-1]
    for t in items:
        if t.shape[:-1] != lead:
            raise ValueError(f"cannot pad tensors whose leading shapes differ: {tuple(lead)} vs {tuple(t.shape[:-1])}")
    out = items[0].new_full((len(items), *lead, int(lengths.max())), pad_value)
    for i, t in enumerate(items):
        out[i, ..., : t.shape[-1]] = t
    return out, lengths


def padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """Boolean ``(B, T)`` mask, True on real positions and False on padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len)[None, :] < lengths[:, None]


PAD_VALUES = {"logmel": math.log(1e-6)}  # silence in log-mel units (transforms.log_mel's floor)


def collate(batch: list[dict], pad_values: dict[str, float] | None = None) -> dict:
    """Merge a list of sample dicts into one batch dict (see module doc).

    ``pad_values`` gives the padding value per key (default 0, and log(1e-6) - silence - for
    ``logmel``), e.g. ``{"input_ids": pad_id}``.
    """
    if not batch:
        return {}
    pad_values = {**PAD_VALUES, **(pad_values or {})}
    out: dict = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        first = values[0]
        if isinstance(first, torch.Tensor):
            if all(v.shape == first.shape for v in values):
                out[key] = torch.stack(values)
            else:
                out[key], out[f"{key}_lengths"] = pad_sequence(values, pad_values.get(key, 0.0))
        elif isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(first, float):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            out[key] = values
    return out


def text_collate(tokenize: Callable[[str], list[int]], key: str = "caption", pad_id: int = 0,
                 max_length: int | None = None) -> Callable[[list[dict]], dict]:
    """A collate function that also tokenises ``sample[key]`` into padded ``input_ids`` + ``attention_mask``.

    Returns a ``functools.partial`` (picklable, so it works with DataLoader workers on every OS).
    """
    return functools.partial(_text_collate, tokenize=tokenize, key=key, pad_id=pad_id, max_length=max_length)


def _text_collate(batch: list[dict], tokenize, key: str, pad_id: int, max_length: int | None) -> dict:
    out = collate(batch)
    ids = [torch.tensor(list(tokenize(b[key]))[:max_length], dtype=torch.long) for b in batch]
    out["input_ids"], lengths = pad_sequence(ids, pad_id)
    out["attention_mask"] = padding_mask(lengths, out["input_ids"].shape[-1]).long()
    return out
