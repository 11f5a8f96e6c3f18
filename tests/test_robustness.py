"""mmcourse.robustness (notebook 12, §Robustness curves): SNR mixing, noise colours, image
corruptions and MultiBench's robustness summaries against hand-derived values, numpy.fft,
torchvision and sklearn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from sklearn.metrics import auc

from mmcourse import robustness as R

SR = 16000


def sines(n: int = SR, dtype=np.float32) -> np.ndarray:
    """One second of a real-looking signal: three partials of different loudness."""
    t = np.arange(n) / SR
    x = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 440 * t + 1.0) + 0.1 * np.sin(2 * np.pi * 1000 * t)
    return x.astype(dtype)


def rand_image(*shape: int, seed: int = 0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * high


# ------------------------------------------------------------------------------ mix_at_snr

@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr", [20, 10, 5, 0, -5])
def test_mix_at_snr_measured_snr_equals_request(snr, kind):
    clean = sines()
    mixed = R.mix_at_snr(clean, R.noise(len(clean), kind, seed=1), snr)
    assert isinstance(mixed, np.ndarray) and mixed.dtype == np.float32 and mixed.shape == clean.shape
    assert abs(R.snr_db(clean, mixed) - snr) < 0.01


def test_mix_at_snr_by_hand_and_power():
    clean = np.array([1.0, -1.0, 1.0, -1.0])  # power 1
    nz = np.array([2.0, 0.0, 0.0, 0.0])  # power 1
    assert R.power(clean) == 1.0 and R.power(torch.tensor(nz)) == 1.0
    mixed = R.mix_at_snr(clean, nz, 20.0)  # power(g·noise) = 0.01 → g = 0.1
    np.testing.assert_allclose(mixed, [1.2, -1.0, 1.0, -1.0], atol=1e-12)
    assert R.snr_db(clean, mixed) == pytest.approx(20.0, abs=1e-9)
    assert R.snr_db(clean, clean.copy()) == math.inf


def test_mix_at_snr_inf_returns_equal_copy():
    clean = sines()
    out = R.mix_at_snr(clean, R.noise(len(clean)), math.inf)
    assert out is not clean and not np.shares_memory(out, clean)
    np.testing.assert_array_equal(out, clean)
    assert out.dtype == np.float32
    t = torch.from_numpy(clean)
    out_t = R.mix_at_snr(t, torch.from_numpy(R.noise(100)), float("inf"))
    assert isinstance(out_t, torch.Tensor) and torch.equal(out_t, t)
    assert out_t.data_ptr() != t.data_ptr()


@pytest.mark.parametrize("n_noise", [1000, 1500, 3, 16000, 20000])
def test_mix_at_snr_tiles_short_and_crops_long_noise(n_noise):
    clean = sines(dtype=np.float64)
    nz = R.noise(n_noise, seed=2).astype(np.float64)
    want_tile = np.concatenate([nz] * (len(clean) // n_noise + 1))[: len(clean)]
    if n_noise >= len(clean):
        np.testing.assert_array_equal(want_tile, nz[: len(clean)])  # cropped from the start
    g = math.sqrt(np.mean(clean ** 2) / (np.mean(want_tile ** 2) * 10 ** (5 / 10)))
    mixed = R.mix_at_snr(clean, nz, 5)
    assert mixed.shape == clean.shape and mixed.dtype == np.float64
    np.testing.assert_allclose(mixed - clean, g * want_tile, atol=1e-12)
    assert R.snr_db(clean, mixed) == pytest.approx(5, abs=1e-9)


def test_mix_at_snr_keeps_torch_type_and_dtype():
    clean = torch.from_numpy(sines())
    nz = torch.from_numpy(R.noise(7000, "pink", seed=3))
    for noise_in in (nz, nz.numpy()):  # torch or numpy noise: the output follows clean
        out = R.mix_at_snr(clean, noise_in, 10)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == clean.shape
        assert abs(R.snr_db(clean, out) - 10) < 0.01
    out64 = R.mix_at_snr(clean.double(), nz, 0)
    assert out64.dtype == torch.float64 and abs(R.snr_db(clean.double(), out64)) < 1e-9


def test_mix_at_snr_does_not_modify_inputs():
    clean, nz = sines(), R.noise(5000, seed=4)
    c0, n0 = clean.copy(), nz.copy()
    R.mix_at_snr(clean, nz, 0)
    np.testing.assert_array_equal(clean, c0)
    np.testing.assert_array_equal(nz, n0)
    ct, nt = torch.from_numpy(c0.copy()), torch.from_numpy(n0.copy())
    R.mix_at_snr(ct, nt, 0)
    assert torch.equal(ct, torch.from_numpy(c0)) and torch.equal(nt, torch.from_numpy(n0))


@pytest.mark.parametrize("clean, nz, snr, match", [
    (np.zeros(100, np.float32), R.noise(100), 10, "clean is silent"),
    (sines(100), np.zeros(50, np.float32), 10, "noise is silent"),
    (np.stack([sines(100)] * 2), R.noise(100), 10, "clean must be a 1-D waveform"),
    (sines(100), np.stack([R.noise(100)] * 2), 10, "noise must be a 1-D waveform"),
    (sines(100), R.noise(100), float("nan"), "snr_db must be a number"),
    (sines(100), R.noise(100), -math.inf, "snr_db must be a number"),
    ((sines(100) * 3000).astype(np.int16), R.noise(100), 10, "pcm16_to_float"),
    (np.zeros(0, np.float32), R.noise(100), 10, "clean is empty"),
])
def test_mix_at_snr_errors_say_what_to_pass(clean, nz, snr, match):
    with pytest.raises(ValueError, match=match):
        R.mix_at_snr(clean, nz, snr)


def test_snr_db_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        R.snr_db(sines(100), sines(99))


# ----------------------------------------------------------------------------------- noise

@pytest.mark.parametrize("kind", ["white", "pink"])
def test_noise_is_deterministic_by_seed(kind):
    a, b, c = R.noise(4000, kind, seed=3), R.noise(4000, kind, seed=3), R.noise(4000, kind, seed=4)
    assert a.dtype == np.float32 and a.shape == (4000,)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert R.power(a) == pytest.approx(1.0, rel=1e-5) and abs(a.mean()) < 1e-6


def _spectrum(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Periodogram without the DC bin: frequencies (cycles/sample, Nyquist = 0.5) and |X|²."""
    return np.fft.rfftfreq(len(x))[1:], np.abs(np.fft.rfft(x.astype(np.float64)))[1:] ** 2


