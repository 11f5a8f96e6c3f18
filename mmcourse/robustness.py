"""Noise, corruptions and robustness curves (notebook 12, §Robustness curves).

A robustness curve is a model's accuracy against the severity of a corruption of its input:
audio mixed with noise at a falling signal-to-noise ratio (:func:`mix_at_snr`, :data:`SNR_LEVELS`),
images blurred, speckled, occluded or drained of colour (:func:`corrupt`, :data:`SEVERITY`).
Two numbers summarise a curve, after MultiBench (Liang et al. 2021, §Robustness):

- :func:`relative_robustness`: the normalised area under the curve (a flat curve at accuracy a
  gives a), written out by hand and checked against ``sklearn.metrics.auc``;
- :func:`effective_robustness`: how much better a model holds up than a reference (late fusion)
  would at the same clean accuracy.

:func:`robustness_table` puts both in one row per model.

Conventions: every random draw comes from its own seeded generator (``numpy.random.default_rng``
or a ``torch.Generator``), never from the global RNG, so a curve is reproducible from its seed;
inputs are never modified in place.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF

# ------------------------------------------------------------------------------------- audio

SNR_LEVELS = (math.inf, 20.0, 10.0, 5.0, 0.0)
"""Signal-to-noise ratios (dB) of the audio robustness curve, clean first. ``inf`` is not a
coordinate for :func:`relative_robustness`: use the severity index ``range(len(SNR_LEVELS))``."""

NOISE_KINDS = ("white", "pink")


def power(x: np.ndarray | torch.Tensor) -> float:
    """Mean square of a waveform, ``mean(x**2)``, computed in float64 (numpy array or torch tensor)."""
    if isinstance(x, torch.Tensor):
        return float(x.detach().double().pow(2).mean())
    return float(np.mean(np.square(np.asarray(x, dtype=np.float64))))


def _wave(x: Any, name: str) -> np.ndarray | torch.Tensor:
    """``x`` checked to be a non-empty, finite, 1-D float waveform (lists become float64 arrays)."""
    if not isinstance(x, torch.Tensor):
        x = np.asarray(x)
        if x.dtype.kind in "iub":
            raise ValueError(f"{name} must be a float waveform, got dtype {x.dtype}; convert 16-bit PCM "
                             f"with mmcourse.audio.pcm16_to_float (or x.astype(np.float32) / 32768)")
        x = x.astype(np.float64) if x.dtype.kind != "f" else x
    elif not x.is_floating_point():
        raise ValueError(f"{name} must be a float waveform, got {x.dtype}; pass x.float()")
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D waveform (one channel), got shape {tuple(x.shape)}; "
                         f"mix each channel separately or pass x.mean(axis=0) for mono")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: pass at least one sample")
    if not math.isfinite(power(x)):
        raise ValueError(f"{name} contains NaN or infinite samples; clean the waveform first")
    return x


def mix_at_snr(clean: np.ndarray | torch.Tensor, noise: np.ndarray | torch.Tensor,
               snr_db: float) -> np.ndarray | torch.Tensor:
    """``clean + g·noise`` with g chosen so that ``10·log10(power(clean) / power(g·noise)) == snr_db``.

    ``noise`` shorter than ``clean`` is repeated (tiled), longer is cropped from its start; the
    gain uses the power of that tiled/cropped segment, so the measured :func:`snr_db` equals the
    request. ``snr_db = inf`` returns an unchanged copy. The result has the type, dtype, device
    and shape (1-D) of ``clean``; the arithmetic runs in float64.
    """
    clean, noise = _wave(clean, "clean"), _wave(noise, "noise")
    snr = float(snr_db)
    if math.isnan(snr) or snr == -math.inf:
        raise ValueError(f"snr_db must be a number of dB (e.g. 10) or float('inf') for no noise, got {snr_db}")
    p_clean = power(clean)
    if p_clean == 0:
        raise ValueError("clean is silent (power 0): the SNR is undefined; pass a waveform with signal")
    if power(noise) == 0:
        raise ValueError("noise is silent (power 0): no gain reaches the SNR; pass noise with power, "
                         "e.g. robustness.noise(len(clean))")
    if snr == math.inf:
        return clean.clone() if isinstance(clean, torch.Tensor) else clean.copy()
    n = clean.shape[0]
    if isinstance(clean, torch.Tensor):
        nz = torch.as_tensor(noise).to(clean.device, torch.float64)
        nz = nz[torch.arange(n, device=clean.device) % nz.shape[0]]
    else:
        nz = np.resize(_np64(noise), n)  # repeats cyclically: tiles and crops from the start
    g = math.sqrt(p_clean / (power(nz) * 10.0 ** (snr / 10.0)))
    if isinstance(clean, torch.Tensor):
        return (clean.double() + g * nz).to(clean.dtype)
    return (clean.astype(np.float64) + g * nz).astype(clean.dtype)


def _np64(x: Any) -> np.ndarray:
    """A float64 numpy array from a list, numpy array or (CPU or GPU) torch tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def snr_db(clean: np.ndarray | torch.Tensor, noisy: np.ndarray | torch.Tensor) -> float:
    """Measured SNR in dB: ``10·log10(power(clean) / power(noisy − clean))``; ``inf`` when identical."""
    c, y = _np64(clean), _np64(noisy)
    if c.shape != y.shape:
        raise ValueError(f"clean and noisy must have the same shape, got {c.shape} and {y.shape}")
    p_clean, p_noise = power(c), power(y - c)
    if p_clean == 0:
        raise ValueError("clean is silent (power 0): the SNR is undefined; pass the clean reference signal")
    return math.inf if p_noise == 0 else 10.0 * math.log10(p_clean / p_noise)


