"""mmcourse.audio (notebook 03): every from-scratch piece against torch / torchaudio."""
import numpy as np
import pytest
import torch
import torchaudio

from mmcourse import audio
from mmcourse.data import transforms


def test_pcm16_to_float_matches_soundfile_convention(tmp_path):
    import soundfile as sf
    pcm = np.array([-32768, -16384, 0, 1, 16384, 32767], dtype=np.int16)
    path = tmp_path / "x.wav"
    sf.write(path, pcm, 8000, subtype="PCM_16")
    ref, _ = sf.read(path, dtype="float32")
    ours = audio.pcm16_to_float(pcm)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)
    with pytest.raises(ValueError, match="int16"):
        audio.pcm16_to_float(pcm.astype(np.float32))


@pytest.mark.parametrize("n, n_fft, hop", [(1000, 256, 80), (8000, 200, 80), (513, 512, 1), (4000, 64, 64)])
def test_stft_power_equals_torch_stft(n, n_fft, hop):
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    ref = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=False,
                     return_complex=True).abs() ** 2
    ours = audio.stft_power(x, n_fft, hop)
    assert ours.shape == (n_fft // 2 + 1, audio.num_frames(n, n_fft, hop))
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=1e-9)


def test_num_frames_rejects_short_signal():
    with pytest.raises(ValueError):
        audio.num_frames(10, 16, 4)


def test_mel_scale_round_trip_and_anchor():
    f = np.array([0.0, 100.0, 700.0, 1000.0, 8000.0])
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(f)), f, atol=1e-9)
    assert abs(audio.hz_to_mel(1000.0) - 1000.0) < 0.1  # the mel scale's anchor: 1 kHz ≈ 1000 mel
    # torchaudio's filterbank centres (HTK) are equally spaced on this scale: see the filterbank test


@pytest.mark.parametrize("n_freqs, f_min, f_max, n_mels, sr", [
    (129, 0.0, 4000.0, 64, 8000), (201, 0.0, 8000.0, 80, 16000), (257, 50.0, 7000.0, 40, 16000)])
def test_mel_filterbank_equals_torchaudio(n_freqs, f_min, f_max, n_mels, sr):
    ours = audio.mel_filterbank(n_freqs, f_min, f_max, n_mels, sr)
    ref = torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, sr)
    assert ours.shape == ref.shape == (n_freqs, n_mels)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert (ours >= 0).all() and ours.max() <= 1.0 + 1e-6


def test_log_mel_spectrogram_equals_torchaudio_transform():
    wave = torch.randn(8000, generator=torch.Generator().manual_seed(0))
    ours = audio.log_mel_spectrogram(wave, 8000, n_fft=256, hop=80, n_mels=64)
    mel = torchaudio.transforms.MelSpectrogram(8000, n_fft=256, hop_length=80, n_mels=64, center=False, power=2.0)
    ref = torch.log(mel(wave) + 1e-6)
    assert ours.shape == ref.shape == (64, audio.num_frames(8000, 256, 80))
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=1e-4)


def test_log_mel_of_silence_is_finite():
    out = audio.log_mel_spectrogram(torch.zeros(2000), 8000)
    assert torch.isfinite(out).all() and torch.allclose(out, torch.full_like(out, np.log(1e-6)))


def test_pad_or_trim_pads_log_mels_with_a_value_and_crops():
    x = torch.ones(3, 5)
    assert transforms.pad_or_trim(x, 3).shape == (3, 3)
    padded = transforms.pad_or_trim(x, 8, pad_value=-1.0)
    assert padded.shape == (3, 8) and (padded[:, 5:] == -1).all()


def test_logmel_cnn_shapes_any_length():
    torch.manual_seed(0)
    model = audio.LogMelCNN(n_classes=10, width=16)
    for frames in (40, 100):
        assert model(torch.randn(2, 1, 64, frames)).shape == (2, 10)


