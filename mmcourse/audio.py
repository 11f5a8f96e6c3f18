"""Audio helpers (notebooks 03_audio_encoders and 10_audio_language)."""
from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio


def transcribe(model, processor, waveform: np.ndarray | Sequence[np.ndarray], sampling_rate: int,
               prompt: str | None = None, peak: float | None = None, max_new_tokens: int = 20,
               batch_size: int = 16) -> str | list[str]:
    """Whisper's own transcript of a clip, or of a list of clips (notebooks 03 and 10).

    Each clip (mono, 1-D) is resampled to 16 kHz (torchaudio.functional.resample), optionally
    peak-normalised to ``peak``, padded to 30 s by the feature extractor and decoded greedily,
    with ``prompt`` as Whisper's prompt (``processor.get_prompt_ids``) when given. Returns the
    text without the prompt: one string for one clip, a list for a list (decoded ``batch_size``
    clips at a time; the same texts as one by one).
    """
    single = not isinstance(waveform, (list, tuple))
    clips = [waveform] if single else list(waveform)
    target = processor.feature_extractor.sampling_rate
    waves = []
    for clip in clips:
        wav = torch.as_tensor(np.asarray(clip), dtype=torch.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono 1-D waveforms, got shape {tuple(wav.shape)}")
        if sampling_rate != target:
            wav = torchaudio.functional.resample(wav, sampling_rate, target)
        if peak is not None and wav.abs().max() > 0:
            wav = wav * (peak / wav.abs().max())
        waves.append(wav.numpy())
    # One generation config, no loose arguments: Whisper's config sets max_length (448), so passing
    # max_new_tokens beside it makes transformers warn on every call. Whisper's generate adds the
    # start and prompt tokens to max_length itself.
    config = copy.deepcopy(model.generation_config)
    config.update(max_length=max_new_tokens + 3, max_new_tokens=None, do_sample=False, num_beams=1)
    kwargs = {}
    if prompt:
        kwargs["prompt_ids"] = processor.get_prompt_ids(prompt, return_tensors="pt").to(model.device)
    texts: list[str] = []
    for start in range(0, len(waves), batch_size):
        inputs = processor.feature_extractor(waves[start:start + batch_size], sampling_rate=target,
                                             return_attention_mask=True, return_tensors="pt")
        with torch.no_grad(), _quiet_whisper_internals():  # the mask only silences a warning: all are 30 s
            ids = model.generate(inputs.input_features.to(model.device, model.dtype),
                                 attention_mask=inputs.attention_mask.to(model.device),
                                 generation_config=config, **kwargs)
        texts += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return texts[0] if single else texts


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


@contextlib.contextmanager
def _quiet_whisper_internals():
    """Drop one deprecation notice that Whisper's own ``generate`` triggers (it passes its suppress
    tokens beside the config, transformers 5.x); nothing a caller can change. Other messages stay."""
    log = logging.getLogger("transformers.generation.utils")
    drop = _DropMessage("Passing `generation_config` together with generation-related arguments")
    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


# ---------------------------------------------------------------- notebook 03: from waveform to log-mel

def pcm16_to_float(x: np.ndarray) -> np.ndarray:
    """16-bit PCM integers → float32 in [-1, 1): divide by 2**15 (notebook 03, §1 "Waveforms").

    The same convention as ``soundfile.read(path, dtype="float32")`` and torchaudio.
    """
    x = np.asarray(x)
    if x.dtype != np.int16:
        raise ValueError(f"expected int16 samples, got {x.dtype}")
    return x.astype(np.float32) / np.float32(32768.0)


def num_frames(n_samples: int, n_fft: int, hop: int) -> int:
    """Frames of an un-centred STFT: ``1 + (n_samples - n_fft) // hop`` (notebook 03, §2 "STFT")."""
    if n_samples < n_fft:
        raise ValueError(f"signal ({n_samples} samples) is shorter than one window ({n_fft})")
    return 1 + (n_samples - n_fft) // hop


def stft_power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Power spectrogram ``|STFT|²`` of a 1-D signal, shape ``(n_fft // 2 + 1, frames)`` (notebook 03, §2).

    Periodic Hann window of length ``n_fft``, no centring/padding (``torch.stft(..., center=False)``),
    frames ``1 + (T - n_fft) // hop``.
    """
    x = torch.as_tensor(x)
    frames = x.unfold(-1, n_fft, hop)  # (frames, n_fft)
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype)
    spec = torch.fft.rfft(frames * window, dim=-1)  # (frames, n_fft // 2 + 1)
    return (spec.abs() ** 2).transpose(-1, -2)


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``m = 2595 log10(1 + f / 700)`` (notebook 03, §3 "The mel scale")."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: ``f = 700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular mel filters, shape ``(n_freqs, n_mels)`` (notebook 03, §3 "Mel filterbank").

    ``n_mels + 2`` points equally spaced in mel between ``f_min`` and ``f_max`` give each filter
    its left edge, centre and right edge; filter ``m`` rises linearly from 0 at its left edge to 1
    at its centre and falls back to 0 at its right edge (frequencies of the STFT bins:
    ``linspace(0, sample_rate / 2, n_freqs)``). HTK scale, no area normalisation: equal to
    ``torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate)``.
    """
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # (n_freqs,)
    m_pts = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = torch.as_tensor(mel_to_hz(m_pts.numpy()))  # (n_mels + 2,)
    left, centre, right = f_pts[:-2], f_pts[1:-1], f_pts[2:]  # (n_mels,) each
    up = (freqs[:, None] - left) / (centre - left)  # (n_freqs, n_mels)
    down = (right - freqs[:, None]) / (right - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def log_mel_from_power(power: torch.Tensor, fbank: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``log(fbankᵀ · power + eps)``: power ``(n_freqs, frames)`` → log-mel ``(n_mels, frames)``

    Notebook 03, §3.

    ``eps`` keeps silent frames (power 0) finite: log(0) = -inf would poison every later sum.
    """
    return torch.log(fbank.T.to(power.dtype) @ power + eps)


def log_mel_spectrogram(wave: torch.Tensor, sample_rate: int, n_fft: int = 256, hop: int = 80, n_mels: int = 64,
                        f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Waveform ``(T,)`` → natural-log mel power spectrogram ``(n_mels, frames)`` (notebook 03, §3).

    :func:`stft_power` → :func:`mel_filterbank` → :func:`log_mel_from_power`; equal to
    ``log(torchaudio.transforms.MelSpectrogram(..., center=False, power=2) + eps)``.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    power = stft_power(torch.as_tensor(wave, dtype=torch.float32), n_fft, hop)
    fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)
    return log_mel_from_power(power, fb, eps)


def pcm16_to_log_mel(pcm: np.ndarray, sample_rate: int, n_fft: int = 256, hop: int = 80, n_mels: int = 64,
                     eps: float = 1e-6) -> torch.Tensor:
    """The whole front end of notebook 03 (exercise 3.3): int16 PCM ``(T,)`` → log-mel ``(n_mels, frames)``.

    :func:`pcm16_to_float` → :func:`stft_power` → :func:`mel_filterbank` (0 Hz to Nyquist) →
    :func:`log_mel_from_power`; the FSDD loader's cached log-mels (``features="logmel"``) are this
    transform with its defaults (64 mels, ``n_fft`` 256, hop 80, un-centred frames).
    """
    wave = torch.from_numpy(pcm16_to_float(pcm))
    return log_mel_spectrogram(wave, sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels, eps=eps)


class LogMelCNN(torch.nn.Module):
    """A small CNN over log-mel "images" ``(B, 1, n_mels, frames)`` → class logits (notebook 03, §4).

    Three conv blocks (conv 3×3 → batch norm → ReLU → 2×2 max-pool), then adaptive average pooling
    to a coarse ``grid`` (mel × time cells, so any clip length works while the order of events
    survives) and a linear classifier.
    """

    def __init__(self, n_classes: int = 10, width: int = 32, dropout: float = 0.2, grid: tuple[int, int] = (4, 4)):
        super().__init__()
        chans = [1, width // 2, width, 2 * width]
        blocks = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks += [torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), torch.nn.BatchNorm2d(c_out),
                       torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        self.features = torch.nn.Sequential(*blocks, torch.nn.AdaptiveAvgPool2d(grid))
        self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(dropout),
                                        torch.nn.Linear(chans[-1] * grid[0] * grid[1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, grid[0], grid[1])
        return self.head(h)  # (B, n_classes)


# ---------------------------------------------------------------- notebook 03: Whisper encoder features

WHISPER_SECONDS = 30
WHISPER_HOP = 160  # samples at 16 kHz = 10 ms per log-mel frame; the encoder's conv2 has stride 2 → 20 ms


def whisper_frames(n_samples: int, sample_rate: int = 16000) -> int:
    """Encoder frames (20 ms each, at most 1,500) that cover ``n_samples`` of real audio (notebook 03, §5).

    Log-mel frames are 10 ms apart (hop 160 at 16 kHz); the second convolution has stride 2, so
    one encoder frame spans 20 ms. A partly covered frame counts.
    """
    seconds = n_samples / sample_rate
    return int(min(WHISPER_SECONDS * 50, max(1, int(np.ceil(seconds * 50)))))


def _resample_16k(wave: np.ndarray | torch.Tensor, sample_rate: int, target: int) -> np.ndarray:
    w = torch.as_tensor(np.asarray(wave), dtype=torch.float32)
    if w.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {tuple(w.shape)}")
    if sample_rate != target:
        w = torchaudio.functional.resample(w, sample_rate, target)
    return w[: WHISPER_SECONDS * target].numpy()


@torch.no_grad()
def whisper_encode(model, processor, waves: list[np.ndarray | torch.Tensor], sample_rate: int,
                   pool: bool = True, trim: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Whisper encoder features of a batch of mono clips (notebook 03, §5; notebook 10, §Length).

    Each clip is resampled to 16 kHz. ``trim=False`` (Whisper as trained): the feature extractor
    pads it to 30 s and the encoder returns ``(1500, d)``; ``pool=True`` averages the frames that
    cover real audio only (:func:`whisper_frames`), shape ``(B, d)``, ``pool=False`` gives the full
    ``(B, 1500, d)``. ``trim=True`` runs the encoder on the real length only
    (:func:`whisper_frames_trimmed`): ``pool=True`` averages all its frames, ``(B, d)``;
    ``pool=False`` returns a list of ``(T_i, d)`` tensors, one per clip (lengths differ).
    """
    target = processor.feature_extractor.sampling_rate
    clips = [_resample_16k(w, sample_rate, target) for w in waves]
    if trim:
        frames = [whisper_frames_trimmed(model, processor, c, target) for c in clips]
        return torch.stack([f.mean(0) for f in frames]) if pool else frames
    feats = processor.feature_extractor(clips, sampling_rate=target, return_tensors="pt").input_features
    hidden = model.model.encoder(feats.to(model.device, model.dtype)).last_hidden_state.float().cpu()
    if not pool:
        return hidden
    n = torch.tensor([whisper_frames(len(c), target) for c in clips])
    mask = (torch.arange(hidden.shape[1])[None, :] < n[:, None]).float()  # (B, 1500)
    return (hidden * mask[..., None]).sum(1) / n[:, None]


# ---------------------------------------------------------------- notebook 10: the encoder on the real length

def encoder_forward(encoder: torch.nn.Module, input_features: torch.Tensor) -> torch.Tensor:
    """Whisper's encoder on any even number of log-mel frames up to 3,000 (notebook 10, §Length).

    ``input_features`` (B, 80, T_mel) -> (B, T_mel / 2, d). The same computation as
    ``WhisperEncoder.forward`` (two convolutions, sinusoidal positions, the transformer layers, a
    final LayerNorm), except that only the first ``T_mel / 2`` position embeddings are added
    instead of all 1,500 — the trick Ultravox uses. Transformers refuses anything but 3,000
    frames; at 3,000 frames this function equals it (a test checks). Eval mode only: no dropout.
    """
    t_mel = input_features.shape[-1]
    limit = encoder.embed_positions.num_embeddings * encoder.conv1.stride[0] * encoder.conv2.stride[0]
    if input_features.ndim != 3 or t_mel > limit or t_mel % 2 or t_mel < 2:
        raise ValueError(f"encoder_forward expects (B, n_mels, T_mel) with T_mel even and at most {limit}, got shape "
                         f"{tuple(input_features.shape)}; pad the waveform to a multiple of 320 samples (20 ms)")
    if encoder.training:
        raise ValueError("encoder_forward is for a frozen encoder in eval mode (it applies no dropout); call .eval()")
    x = F.gelu(encoder.conv1(input_features))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (B, T_mel / 2, d)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for layer in encoder.layers:
        x = layer(x, None)
    return encoder.layer_norm(x)


@torch.no_grad()
def whisper_frames_trimmed(model, processor, wave: np.ndarray, sample_rate: int = 16000) -> torch.Tensor:
    """Encoder frames ``(T, d)`` of one clip without the 30-s padding (notebook 10, §Length).

    The clip (16 kHz after resampling) is padded with zeros to a whole number of 20-ms frames,
    so ``T = ceil(seconds * 50)`` as in :func:`whisper_frames`; the log-mel frames are the feature
    extractor's own (``padding="longest"``), then :func:`encoder_forward`.
    """
    target = processor.feature_extractor.sampling_rate
    clip = _resample_16k(wave, sample_rate, target)
    step = 2 * WHISPER_HOP
    clip = np.pad(clip, (0, -len(clip) % step)) if len(clip) else np.zeros(step, np.float32)
    feats = processor.feature_extractor(clip, sampling_rate=target, padding="longest",
                                        return_tensors="pt").input_features  # (1, 80, len / 160)
    hidden = encoder_forward(model.model.encoder, feats.to(model.device, model.dtype))
    return hidden[0].float().cpu()
