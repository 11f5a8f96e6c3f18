"""Checks for notebook 03_audio_encoders (STFT, mel filterbank, the whole waveform → log-mel pipeline, quizzes)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mmcourse import audio, checks


def _stft_example() -> tuple[torch.Tensor, int, int]:
    t = torch.arange(1000, dtype=torch.float64) / 8000
    x = torch.sin(2 * torch.pi * 440 * t) + 0.3 * torch.sin(2 * torch.pi * 1500 * t) + 0.05 * torch.cos(t * 97)
    return x, 256, 80


def check_stft_power(fn: Callable) -> None:
    """Exercise 3.1: power spectrogram (n_fft // 2 + 1, frames), Hann window, no centring."""
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


def _fbank_args() -> tuple[int, float, float, int, int]:
    return 129, 0.0, 4000.0, 16, 8000


def _fbank_from_points(f_pts: torch.Tensor, n_freqs: int, sr: int) -> torch.Tensor:
    freqs = torch.linspace(0, sr // 2, n_freqs, dtype=torch.float64)
    left, centre, right = f_pts[:-2], f_pts[1:-1], f_pts[2:]
    up = (freqs[:, None] - left) / (centre - left)
    down = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def check_mel_filterbank(fn: Callable) -> None:
    """Exercise 3.2: triangular mel filters (n_freqs, n_mels), as torchaudio.functional.melscale_fbanks."""
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


def _pipeline_example() -> tuple[np.ndarray, int, int, int, int, float]:
    """A 0.25-s int16 clip at 8 kHz (two tones and a little noise) that starts with digital silence."""
    sr, n_fft, hop, n_mels, eps = 8000, 256, 80, 16, 1e-6
    t = np.arange(2000) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 1500 * t) + 0.02 * np.cos(t * 97 * 50)
    pcm = np.round(x * 32767).astype(np.int16)
    pcm[:400] = 0  # frames 0 and 1 are all zeros: log(0) = -inf unless eps is added
    return pcm, sr, n_fft, hop, n_mels, eps


def _pipeline_variant(pcm: np.ndarray, sr: int, n_fft: int, hop: int, n_mels: int, eps: float, *,
                      scale: float = 32768.0, window: bool | str = True, power: float = 2.0,
                      log: str = "ln", add: float | None = None) -> torch.Tensor:
    """The pipeline with one piece changed (a typical mistake), for the check's recognised mistakes."""
    x = torch.from_numpy(pcm.astype(np.float64) / scale)
    frames = x.unfold(0, n_fft, hop)
    if window:
        frames = frames * torch.hann_window(n_fft, periodic=window != "symmetric", dtype=x.dtype)
    spec = torch.fft.rfft(frames, dim=-1).abs().T ** power
    mel = audio.mel_filterbank(n_fft // 2 + 1, 0.0, sr / 2, n_mels, sr).double().T @ spec
    mel = mel + (eps if add is None else add)
    return {"ln": torch.log, "log10": torch.log10, "db": lambda m: 10 * torch.log10(m), "none": lambda m: m}[log](mel)


def check_pcm16_to_log_mel(fn: Callable) -> None:
    """Exercise 3.3: the whole front end, int16 PCM → float → |STFT|² → mel filterbank → ln(· + eps)."""
    name = "pcm16_to_log_mel"
    pcm, sr, n_fft, hop, n_mels, eps = _pipeline_example()
    found = checks.attempt(name, fn, pcm.copy(), sr, n_fft, hop, n_mels, eps, fallback="mmcourse.audio.pcm16_to_log_mel")
    if checks.is_pending(found):
        return
    if found is None:
        checks.failed(name, "a tensor", "None", "did you forget to `return` the result?")
        return
    want = audio.pcm16_to_log_mel(pcm, sr, n_fft, hop, n_mels, eps)  # (16, 22)
    got = torch.as_tensor(np.asarray(found.detach() if hasattr(found, "detach") else found)).double()
    n_mels_, n_frames = want.shape
    shape = tuple(got.shape)
    if shape == (n_frames, n_mels_):
        checks.failed(name, f"shape {(n_mels_, n_frames)} = (mel bands, frames)", f"shape {shape}",
                      "wrong axis: mel bands first, time second — fbank.T @ power with power (n_freqs, frames)")
        return
    if len(shape) == 2 and shape[0] == n_mels_ and shape[1] == 1 + len(pcm) // hop:
        checks.failed(name, f"{n_frames} frames", f"{shape[1]} frames",
                      "centred frames: torch.stft pads by n_fft // 2 on both sides unless center=False; "
                      f"this front end uses un-centred frames, 1 + (T - n_fft) // hop = {n_frames}")
        return
    if len(shape) == 2 and shape[0] == n_mels_ and shape[1] != n_frames:
        checks.failed(name, f"{n_frames} frames", f"{shape[1]} frames",
                      f"frame count: 1 + (T - n_fft) // hop = 1 + ({len(pcm)} - {n_fft}) // {hop} = {n_frames}")
        return
    if shape == tuple(want.shape) and not torch.isfinite(got).all():
        checks.failed(name, "finite values everywhere", "-inf in the silent first frames",
                      "log of zero: the clip starts with digital silence, whose mel power is 0; add eps before the log")
        return
    if shape == tuple(want.shape):  # a scaling mistake shifts every loud log-mel value by the same amount
        loud = want > float(want.min()) + 10
        shift = float((got - want.double())[loud].median())
        for offset, why in ((2 * np.log(32768.0), "missing PCM scaling: int16 samples go up to 32767; divide by "
                             f"2**15 = 32768 first (every loud log-mel value is then 2·ln 32768 = {2 * np.log(32768):.1f} "
                             "too large)"),
                            (-2 * np.log(2.0), "divide by 2**15 = 32768, not 2**16: int16 is signed, so the range "
                             "is ±2**15 (every loud value is 2·ln 2 too small)")):
            if abs(shift - offset) < 0.05:
                checks.failed(name, checks._short(want.numpy()), f"every loud value shifted by {shift:+.2f}", why)
                return
    args = (pcm, sr, n_fft, hop, n_mels, eps)
    mistakes = [
        (_pipeline_variant(*args, scale=1.0),
         "missing PCM scaling: int16 samples go up to 32767; divide by 2**15 = 32768 first (every log-mel value "
         f"is then 2·ln 32768 = {2 * np.log(32768):.1f} too large)"),
        (_pipeline_variant(*args, scale=65536.0),
         "divide by 2**15 = 32768, not 2**16: int16 is signed, so the range is ±2**15"),
        (_pipeline_variant(*args, window=False), "multiply every frame by the Hann window before the FFT"),
        (_pipeline_variant(*args, window="symmetric"),
         "use the periodic Hann window (torch.hann_window's default), as torch.stft does"),
        (_pipeline_variant(*args, power=1.0), "the mel filters sum the power |X|², not the magnitude |X|"),
        (_pipeline_variant(*args, log="log10"), "use the natural log (torch.log), not log10"),
        (_pipeline_variant(*args, log="db"), "that is decibels (10 log10); this front end uses the natural log"),
        (_pipeline_variant(*args, log="none"), "you forgot the log: the mel power spans many orders of magnitude"),
        (_pipeline_variant(*args, add=1.0), "add the tiny eps given as an argument, not 1: +1 flattens every quiet band"),
    ]
    # atol 1e-3: a float64 or torchaudio pipeline differs from the float32 reference by ~1e-4 in quiet bins
    checks.close(name, got, want.double(), atol=1e-3, rtol=1e-4, mistakes=mistakes,
                 hint="chain the pieces: pcm / 32768 → stft_power → mel_filterbank(n_fft // 2 + 1, 0, sr / 2, "
                      "n_mels, sr) → log(fbank.T @ power + eps)")


# ---------------------------------------------------------------- quizzes

def check_quiz_3_1(fn: Callable) -> None:
    """How many un-centred STFT frames does 1 s at 8 kHz have with n_fft 256 and hop 80?"""
    checks.quiz("quiz 3.1 (frames)", fn, correct=97, rel_tol=1e-3,
                explanation="1 + (T − N) // H = 1 + (8000 − 256) // 80 = 1 + 96 = 97 frames. "
                            "With center=True the signal is padded by N/2 on both sides: 1 + 8000 // 80 = 101.")


QUIZ_3_2 = {
    "a": "summing first gives the band's energy; the log of a sum stays finite and smooth, while a sum of "
         "log-powers multiplies the bins, so one near-empty bin drags the whole band towards −∞",
    "b": "it is only faster: both orders give the same numbers",
    "c": "torchaudio's MelSpectrogram cannot take log-power input",
}


def check_quiz_3_2(fn: Callable) -> None:
    """Why does the front end take the log after summing power in each mel band, not before?"""
    checks.quiz("quiz 3.2 (why log last)", fn, correct="a", choices=QUIZ_3_2,
                explanation="A mel band measures the energy in a frequency range: Σ_k H_kj P_k. Its log "
                            "compresses the dynamic range of that energy. Σ_k H_kj log P_k = log Π_k P_k^H_kj "
                            "is a (weighted) product instead: a single silent bin (P ≈ 0, log P ≈ −∞) "
                            "would swamp the band. The two orders give different numbers.")


def check_quiz_3_3(fn: Callable) -> None:
    """How many of Whisper's 1,500 encoder frames cover a 5-s clip?"""
    checks.quiz("quiz 3.3 (Whisper frames)", fn, correct=250, rel_tol=1e-3,
                explanation="10-ms log-mel hop → 500 log-mel frames in 5 s; conv2 has stride 2 → 250 encoder "
                            "frames of 20 ms each (of 1,500 for the 30-s window: the other 1,250 encode padding).")
