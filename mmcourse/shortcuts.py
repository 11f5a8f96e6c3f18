"""Shortcut cues planted on purpose (notebook 12, §Shortcut learning; Geirhos et al. 2020).

A shortcut is a feature that predicts the label in the training data but not in the world — a
hospital's marker in the corner of an X-ray (Zech et al. 2018; DeGrave et al. 2021), a studio's
hum under one sound class. Notebook 12 plants one in the training images or clips of a single
class and watches a model learn it instead of the task: :func:`stamp` draws a small bright
square, :func:`add_tone` mixes a pure tone at a chosen SNR (:func:`mmcourse.robustness.mix_at_snr`).
Inputs are never modified in place.
"""
from __future__ import annotations

import numpy as np
import torch

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def stamp(images: torch.Tensor, size: int = 12, corner: str = "top-left", value: float = 1.0,
          margin: int = 4) -> torch.Tensor:
    """``images`` (3, H, W) or (B, 3, H, W) in [0, 1] with a ``size`` x ``size`` square of ``value`` in a corner."""
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {CORNERS}, not {corner!r}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"stamp expects (3, H, W) or (B, 3, H, W) images, got shape {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if size + margin > min(h, w):
        raise ValueError(f"a {size}-pixel stamp with a {margin}-pixel margin does not fit a {h}x{w} image")
    top = margin if corner.startswith("top") else h - margin - size
    left = margin if corner.endswith("left") else w - margin - size
    out = images.clone()
    out[..., top:top + size, left:left + size] = value
    return out


def tone(n: int, sample_rate: int, freq: float = 1000.0) -> np.ndarray:
    """A unit-amplitude sine of ``freq`` Hz, ``n`` samples long (float32)."""
    if not 0 < freq < sample_rate / 2:
        raise ValueError(f"a {freq} Hz tone cannot be represented at {sample_rate} Hz (Nyquist {sample_rate / 2:g} Hz)")
    return np.sin(2 * np.pi * freq * np.arange(n) / sample_rate).astype(np.float32)


def add_tone(wave: np.ndarray, sample_rate: int, freq: float = 1000.0, snr_db: float = 10.0) -> np.ndarray:
    """``wave`` with a ``freq``-Hz tone mixed in at ``snr_db`` (signal to tone power), as a shortcut cue."""
    from mmcourse.robustness import mix_at_snr

    return mix_at_snr(np.asarray(wave, dtype=np.float32), tone(len(wave), sample_rate, freq), snr_db)