def test_pink_noise_has_more_low_band_power_and_slope_minus_one():
    n = 2 ** 16
    f, p_pink = _spectrum(R.noise(n, "pink", seed=5))
    _, p_white = _spectrum(R.noise(n, "white", seed=5))
    low = f < 0.05  # below 1/10 of Nyquist
    frac_pink, frac_white = p_pink[low].sum() / p_pink.sum(), p_white[low].sum() / p_white.sum()
    assert frac_white == pytest.approx(0.1, abs=0.02)  # flat spectrum: the band's share of the width
    assert frac_pink > 0.6 > frac_white  # ln(0.05·n)/ln(0.5·n) ≈ 0.79 for 1/f
    band = (f >= 1e-3) & (f <= 0.5)
    slope_pink = np.polyfit(np.log10(f[band]), np.log10(p_pink[band]), 1)[0]
    slope_white = np.polyfit(np.log10(f[band]), np.log10(p_white[band]), 1)[0]
    assert abs(slope_pink + 1) < 0.3
    assert abs(slope_white) < 0.3


def test_noise_errors():
    with pytest.raises(ValueError, match="white"):
        R.noise(100, "brown")
    with pytest.raises(ValueError, match="integer number of samples"):
        R.noise(0)


# --------------------------------------------------------------------------------- corrupt

def test_severity_table():
    assert R.CORRUPTIONS == tuple(R.SEVERITY)
    assert all(len(v) == 6 and v[0] == 0 for v in R.SEVERITY.values())
    assert R.SNR_LEVELS == (math.inf, 20, 10, 5, 0)
    assert [R.blur_kernel_size(s, 224, 224) for s in R.SEVERITY["blur"][1:]] == [5, 9, 13, 17, 25]
    assert R.blur_kernel_size(6, 8, 40) == 15  # capped so reflect padding fits an 8-pixel side


@pytest.mark.parametrize("kind", R.CORRUPTIONS)
def test_corrupt_level0_is_an_equal_copy_and_change_grows_with_level(kind):
    img = rand_image(3, 64, 64, seed=1)
    before = img.clone()
    out0 = R.corrupt(img, kind, 0)
    assert torch.equal(out0, img) and out0.data_ptr() != img.data_ptr()
    change = []
    for level in range(1, 6):
        out = R.corrupt(img, kind, level, seed=3)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert out.min() >= 0 and out.max() <= 1
        change.append(float((out - img).abs().mean()))
    assert all(a < b for a, b in zip(change, change[1:])), change
    assert change[0] > 0
    assert torch.equal(img, before)  # input untouched


