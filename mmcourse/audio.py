"""Audio helpers (notebooks 03_audio_encoders and 10_audio_language)."""
from __future__ import annotations

import numpy as np
import torch
import torchaudio


def transcribe(model, processor, waveform: np.ndarray, sampling_rate: int, prompt: str | None = None,
               peak: float | None = None, max_new_tokens: int = 20) -> str:
    """Resample to 16 kHz (torchaudio.functional.resample), optionally peak-normalise to `peak`,
    run greedy decoding with optional prompt_ids (processor.get_prompt_ids(prompt, return_tensors='pt')),
    return the text without the prompt. Notebook 03/10 explain it.

    ``waveform`` is one mono clip (1-D). ``model`` is a ``WhisperForConditionalGeneration``.
    """
    wav = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {tuple(wav.shape)}")
    target = processor.feature_extractor.sampling_rate
    if sampling_rate != target:
        wav = torchaudio.functional.resample(wav, sampling_rate, target)
    if peak is not None and wav.abs().max() > 0:
        wav = wav * (peak / wav.abs().max())
    features = processor.feature_extractor(wav.numpy(), sampling_rate=target, return_tensors="pt").input_features
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1}
    if prompt:
        kwargs["prompt_ids"] = processor.get_prompt_ids(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        ids = model.generate(features.to(model.device, model.dtype), **kwargs)
    return processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
