"""On-disk cache (content-hash keys, atomic writes), collate/padding, transforms and DataLoader defaults."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest_data import need_real
from PIL import Image

from mmcourse import audio, data
from mmcourse.data import batching, cache, files, transforms


def write_jpeg(path, seed=0, size=(80, 60)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")


def entries(kind: str) -> list:
    return sorted((cache.root() / kind).rglob("*.npy")) if (cache.root() / kind).exists() else []


def test_image_cache_is_content_addressed(tmp_path, data_cache, monkeypatch):
    a = tmp_path / "a.jpg"
    write_jpeg(a)
    first = files.read_image(a, 32)
    assert first.shape == (3, 32, 32) and first.dtype == torch.uint8 and len(entries("image")) == 1
    real_decode = files.decode_image
    monkeypatch.setattr(files, "decode_image", lambda *a, **k: pytest.fail("warm read must not decode"))
    assert torch.equal(files.read_image(a, 32), first)
    copy = tmp_path / "renamed.jpg"
    copy.write_bytes(a.read_bytes())
    assert torch.equal(files.read_image(copy, 32), first), "same bytes elsewhere: a cache hit"
    monkeypatch.setattr(files, "decode_image", real_decode)
    write_jpeg(a, seed=1)  # changed content → new key, never a stale entry
    assert not torch.equal(files.read_image(a, 32), first) and len(entries("image")) == 2
    files.read_image(a, 48)  # other parameters → another entry
    assert len(entries("image")) == 3
    assert not [p for p in cache.root().rglob(".tmp-*")], "atomic writes leave no temporary files"


def test_cache_can_be_disabled(tmp_path, data_cache, monkeypatch):
    a = tmp_path / "a.jpg"
    write_jpeg(a)
    monkeypatch.setenv("MMCOURSE_DATA_CACHE", "0")
    files.read_image(a, 32)
    files.read_image(a, 32, use_cache=True)
    assert entries("image") == []


def test_corrupt_cache_entry_is_recomputed(tmp_path, data_cache):
    a = tmp_path / "a.jpg"
    write_jpeg(a)
    first = files.read_image(a, 16)
    (entry,) = entries("image")
    entry.write_bytes(b"garbage")
    assert torch.equal(files.read_image(a, 16), first)


def test_logmel_cache_matches_fresh_computation(tmp_path, data_cache):
    p = tmp_path / "0_x_1.flac"
    sf.write(p, np.random.default_rng(0).normal(0, 0.1, 4000).astype(np.float32), 8000, subtype="PCM_16")
    cold = files.read_logmel(p, 8000, n_mels=40)
    warm = files.read_logmel(p, 8000, n_mels=40)
    fresh = transforms.log_mel(files.read_audio(p, 8000, use_cache=False)[0], 8000, n_mels=40)
    assert torch.equal(cold, warm) and torch.allclose(cold, fresh) and len(entries("logmel")) == 1
    assert cold.shape == (40, 1 + (4000 - 256) // 80)  # un-centred frames of 256 samples, hop 80


def test_resampled_waveforms_are_cached(tmp_path, data_cache):
    p = tmp_path / "clip.wav"
    buf = io.BytesIO()
    sf.write(buf, np.zeros((4410, 2), np.float32), 44100, format="WAV")
    p.write_bytes(buf.getvalue())
    with pytest.warns(data.DataWarning):
        files._NOTES_SEEN.clear()
        wave, sr = files.read_audio(p, 16000)
    assert sr == 16000 and wave.shape == (1600,) and len(entries("wave")) == 1
    assert torch.equal(files.read_audio(p, 16000)[0], wave)


def test_second_epoch_uses_the_cache(real_data):
    need_real("flickr8k")
    ds = data.load("flickr8k", "test", image_size=96)
    first = [ds[i]["image"] for i in range(5)]
    n = len(entries("image"))
    again = [ds[i]["image"] for i in range(5)]
    assert n >= 5 and len(entries("image")) == n
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_log_mel_is_notebook_03s_transform_and_torchaudios_uncentred_one():
    import torchaudio

    wave = torch.randn(8000)
    ours = transforms.log_mel(wave, 16000, n_mels=64)
    assert torch.equal(ours, audio.log_mel_spectrogram(wave, 16000, n_fft=512, hop=160, n_mels=64))
    ref = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64, center=False)(wave)
    assert torch.allclose(ours, torch.log(ref + 1e-6), atol=1e-4)
    assert transforms.log_mel(torch.randn(100), 8000).shape == (64, 1)  # shorter than a window: one frame


def test_collate_pads_variable_length_audio_and_text():
    batch = [{"audio": torch.ones(3), "label": 1, "name": "a"}, {"audio": torch.ones(5), "label": 0, "name": "b"}]
    out = batching.collate(batch)
    assert out["audio"].shape == (2, 5) and out["audio_lengths"].tolist() == [3, 5]
    assert out["audio"][0, 3:].abs().sum() == 0 and out["label"].dtype == torch.long and out["name"] == ["a", "b"]
    mels = batching.collate([{"logmel": torch.zeros(40, 7)}, {"logmel": torch.zeros(40, 9)}])
    assert mels["logmel"].shape == (2, 40, 9) and mels["logmel_lengths"].tolist() == [7, 9]
    assert torch.allclose(mels["logmel"][0, :, 7:], torch.tensor(math.log(1e-6)))  # padded with silence
    mask = batching.padding_mask(torch.tensor([2, 4]))
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    fn = data.text_collate(lambda s: [len(w) for w in s.split()], key="caption", pad_id=-1)
    img = torch.zeros(3, 2, 2)
    tb = fn([{"caption": "a big dog", "image": img}, {"caption": "cat", "image": img}])
    assert tb["input_ids"].tolist() == [[1, 3, 3], [3, -1, -1]]
    assert tb["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert tb["image"].shape == (2, 3, 2, 2)
    with pytest.raises(ValueError, match="leading shapes"):
        batching.pad_sequence([torch.zeros(2, 3), torch.zeros(3, 3)])


def test_transforms():
    img = torch.full((1, 4, 4), 128, dtype=torch.uint8)
    f = transforms.to_float(img)
    assert f.dtype == torch.float32 and abs(float(f.max()) - 128 / 255) < 1e-6
    assert transforms.to_channels(f, 3).shape == (3, 4, 4)
    assert transforms.normalize(transforms.to_channels(f, 3)).shape == (3, 4, 4)
    assert transforms.resize(torch.rand(3, 64, 48), 16).shape == (3, 16, 16)
    assert transforms.pad_or_trim(torch.ones(5), 8).tolist() == [1] * 5 + [0] * 3
    assert transforms.clean_caption("A dog, running!  Fast.") == "a dog running fast"


@pytest.mark.slow  # importing torchvision.transforms.v2 takes ~10 s on a busy 2-core machine
def test_image_augment():
    aug = transforms.image_augment(24)
    assert aug(torch.rand(3, 32, 32)).shape == (3, 24, 24)


def test_dataloader_defaults(no_data):
    synth = data.load("fsdd", "test")
    loader = data.dataloader(synth, batch_size=8)
    assert loader.num_workers == 0  # generated in memory: workers would only add overhead
    batch = next(iter(loader))
    assert batch["audio"].shape[0] == 8 and "audio_lengths" in batch and batch["label"].shape == (8,)
    two = data.dataloader(synth, batch_size=4, num_workers=1)
    assert next(iter(two))["audio"].shape[0] == 4


def test_reading_samples_leaves_the_thread_count_alone(no_data, monkeypatch):
    """Loaders never switch torch's process-wide thread count per sample (the caller's setting stands)."""
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail(f"set_num_threads({n}) while reading"))
    for name, kw in (("fsdd", {"features": "logmel"}), ("chest_xray", {"image_size": 32}), ("breastmnist",
                                                                                            {"image_size": 40})):
        data.load(name, "test", **kw)[0]
    transforms.log_mel(torch.randn(4000), 8000)
    transforms.resize(torch.rand(3, 64, 48), 16)


def test_one_thread_is_an_explicit_context_manager():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with transforms.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