def noise(n: int, kind: str = "white", seed: int = 0) -> np.ndarray:
    """``n`` samples of zero-mean, unit-power noise (float32), the same for the same ``seed``.

    ``"white"``: i.i.d. Gaussian, a flat power spectrum. ``"pink"``: the same white noise shaped
    in the frequency domain (``numpy.fft.rfft``) by ``1/sqrt(f)``, so its power spectrum falls as
    ``1/f`` (−1 slope in log-log, −3 dB per octave); the DC bin is set to 0.
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer number of samples >= 2, got {n!r}")
    x = np.random.default_rng(seed).standard_normal(int(n))
    if kind == "pink":
        f = np.fft.rfftfreq(int(n))
        shape = np.zeros_like(f)
        shape[1:] = 1.0 / np.sqrt(f[1:])
        x = np.fft.irfft(np.fft.rfft(x) * shape, n=int(n))
    x = x - x.mean()
    return (x / math.sqrt(power(x))).astype(np.float32)


# ------------------------------------------------------------------------------------ images

CORRUPTIONS = ("blur", "salt_pepper", "occlusion", "grayscale")

SEVERITY: dict[str, tuple[float, ...]] = {
    "blur": (0.0, 1.0, 2.0, 3.0, 4.0, 6.0),               # Gaussian sigma, pixels
    "salt_pepper": (0.0, 0.02, 0.05, 0.1, 0.2, 0.3),      # fraction of pixels set to 0 or 1
    "occlusion": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),          # square side / shorter image side
    "grayscale": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),          # weight of rgb_to_grayscale in the mix
}
"""Six levels per corruption; level 0 is the identity."""

OCCLUSION_GREY = 0.5


def _generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, image index) through numpy's SeedSequence (no collisions
    between e.g. (0, 1000) and (1, 0), as a linear ``seed * K + index`` would risk)."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def blur_kernel_size(sigma: float, height: int, width: int) -> int:
    """Odd kernel size ``2·ceil(2σ) + 1`` (about 4σ + 1), capped at ``2·min(H, W) − 1`` so that the
    reflect padding of ``gaussian_blur`` fits inside small images."""
    k = 2 * math.ceil(2 * sigma) + 1
    return min(k, 2 * min(height, width) - 1)


def _salt_pepper(img: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    """Set round(frac·H·W) pixels (all channels together) to 0 (first half) or 1 (second half)."""
    _, h, w = img.shape
    k = round(frac * h * w)
    idx = torch.randperm(h * w, generator=gen)[:k].to(img.device)
    value = torch.ones(k, dtype=img.dtype, device=img.device)
    value[: k // 2] = 0.0
    out = img.reshape(3, h * w).clone()
    out[:, idx] = value
    return out.reshape(img.shape)


def _occlusion(img: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    """One grey square of side round(frac·min(H, W)) (at least 1) at a random place fully inside."""
    _, h, w = img.shape
    side = max(1, round(frac * min(h, w)))
    top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
    out = img.clone()
    out[:, top:top + side, left:left + side] = OCCLUSION_GREY
    return out


def corrupt(images: torch.Tensor, kind: str, level: int, seed: int = 0, index: int = 0) -> torch.Tensor:
    """``images`` (``(3, H, W)`` or ``(B, 3, H, W)``, float in [0, 1]) corrupted at severity ``level``.

    ``kind`` is one of :data:`CORRUPTIONS`, ``level`` 0–5 indexes :data:`SEVERITY` (0 = unchanged).
    ``blur`` and ``grayscale`` are deterministic; ``salt_pepper`` and ``occlusion`` draw, for image
    ``i`` of the batch, from a generator seeded by ``(seed, index + i)``. So a batch gives the
    same result as corrupting each image alone with ``index=index + i``; pass the dataset index of
    the batch's first image as ``index`` and the corruption of an image does not depend on how the
    test set was batched. The result has the input's shape, dtype and device, clamped to [0, 1];
    the input is not modified.
    """
    if kind not in SEVERITY:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < len(SEVERITY[kind]):
        raise ValueError(f"level must be an integer in 0..{len(SEVERITY[kind]) - 1} "
                         f"(severities {SEVERITY[kind]} for {kind!r}), got {level!r}")
    for name, v in (("seed", seed), ("index", index)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ValueError("images must be a float torch tensor in [0, 1]; convert uint8 images with "
                         "torchvision.transforms.functional.to_dtype(x, torch.float32, scale=True)")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images must have shape (3, H, W) or (B, 3, H, W), got {tuple(images.shape)}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(f"images must lie in [0, 1], got values in [{float(images.min()):.3f}, "
                         f"{float(images.max()):.3f}]; corrupt before Normalize(mean, std)")
    value = SEVERITY[kind][level]
    if level == 0:
        return images.clone()
    batch = images if images.ndim == 4 else images.unsqueeze(0)
    if kind == "blur":
        k = blur_kernel_size(value, *batch.shape[-2:])
        out = TF.gaussian_blur(batch, kernel_size=[k, k], sigma=[value, value])
    elif kind == "grayscale":
        out = torch.lerp(batch, TF.rgb_to_grayscale(batch, num_output_channels=3), value)
    else:
        one = _salt_pepper if kind == "salt_pepper" else _occlusion
        out = torch.stack([one(img, value, _generator(int(seed), int(index) + i)) for i, img in enumerate(batch)])
    out = out.clamp(0.0, 1.0)
    return out if images.ndim == 4 else out[0]


# ------------------------------------------------------------------------------------ curves

def _curve(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite 1-D float64 array."""
    a = _np64(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per level), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, got {a.tolist()}; for SNR_LEVELS (which start at inf) "
                         f"pass the severity index range(len(SNR_LEVELS)) as levels")
    return a


