"""Checks for notebook 03_audio_encoders (waveform → STFT → mel filterbank → log-mel)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mmcourse import audio, checks


def _pcm_example() -> np.ndarray:
    return np.array([-32768, -16384, -1, 0, 1, 1000, 16384, 32767], dtype=np.int16)


def check_pcm16_to_float(fn: Callable) -> None:
    """Exercise 3.1: int16 PCM → float32 in [-1, 1)."""
    name = "pcm16_to_float"
    x = _pcm_example()
    found = checks.attempt(name, fn, x.copy(), fallback="mmcourse.audio.pcm16_to_float")
    if checks.is_pending(found):
        return
    want = audio.pcm16_to_float(x)
    x64 = x.astype(np.float64)
    mistakes = [
        (x64, "missing scaling: the integers go from -32768 to 32767; divide by 2**15 = 32768 to land in [-1, 1)"),
        (x64 / 32767.0,
         "divide by 32768 (= 2**15), not 32767: -32768 must map to exactly -1.0"),
        (x64 / 65536.0, "divide by 2**15 = 32768, not 2**16: int16 is signed, so the range is ±2**15"),
    ]
    if not checks.close(name, np.asarray(found, dtype=np.float64), want, atol=1e-9, rtol=1e-7, mistakes=mistakes):
        return
    dtype = getattr(found, "dtype", np.asarray(found).dtype)
    if str(dtype) not in ("float32", "torch.float32"):
        checks.failed(name + " (dtype)", "float32", str(dtype),
                      "wrong dtype: models and torchaudio expect float32; NumPy division gives float64 "
                      "unless you convert first (x.astype(np.float32) / 32768)")


def _stft_example() -> tuple[torch.Tensor, int, int]:
    t = torch.arange(1000, dtype=torch.float64) / 8000
    x = torch.sin(2 * torch.pi * 440 * t) + 0.3 * torch.sin(2 * torch.pi * 1500 * t) + 0.05 * torch.cos(t * 97)
    return x, 256, 80


def check_stft_power(fn: Callable) -> None:
    """Exercise 3.2: power spectrogram (n_fft // 2 + 1, frames), Hann window, no centring."""
    name = "stft_power"
    x, n_fft, hop = _stft_example()
    found = checks.attempt(name, fn, x.clone(), n_fft, hop, fallback="mmcourse.audio.stft_power")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the result?")
        return
    want = audio.stft_power(x, n_fft, hop)  # (129, 10)
    n_bins, n_frames = want.shape
    got = torch.as_tensor(np.asarray(found.detach() if hasattr(found, "detach") else found))
    shape = tuple(got.shape)
    if shape == (n_frames, n_bins):
        checks.failed(name, f"shape {(n_bins, n_frames)} = (frequency bins, frames)", f"shape {shape}",
                      "wrong axis: frequency must be the first axis and time the second — transpose the result")
        return
    if shape[:1] == (n_fft,) or shape[1:] == (n_fft,):
        checks.failed(name, f"shape {(n_bins, n_frames)}", f"shape {shape}",
                      "a real signal's spectrum is symmetric: keep n_fft // 2 + 1 bins (use torch.fft.rfft)")
        return
    if len(shape) == 2 and shape[0] == n_bins and shape[1] != n_frames:
        checks.failed(name, f"{n_frames} frames", f"{shape[1]} frames",
                      f"off-by-one in the frame count: without padding a signal of T samples has "
                      f"1 + (T - n_fft) // hop = 1 + ({len(x)} - {n_fft}) // {hop} = {n_frames} frames; "
                      "x.unfold(0, n_fft, hop) makes exactly these")
        return
    frames = x.unfold(0, n_fft, hop)
    no_window = (torch.fft.rfft(frames, dim=-1).abs() ** 2).T
    mistakes = [
        (want.sqrt(), "that is the magnitude |X|; the power spectrogram is its square |X|²"),
        (no_window, "multiply every frame by the Hann window before the FFT (torch.hann_window(n_fft))"),
        (want / n_fft, "do not normalise by n_fft: torch.stft (and torchaudio) return the unnormalised DFT"),
        ((torch.fft.rfft(frames * torch.hann_window(n_fft, periodic=False, dtype=x.dtype), dim=-1).abs() ** 2).T,
         "use the periodic Hann window (torch.hann_window's default), as torch.stft does"),
    ]
    checks.close(name, got, want, atol=1e-6, rtol=1e-6, mistakes=mistakes)


def check_hz_to_mel(fn: Callable) -> None:
    """Exercise 3.3: HTK mel scale m = 2595 log10(1 + f / 700)."""
    name = "hz_to_mel"
    f = np.array([0.0, 250.0, 700.0, 1000.0, 4000.0, 8000.0])
    found = checks.attempt(name, fn, f.copy(), fallback="mmcourse.audio.hz_to_mel")
    if checks.is_pending(found):
        return
    want = audio.hz_to_mel(f)
    with np.errstate(divide="ignore"):
        mistakes = [
            (2595 * np.log(1 + f / 700), "use log10, not the natural log (or 1127 · ln(1 + f/700), the same scale)"),
            (2595 * np.log10(f / 700), "it is log10(1 + f/700): without the 1 +, 0 Hz maps to -inf"),
            (2595 * np.log10(1 + f), "divide f by 700 Hz inside the log: 2595 log10(1 + f / 700)"),
            (audio.mel_to_hz(f), "that is the inverse (mel → Hz); this function maps Hz → mel"),
            (f, "you returned the frequencies unchanged: this function converts Hz to mel"),
        ]
    found_arr = np.asarray(found, dtype=np.float64)
    if found_arr.shape == want.shape and not np.all(np.isfinite(found_arr)):
        checks.failed(name, checks._short(want), checks._short(found_arr),
                      "log of zero: 0 Hz gave -inf. The formula is log10(1 + f / 700), which is 0 at 0 Hz")
        return
    # rtol 1e-4: 1127·ln(1 + f/700) is the same scale (2595/ln 10 = 1127.01) and must pass
    if checks.close(name, found_arr, want, atol=1e-4, rtol=1e-4, mistakes=mistakes):
        print(f"  1000 Hz → {float(want[3]):.1f} mel; 8000 Hz → {float(want[5]):.0f} mel "
              "(the scale is about linear below 1 kHz and logarithmic above)")


def _fbank_args() -> tuple[int, float, float, int, int]:
    return 129, 0.0, 4000.0, 16, 8000


def _fbank_from_points(f_pts: torch.Tensor, n_freqs: int, sr: int) -> torch.Tensor:
    freqs = torch.linspace(0, sr // 2, n_freqs, dtype=torch.float64)
    left, centre, right = f_pts[:-2], f_pts[1:-1], f_pts[2:]
    up = (freqs[:, None] - left) / (centre - left)
    down = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def check_mel_filterbank(fn: Callable) -> None:
    """Exercise 3.4: triangular mel filters (n_freqs, n_mels), as torchaudio.functional.melscale_fbanks."""
    name = "mel_filterbank"
    n_freqs, f_min, f_max, n_mels, sr = _fbank_args()
    found = checks.attempt(name, fn, n_freqs, f_min, f_max, n_mels, sr, fallback="mmcourse.audio.mel_filterbank")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the result?")
        return
    want = audio.mel_filterbank(n_freqs, f_min, f_max, n_mels, sr)
    got = torch.as_tensor(np.asarray(found.detach() if hasattr(found, "detach") else found))
    if tuple(got.shape) == (n_mels, n_freqs):
        checks.failed(name, f"shape {(n_freqs, n_mels)} = (frequency bins, mel bands)", f"shape {tuple(got.shape)}",
                      "wrong axis: torchaudio's convention is (n_freqs, n_mels), so that power.T @ fbank "
                      "(or fbank.T @ power) works — transpose your result")
        return
    if got.ndim == 2 and got.shape[0] == n_freqs and abs(got.shape[1] - n_mels) in (1, 2):
        checks.failed(name, f"{n_mels} filters", f"{got.shape[1]} filters",
                      "off-by-one: n_mels triangles need n_mels + 2 edge points (each filter uses its left "
                      "neighbour, its centre and its right neighbour)")
        return
    lin = torch.linspace(f_min, f_max, n_mels + 2, dtype=torch.float64)
    m_pts = torch.linspace(float(audio.hz_to_mel(f_min)), float(audio.hz_to_mel(f_max)), n_mels + 2,
                           dtype=torch.float64)
    f_pts = torch.as_tensor(audio.mel_to_hz(m_pts.numpy()))
    mistakes = [
        (_fbank_from_points(lin, n_freqs, sr),
         "Hz vs mel confusion: the edge points must be equally spaced in MEL (linspace between hz_to_mel(f_min) "
         "and hz_to_mel(f_max)), then converted back to Hz with mel_to_hz"),
        (_fbank_from_points(m_pts, n_freqs, sr),
         "Hz vs mel confusion: you spaced the points in mel but forgot to convert them back to Hz (mel_to_hz) "
         "before comparing them with the bin frequencies"),
        (_fbank_from_points(f_pts, n_freqs, sr) * 2 / (f_pts[2:] - f_pts[:-2]),
         "no area (Slaney) normalisation here: each triangle peaks at exactly 1, as torchaudio's default norm=None"),
    ]
    hint = ("each column is one triangle: 0 at its left edge f[j-1], 1 at its centre f[j], 0 at its right edge "
            "f[j+1]; compare a column with torchaudio.functional.melscale_fbanks(...)")
    if checks.close(name, got, want, atol=1e-5, rtol=1e-4, mistakes=mistakes, hint=hint):
        print(f"  every filter peaks at {float(want.max(0).values.min()):.2f}–{float(want.max(0).values.max()):.2f}; "
              f"widths grow from {int((want[:, 0] > 0).sum())} to {int((want[:, -1] > 0).sum())} FFT bins")


def _logmel_example() -> tuple[torch.Tensor, torch.Tensor]:
    x, n_fft, hop = _stft_example()
    power = audio.stft_power(x.float(), n_fft, hop)  # (129, 10)
    power[:, 0] = 0.0  # a silent frame
    fbank = audio.mel_filterbank(n_fft // 2 + 1, 0.0, 4000.0, 16, 8000)  # (129, 16)
    return power, fbank


def check_log_mel(fn: Callable) -> None:
    """Exercise 3.5: log(fbankᵀ · power + eps), shape (n_mels, frames), finite on silence."""
    name = "log_mel"
    power, fbank = _logmel_example()
    found = checks.attempt(name, fn, power.clone(), fbank.clone(), 1e-6, fallback="mmcourse.audio.log_mel_from_power",
                           shape_hint="wrong axis in the matrix product: power is (n_freqs, frames) and fbank "
                                      "is (n_freqs, n_mels); sum over n_freqs with fbank.T @ power")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the result?")
        return
    want = audio.log_mel_from_power(power, fbank, 1e-6)  # (16, 10)
    got = torch.as_tensor(np.asarray(found.detach() if hasattr(found, "detach") else found))
    if tuple(got.shape) == tuple(want.shape[::-1]):
        checks.failed(name, f"shape {tuple(want.shape)} = (n_mels, frames)", f"shape {tuple(got.shape)}",
                      "wrong axis: put the mel bands first and time second (fbank.T @ power, not power.T @ fbank)")
        return
    if tuple(got.shape) == tuple(want.shape) and not torch.isfinite(got).all():
        checks.failed(name, "finite values everywhere", "-inf in the silent first frame",
                      "log of zero: a silent frame has mel power 0 and log(0) = -inf; add eps before the log")
        return
    mel = fbank.T @ power
    mistakes = [
        (torch.log10(mel + 1e-6), "use the natural log (torch.log), not log10, to match torchaudio + log"),
        (10 * torch.log10(mel + 1e-6), "that is decibels (10 log10); this exercise uses the natural log"),
        (torch.log(fbank.T @ power.sqrt() + 1e-6), "the input already is the power |X|²: do not take its square root"),
        (mel, "you forgot the log: loudness is perceived roughly logarithmically"),
        (torch.log(mel + 1.0), "add the tiny eps given as an argument, not 1"),
    ]
    checks.close(name, got.float(), want, atol=1e-4, rtol=1e-4, mistakes=mistakes)
