"""mmcourse.shortcuts: the planted cues of notebook 12's shortcut experiment."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcourse import robustness, shortcuts


@pytest.mark.parametrize("corner, rows, cols", [("top-left", (4, 16), (4, 16)), ("top-right", (4, 16), (44, 56)),
                                                ("bottom-left", (44, 56), (4, 16)), ("bottom-right", (44, 56), (44, 56))])
def test_stamp_draws_one_square_in_the_corner_and_leaves_the_rest(corner, rows, cols):
    images = torch.rand(2, 3, 60, 60) * 0.5
    out = shortcuts.stamp(images, size=12, corner=corner)
    changed = (out != images).any(dim=1)  # (B, H, W)
    assert changed.sum().item() == 2 * 12 * 12
    assert bool((out[:, :, rows[0]:rows[1], cols[0]:cols[1]] == 1.0).all())
    assert images.max() <= 0.5  # the input is untouched
    single = shortcuts.stamp(images[0], size=12, corner=corner)
    assert torch.equal(single, out[0])


def test_stamp_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="corner must be one of"):
        shortcuts.stamp(torch.zeros(3, 32, 32), corner="middle")
    with pytest.raises(ValueError, match="does not fit"):
        shortcuts.stamp(torch.zeros(3, 10, 10), size=8)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        shortcuts.stamp(torch.zeros(32, 32))


def test_add_tone_mixes_a_pure_tone_at_the_requested_snr():
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(8000)).astype(np.float32)
    out = shortcuts.add_tone(wave, 8000, freq=1000, snr_db=10)
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert robustness.snr_db(wave, out) == pytest.approx(10, abs=0.01)
    spectrum = np.abs(np.fft.rfft(out - wave))
    assert np.argmax(spectrum) == 1000  # 8,000 samples at 8 kHz: one bin per Hz
    with pytest.raises(ValueError, match="Nyquist"):
        shortcuts.tone(100, 8000, freq=5000)