def _levels_and(levels: Any, accuracies: Any, name: str = "accuracies") -> tuple[np.ndarray, np.ndarray]:
    x, y = _curve(levels, "levels"), _curve(accuracies, name)
    if len(x) != len(y):
        raise ValueError(f"levels and {name} must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"a curve needs at least 2 levels, got {len(x)}")
    if not (np.diff(x) > 0).all():
        raise ValueError(f"levels must be strictly increasing (mildest first), got {x.tolist()}; for "
                         f"SNR_LEVELS pass the severity index range(len(SNR_LEVELS))")
    return x, y


def relative_robustness(levels: Sequence[float], accuracies: Sequence[float]) -> float:
    """The normalised area under accuracy-versus-level (MultiBench's relative robustness).

    Trapezoid rule, ``Σ_i (l_{i+1} − l_i)·(a_i + a_{i+1})/2``, divided by the span ``l_last − l_0``,
    so a flat curve at accuracy a gives a and a linear fall from 1 to 0 gives 0.5. MultiBench uses
    ten equal steps of 0.1 over [0, 1], where the span is 1 and the two agree.
    """
    x, y = _levels_and(levels, accuracies)
    area = 0.0
    for i in range(len(x) - 1):
        area += (x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2
    return float(area / (x[-1] - x[0]))


def effective_robustness(levels: Sequence[float], acc_model: Sequence[float],
                         acc_reference: Sequence[float]) -> float:
    """How much better a model holds up than the reference would at the same clean accuracy.

    Our definition: scale the reference curve (e.g. late fusion's) by ``acc_model[0] /
    acc_reference[0]`` so that its clean accuracy (first point, level 0) equals the model's, then
    return ``relative_robustness(model) − relative_robustness(scaled reference)``. Positive: the
    model degrades more gracefully than the reference would; 0 for a model whose curve is the
    reference's scaled. (MultiBench's code instead shifts the late-fusion curve by the difference
    of clean accuracies and sums the gaps over its 11 levels; scaling keeps a scaled curve at 0
    and never pushes the expected accuracy below 0.)
    """
    x, model = _levels_and(levels, acc_model, "acc_model")
    _, ref = _levels_and(levels, acc_reference, "acc_reference")
    if ref[0] == 0:
        raise ValueError("the reference's clean accuracy (first point) is 0, so it cannot be scaled to "
                         "the model's; pick a reference model that works on clean data")
    return relative_robustness(x, model) - relative_robustness(x, ref * (model[0] / ref[0]))


def robustness_table(levels: Sequence[float], curves: Mapping[str, Sequence[float]],
                     reference: str) -> list[dict[str, Any]]:
    """One row per curve: ``name``, ``clean`` (accuracy at the first level), ``worst`` (accuracy at
    the last, most severe level), ``relative`` (:func:`relative_robustness`) and ``effective``
    (:func:`effective_robustness` against ``curves[reference]``; 0 for the reference itself)."""
    if reference not in curves:
        raise ValueError(f"reference {reference!r} is not one of the curves {list(curves)}")
    rows = []
    for name, acc in curves.items():
        x, y = _levels_and(levels, acc, f"curves[{name!r}]")
        rows.append({"name": name, "clean": float(y[0]), "worst": float(y[-1]),
                     "relative": relative_robustness(x, y),
                     "effective": 0.0 if name == reference else effective_robustness(x, y, curves[reference])})
    return rows