def test_blur_equals_torchvision_gaussian_blur_and_works_on_tiny_images():
    img = rand_image(3, 40, 50, seed=2)
    torch.testing.assert_close(R.corrupt(img, "blur", 1), TF.gaussian_blur(img, [5, 5], [1.0, 1.0]))
    torch.testing.assert_close(R.corrupt(img, "blur", 5), TF.gaussian_blur(img, [25, 25], [6.0, 6.0]))
    tiny = R.corrupt(rand_image(3, 8, 8), "blur", 5)
    assert tiny.shape == (3, 8, 8)


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_salt_pepper_changes_requested_fraction_of_whole_pixels(level):
    img = rand_image(3, 224, 224, seed=4)  # torch.rand is < 1 and (almost surely) never 0
    out = R.corrupt(img, "salt_pepper", level, seed=5)
    changed = (out != img).any(dim=0)
    frac = R.SEVERITY["salt_pepper"][level]
    assert abs(changed.float().mean().item() - frac) < 0.01
    px = out[:, changed]  # (3, k): every changed pixel is black or white in all channels
    assert ((px == 0) | (px == 1)).all() and (px == px[:1]).all()
    n_salt, n_pepper = int((px[0] == 1).sum()), int((px[0] == 0).sum())
    assert abs(n_salt - n_pepper) <= 1
    assert torch.equal(out[:, ~changed], img[:, ~changed])


@pytest.mark.parametrize("level, side", [(1, 5), (2, 10), (3, 14), (4, 19), (5, 24)])
def test_occlusion_square_has_requested_side_and_lies_inside(level, side):
    img = rand_image(3, 48, 80, seed=6, high=0.45)  # no 0.5 values, shorter side 48
    for seed in range(25):  # many positions: a square cut by the border would lose pixels
        out = R.corrupt(img, "occlusion", level, seed=seed)
        changed = (out != img).any(dim=0)
        assert int(changed.sum()) == side * side
        rows, cols = changed.any(dim=1).nonzero()[:, 0], changed.any(dim=0).nonzero()[:, 0]
        assert rows[-1] - rows[0] + 1 == side and cols[-1] - cols[0] + 1 == side
        assert (out[:, changed] == 0.5).all()


def test_grayscale_level5_equals_rgb_to_grayscale():
    img = rand_image(2, 3, 32, 32, seed=7)
    out = R.corrupt(img, "grayscale", 5)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    torch.testing.assert_close(out, TF.rgb_to_grayscale(img, num_output_channels=3))
    half = R.corrupt(img, "grayscale", 2)  # weight 0.4 of the grey image
    torch.testing.assert_close(half, 0.6 * img + 0.4 * TF.rgb_to_grayscale(img, 3))


@pytest.mark.parametrize("kind", R.CORRUPTIONS)
def test_batch_equals_per_image_with_its_index(kind):
    batch = rand_image(4, 3, 32, 32, seed=8)
    before = batch.clone()
    out = R.corrupt(batch, kind, 3, seed=7)
    assert out.shape == batch.shape
    for i in range(4):
        torch.testing.assert_close(out[i], R.corrupt(batch[i], kind, 3, seed=7, index=i), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[2:], R.corrupt(batch[2:], kind, 3, seed=7, index=2), rtol=0, atol=1e-6)
    assert torch.equal(batch, before)


