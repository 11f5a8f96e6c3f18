"""Checks of notebook 03 (mmcourse.checks.nb03): the reference passes, typical mistakes get their hint."""
import numpy as np
import pytest
import torch
import torchaudio

from mmcourse import audio, checks
from mmcourse.checks import nb03


def _run(check, fn, capsys):
    check(fn)
    return capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError


CHECKS = [
    (nb03.check_stft_power, audio.stft_power),
    (nb03.check_mel_filterbank, audio.mel_filterbank),
    (nb03.check_pcm16_to_log_mel, audio.pcm16_to_log_mel),
]


@pytest.mark.parametrize("check, ref", CHECKS)
def test_reference_passes_in_strict_mode(monkeypatch, capsys, check, ref):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    out = _run(check, ref, capsys)
    assert "✓" in out and "✗" not in out


@pytest.mark.parametrize("check, _ref", CHECKS)
def test_stub_is_pending_not_failed(lenient, capsys, check, _ref):
    out = _run(check, _stub, capsys)
    assert "pending" in out and "✗" not in out


@pytest.mark.parametrize("check, _ref", CHECKS)
def test_stub_raises_in_strict_mode(monkeypatch, check, _ref):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    with pytest.raises(checks.CheckFailed):
        check(_stub)


# ---------------------------------------------------------------- 3.1 stft_power

def _frames(x, n_fft, hop):
    return x.unfold(0, n_fft, hop)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, n, h: audio.stft_power(x, n, h).T, "wrong axis"),
    (lambda x, n, h: audio.stft_power(torch.nn.functional.pad(x, (0, h)), n, h), "off-by-one"),
    (lambda x, n, h: audio.stft_power(x, n, h)[:, :-1], "off-by-one"),
    (lambda x, n, h: audio.stft_power(x, n, h).sqrt(), "magnitude"),
    (lambda x, n, h: (torch.fft.rfft(_frames(x, n, h), dim=-1).abs() ** 2).T, "Hann window"),
    (lambda x, n, h: (torch.fft.fft(_frames(x, n, h) * torch.hann_window(n, dtype=x.dtype), dim=-1).abs() ** 2).T,
     "n_fft // 2 + 1"),
])
def test_stft_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb03.check_stft_power, wrong, capsys)
    assert "✗" in out and hint in out


# ---------------------------------------------------------------- 3.2 mel_filterbank

def _fbank_hz_spaced(n_freqs, f_min, f_max, n_mels, sr):
    return nb03._fbank_from_points(torch.linspace(f_min, f_max, n_mels + 2, dtype=torch.float64), n_freqs, sr).float()


def _fbank_mel_not_converted(n_freqs, f_min, f_max, n_mels, sr):
    m = torch.linspace(float(audio.hz_to_mel(f_min)), float(audio.hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    return nb03._fbank_from_points(m, n_freqs, sr).float()


def _fbank_off_by_one(n_freqs, f_min, f_max, n_mels, sr):
    return audio.mel_filterbank(n_freqs, f_min, f_max, n_mels - 1, sr)


def _fbank_area_normalised(n_freqs, f_min, f_max, n_mels, sr):
    m = np.linspace(audio.hz_to_mel(f_min), audio.hz_to_mel(f_max), n_mels + 2)
    f = torch.as_tensor(audio.mel_to_hz(m))
    return (nb03._fbank_from_points(f, n_freqs, sr) * 2 / (f[2:] - f[:-2])).float()


@pytest.mark.parametrize("wrong, hint", [
    (lambda *a: audio.mel_filterbank(*a).T, "wrong axis"),
    (_fbank_hz_spaced, "Hz vs mel"),
    (_fbank_mel_not_converted, "convert them back to Hz"),
    (_fbank_off_by_one, "off-by-one"),
    (_fbank_area_normalised, "Slaney"),
])
def test_mel_filterbank_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb03.check_mel_filterbank, wrong, capsys)
    assert "✗" in out and hint in out


# ---------------------------------------------------------------- 3.3 the whole pipeline pcm16 → log-mel

def _pipe(scale=32768.0, window=True, power=2.0, log="ln", add=None, center=False, transpose=False):
    def fn(pcm, sr, n_fft, hop, n_mels, eps):
        x = torch.from_numpy(pcm.astype(np.float32) / np.float32(scale))
        if center:
            spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs() ** power
        else:
            frames = x.unfold(0, n_fft, hop)
            if window:
                frames = frames * torch.hann_window(n_fft, periodic=window != "symmetric")
            spec = torch.fft.rfft(frames, dim=-1).abs().T ** power
        mel = audio.mel_filterbank(n_fft // 2 + 1, 0.0, sr / 2, n_mels, sr).T @ spec + (eps if add is None else add)
        out = {"ln": torch.log, "log10": torch.log10, "db": lambda m: 10 * torch.log10(m), "none": lambda m: m}[log](mel)
        return out.T if transpose else out
    return fn


def test_pipeline_accepts_a_torchaudio_and_a_float64_composition(monkeypatch, capsys):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")

    def with_torchaudio(pcm, sr, n_fft, hop, n_mels, eps):
        mel = torchaudio.transforms.MelSpectrogram(sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=False)
        return torch.log(mel(torch.from_numpy(pcm / 32768.0).float()) + eps)

    def in_float64(pcm, sr, n_fft, hop, n_mels, eps):
        p = audio.stft_power(torch.from_numpy(pcm / 32768.0), n_fft, hop)
        return torch.log(audio.mel_filterbank(n_fft // 2 + 1, 0, sr / 2, n_mels, sr).double().T @ p + eps)

    for fn in (with_torchaudio, in_float64, _pipe()):
        out = _run(nb03.check_pcm16_to_log_mel, fn, capsys)
        assert "✓" in out and "✗" not in out, out


@pytest.mark.parametrize("wrong, hint", [
    (_pipe(scale=1.0), "missing PCM scaling"),
    (_pipe(scale=65536.0), "not 2**16"),
    (_pipe(window=False), "Hann window"),
    (_pipe(window="symmetric"), "periodic Hann"),
    (_pipe(power=1.0), "not the magnitude"),
    (_pipe(log="log10"), "natural log"),
    (_pipe(log="db"), "decibels"),
    (_pipe(log="none"), "forgot the log"),
    (_pipe(add=1.0), "not 1"),
    (_pipe(add=0.0), "log of zero"),
    (_pipe(center=True), "centred frames"),
    (_pipe(transpose=True), "wrong axis"),
])
def test_pipeline_mistakes(lenient, capsys, wrong, hint):
    with np.errstate(divide="ignore"):
        out = _run(nb03.check_pcm16_to_log_mel, wrong, capsys)
    assert "✗" in out and hint in out, out


# ---------------------------------------------------------------- quizzes

QUIZZES = [(nb03.check_quiz_3_1, 97, 101, "101"), (nb03.check_quiz_3_2, "a", "b", "product"),
           (nb03.check_quiz_3_3, 250, 1500, "stride 2")]


@pytest.mark.parametrize("check, right, wrong, explained", QUIZZES)
def test_quiz_right_passes_wrong_is_explained_unattempted_is_pending(quiz_behaviour, check, right, wrong, explained):
    quiz_behaviour(check, right, wrong, explained)