@pytest.mark.parametrize("n, sr, frames", [(16000 * 30, 16000, 1500), (16000 * 5, 16000, 250), (8000, 8000, 50),
                                           (16000 * 40, 16000, 1500), (100, 16000, 1)])
def test_whisper_frames(n, sr, frames):
    assert audio.whisper_frames(n, sr) == frames


def test_pcm16_to_log_mel_is_the_loaders_transform_of_the_same_integers():
    from mmcourse.data.transforms import log_mel

    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(4000) * 3000).astype(np.int16)
    pcm[:500] = 0  # digital silence stays finite
    ours = audio.pcm16_to_log_mel(pcm, 8000)
    assert ours.shape == (64, audio.num_frames(4000, 256, 80)) and torch.isfinite(ours).all()
    loader = log_mel(torch.from_numpy(audio.pcm16_to_float(pcm)), 8000)
    assert torch.allclose(ours, loader, atol=1e-5)


# ---------------------------------------------------------------- notebook 10: the encoder on the real length

@pytest.fixture(scope="module")
def whisper(models_ready):
    from mmcourse import pretrained
    return pretrained.load("audio")


@pytest.mark.models
def test_encoder_forward_equals_transformers_at_30_s_and_refuses_odd_lengths(whisper):
    model, processor = whisper
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    feats = processor.feature_extractor(wave, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = model.model.encoder(feats).last_hidden_state
        mine = audio.encoder_forward(model.model.encoder, feats)
    assert mine.shape == (1, 1500, 384)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="T_mel even"):
        audio.encoder_forward(model.model.encoder, feats[..., :101])
    with pytest.raises(ValueError, match="at most 3000"):
        audio.encoder_forward(model.model.encoder, torch.cat([feats, feats[..., :2]], -1))


@pytest.mark.models
def test_trimmed_frames_cover_the_real_length_and_differ_from_padded_ones(whisper):
    """Short clips: ceil(seconds * 50) frames; the features are close to, not equal to, the padded ones."""
    model, processor = whisper
    t = np.arange(int(0.43 * 8000)) / 8000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * np.hanning(len(t))).astype(np.float32)
    trimmed = audio.whisper_frames_trimmed(model, processor, wave, 8000)
    assert trimmed.shape == (audio.whisper_frames(len(wave), 8000), 384) == (22, 384)
    padded = audio.whisper_encode(model, processor, [wave], 8000, pool=False)[0, :22]
    cos = torch.nn.functional.cosine_similarity(trimmed, padded, dim=-1)
    assert 0.3 < float(cos.mean()) < 0.999  # attention over 22 positions instead of 1,500 changes them
    pooled = audio.whisper_encode(model, processor, [wave, wave[:2000]], 8000, trim=True)
    assert pooled.shape == (2, 384)
    torch.testing.assert_close(pooled[0], trimmed.mean(0))
    frames = audio.whisper_encode(model, processor, [wave, wave[:2000]], 8000, pool=False, trim=True)
    assert [f.shape[0] for f in frames] == [22, 13]


@pytest.mark.models
def test_transcribe_a_list_equals_one_by_one_with_and_without_prompt(whisper, shared_data):
    import soundfile as sf
    model, processor = whisper
    if shared_data is None:
        pytest.fail("needs MMCOURSE_DATA_DIR with FSDD (CI has it)")
    clips = [sf.read(shared_data / "fsdd" / "recordings" / f"{d}_jackson_0.flac", dtype="float32")[0] for d in (3, 7, 8)]
    prompt = " zero, one, two, three, four, five, six, seven, eight, nine."
    for p in (None, prompt):
        batch = audio.transcribe(model, processor, clips, 8000, prompt=p, batch_size=2)
        assert batch == [audio.transcribe(model, processor, c, 8000, prompt=p) for c in clips]
        assert all(isinstance(t, str) for t in batch)
    assert any(w in " ".join(batch).lower() for w in ("seven", "7"))