@pytest.mark.parametrize("kind", ["salt_pepper", "occlusion"])
def test_random_kinds_same_seed_same_output_other_seed_or_image_other_output(kind):
    img = rand_image(3, 64, 64, seed=9)
    a, b, c = R.corrupt(img, kind, 2, seed=1), R.corrupt(img, kind, 2, seed=1), R.corrupt(img, kind, 2, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = R.corrupt(torch.stack([img, img]), kind, 2, seed=1)  # two copies get their own draws
    assert torch.equal(same[0], a) and not torch.equal(same[0], same[1])
    torch.manual_seed(0)
    r0 = torch.rand(1)
    torch.manual_seed(0)
    R.corrupt(img, kind, 2, seed=1)
    assert torch.equal(torch.rand(1), r0)  # the global RNG is neither used nor advanced


def test_corrupt_keeps_float64():
    img = rand_image(3, 16, 16, seed=10).double()
    for kind in R.CORRUPTIONS:
        assert R.corrupt(img, kind, 4).dtype == torch.float64


@pytest.mark.parametrize("args, match", [
    ((rand_image(3, 8, 8), "fog", 1), "blur"),
    ((rand_image(3, 8, 8), "blur", 6), r"0\.\.5"),
    ((rand_image(3, 8, 8), "blur", -1), r"0\.\.5"),
    ((rand_image(3, 8, 8), "blur", 1.0), "integer"),
    (((rand_image(3, 8, 8) * 255).to(torch.uint8), "blur", 1), "float"),
    ((rand_image(1, 8, 8), "blur", 1), r"\(3, H, W\)"),
    (((rand_image(3, 8, 8) - 0.45) / 0.22, "blur", 1), "Normalize"),
])
def test_corrupt_errors(args, match):
    with pytest.raises(ValueError, match=match):
        R.corrupt(*args)


# ---------------------------------------------------------------------------------- curves

def test_relative_robustness_hand_values():
    assert R.relative_robustness([0, 1, 2, 3], [0.7] * 4) == pytest.approx(0.7)
    assert R.relative_robustness([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert R.relative_robustness(range(6), np.linspace(1, 0, 6)) == pytest.approx(0.5)
    # uneven: (1·(1 + 0.8)/2 + 2·(0.8 + 0.2)/2) / 3 = 1.9 / 3
    assert R.relative_robustness([0, 1, 3], [1.0, 0.8, 0.2]) == pytest.approx(1.9 / 3)
    assert R.relative_robustness([10, 20], torch.tensor([0.9, 0.5])) == pytest.approx(0.7)


@pytest.mark.parametrize("seed", range(5))
def test_relative_robustness_equals_sklearn_auc_over_span(seed):
    rng = np.random.default_rng(seed)
    levels = np.cumsum(rng.uniform(0.1, 2.0, 3 + seed)) - 0.5
    acc = rng.uniform(0, 1, len(levels))
    assert R.relative_robustness(levels, acc) == pytest.approx(auc(levels, acc) / (levels[-1] - levels[0]), abs=1e-12)


@pytest.mark.parametrize("levels, acc, match", [
    ([0, 1, 2], [0.9, 0.8], "same length"),
    ([0], [0.9], "at least 2"),
    ([0, 1, 1], [0.9, 0.8, 0.7], "strictly increasing"),
    ([2, 1, 0], [0.9, 0.8, 0.7], "strictly increasing"),
    (R.SNR_LEVELS, [0.9, 0.8, 0.7, 0.6, 0.5], r"range\(len\(SNR_LEVELS\)\)"),
    ([0, 1], [[0.9, 0.8]], "1-D"),
])
def test_relative_robustness_errors(levels, acc, match):
    with pytest.raises(ValueError, match=match):
        R.relative_robustness(levels, acc)


LEVELS = [0, 1, 2, 3]
LATE = [0.8, 0.6, 0.4, 0.2]


def test_effective_robustness_zero_for_scaled_reference_positive_for_flatter():
    assert R.effective_robustness(LEVELS, np.array(LATE) * 0.9 / 0.8, LATE) == pytest.approx(0, abs=1e-12)
    assert R.effective_robustness(LEVELS, LATE, LATE) == 0
    assert R.effective_robustness(LEVELS, [0.8, 0.75, 0.7, 0.65], LATE) > 0
    assert R.effective_robustness(LEVELS, [0.8, 0.3, 0.2, 0.1], LATE) < 0


def test_effective_robustness_hand_example():
    # reference scaled by 0.9/0.6 = 1.5 → [0.9, 0.75, 0.3]; rr = ((0.9+0.75)/2 + (0.75+0.3)/2)/2 = 0.675
    # model rr = ((0.9+0.6)/2 + (0.6+0.3)/2)/2 = 0.6; an additive shift (+0.3) would give 0.825 instead
    assert R.effective_robustness([0, 1, 2], [0.9, 0.6, 0.3], [0.6, 0.5, 0.2]) == pytest.approx(-0.075)


def test_effective_robustness_errors():
    with pytest.raises(ValueError, match="clean accuracy .* is 0"):
        R.effective_robustness(LEVELS, LATE, [0, 0.1, 0.1, 0.1])
    with pytest.raises(ValueError, match="same length"):
        R.effective_robustness(LEVELS, LATE, LATE[:3])


def test_robustness_table_rows_match_the_functions():
    curves = {"image": [0.7, 0.5, 0.3, 0.1], "late": LATE, "tensor": torch.tensor([0.85, 0.8, 0.7, 0.5])}
    rows = R.robustness_table(LEVELS, curves, reference="late")
    assert [r["name"] for r in rows] == ["image", "late", "tensor"]
    for row in rows:
        acc = np.asarray(curves[row["name"]], dtype=float)
        assert set(row) == {"name", "clean", "worst", "relative", "effective"}
        assert row["clean"] == pytest.approx(acc[0]) and row["worst"] == pytest.approx(acc[-1])
        assert row["relative"] == pytest.approx(R.relative_robustness(LEVELS, acc))
        assert row["effective"] == pytest.approx(R.effective_robustness(LEVELS, acc, LATE))
    assert rows[1]["effective"] == 0
    assert rows[0]["relative"] == pytest.approx(0.4)  # linear 0.7 → 0.1: mean of the ends
    # image scaled reference: 0.7/0.8·0.5 = 0.4375 → image is 0.0375 worse
    assert rows[0]["effective"] == pytest.approx(0.4 - 0.4375)
    with pytest.raises(ValueError, match="not one of the curves"):
        R.robustness_table(LEVELS, curves, reference="early")
