"""Per-modality transforms for the dataset loaders.

Images (notebooks 02, 04, 08, 09): loaders return float tensors ``(C, H, W)`` in [0, 1];
:func:`normalize` / :func:`image_augment` are the usual next steps. Audio (notebooks 03, 10):
:func:`log_mel` is the feature the course uses everywhere (25 ms windows, 10 ms hop).
Text (notebooks 04, 08): :func:`clean_caption` normalises a caption before tokenising.
"""
from __future__ import annotations

import contextlib
import re

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def one_thread():
    """Run a block with torch on one intra-op thread, restoring the previous count afterwards.

    For explicit use around a whole job (a test, a benchmark), never per sample: the thread count
    is process-wide, so switching it inside a loader races with other threads and costs two
    calls per item. The loaders leave the caller's setting alone; DataLoader workers already
    run with one thread each (PyTorch sets it in every worker)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``(C, H, W)`` in [0, 255] → float32 in [0, 1]."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


def normalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Channel-wise ``(x - mean) / std``; a 1-channel image uses the mean of ``mean``/``std``."""
    c = image.shape[-3]
    m = torch.tensor(mean[:c] if c == len(mean) else [sum(mean) / len(mean)] * c, dtype=image.dtype)
    s = torch.tensor(std[:c] if c == len(std) else [sum(std) / len(std)] * c, dtype=image.dtype)
    return (image - m[:, None, None]) / s[:, None, None]


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float ``(C, H, W)`` image to ``size``×``size`` (antialiased when shrinking)."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=size < max(image.shape[-2:]))[0]


def image_augment(size: int, scale: tuple[float, float] = (0.7, 1.0), flip: bool = True):
    """Training augmentation for float image tensors: random resized crop (+ horizontal flip)."""
    from torchvision.transforms import v2

    steps = [v2.RandomResizedCrop(size, scale=scale, antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Repeat a grayscale ``(1, H, W)`` image to 3 channels (ImageNet backbones), or check it fits."""
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1:
        return image.expand(channels, *image.shape[1:]).contiguous()
    if channels == 1:
        return image.mean(0, keepdim=True)
    raise ValueError(f"cannot turn {image.shape[0]} channels into {channels}")


def log_mel(wave: torch.Tensor, sample_rate: int, n_mels: int = 64, win_ms: float = 25.0,
            hop_ms: float = 10.0, eps: float = 1e-6) -> torch.Tensor:
    """Waveform ``(T,)`` → natural-log mel power spectrogram ``(n_mels, frames)``: the loaders' feature.

    It is notebook 03's own :func:`mmcourse.audio.log_mel_spectrogram` (un-centred frames, a Hann
    window as long as the FFT, HTK mel filters up to Nyquist), with the FFT size the power of two
    that holds ``win_ms`` and a hop of ``hop_ms``: at 8 kHz n_fft = 256 (32 ms) and hop = 80 (10 ms),
    exactly notebook 03's defaults; at 16 kHz 512 and 160. A clip shorter than one window is
    zero-padded to one frame.
    """
    from mmcourse import audio

    n_fft = 1 << (int(round(sample_rate * win_ms / 1000)) - 1).bit_length()
    hop = int(round(sample_rate * hop_ms / 1000))
    wave = wave.float()
    if wave.shape[-1] < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.shape[-1]))
    with torch.no_grad():
        return audio.log_mel_spectrogram(wave, sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels, eps=eps)


def pad_or_trim(wave: torch.Tensor, length: int, pad_value: float = 0.0) -> torch.Tensor:
    """Pad with ``pad_value`` or cut the last dimension to exactly ``length`` (samples, or log-mel frames:
    notebook 03 pads those with the log of silence)."""
    n = wave.shape[-1]
    if n >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - n), value=pad_value)


def clean_caption(text: str) -> str:
    """Lower-case, drop punctuation other than apostrophes, collapse spaces (notebook 08)."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()
