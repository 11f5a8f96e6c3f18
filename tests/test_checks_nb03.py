"""Checks of notebook 03 (mmcourse.checks.nb03): the reference passes, typical mistakes get their hint."""
import numpy as np
import pytest
import torch

from mmcourse import audio, checks
from mmcourse.checks import nb03


def _run(check, fn, capsys):
    check(fn)
    return capsys.readouterr().out


def _stub(*args, **kwargs):
    raise NotImplementedError


CHECKS = [
    (nb03.check_pcm16_to_float, audio.pcm16_to_float),
    (nb03.check_stft_power, audio.stft_power),
    (nb03.check_hz_to_mel, audio.hz_to_mel),
    (nb03.check_mel_filterbank, audio.mel_filterbank),
    (nb03.check_log_mel, audio.log_mel_from_power),
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


# ---------------------------------------------------------------- 3.1 pcm16_to_float

@pytest.mark.parametrize("wrong, hint", [
    (lambda x: x.astype(np.float32), "missing scaling"),
    (lambda x: x / 32768.0, "wrong dtype"),  # float64
    (lambda x: (x / 32767.0).astype(np.float32), "not 32767"),
    (lambda x: (x / 65536.0).astype(np.float32), "signed"),
])
def test_pcm16_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb03.check_pcm16_to_float, wrong, capsys)
    assert "✗" in out and hint in out


# ---------------------------------------------------------------- 3.2 stft_power

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


# ---------------------------------------------------------------- 3.3 hz_to_mel

def test_hz_to_mel_accepts_the_natural_log_form_of_the_same_scale(monkeypatch, capsys):
    monkeypatch.setenv("MMCOURSE_STRICT_CHECKS", "1")
    out = _run(nb03.check_hz_to_mel, lambda f: 1127.0 * np.log(1 + f / 700), capsys)
    assert "✓" in out and "✗" not in out


@pytest.mark.parametrize("wrong, hint", [
    (lambda f: 2595 * np.log(1 + f / 700), "log10"),
    (lambda f: 2595 * np.log10(f / 700), "log of zero"),
    (lambda f: 2595 * np.log10(1 + f), "divide f by 700"),
    (lambda f: audio.mel_to_hz(f), "inverse"),
])
def test_hz_to_mel_mistakes(lenient, capsys, wrong, hint):
    with np.errstate(divide="ignore"):
        out = _run(nb03.check_hz_to_mel, wrong, capsys)
    assert "✗" in out and hint in out


# ---------------------------------------------------------------- 3.4 mel_filterbank

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


# ---------------------------------------------------------------- 3.5 log_mel

@pytest.mark.parametrize("wrong, hint", [
    (lambda p, fb, eps: torch.log(fb.T @ p), "log of zero"),
    (lambda p, fb, eps: torch.log(p.T @ fb + eps), "wrong axis"),
    (lambda p, fb, eps: torch.log(fb @ p + eps), "wrong axis"),
    (lambda p, fb, eps: torch.log10(fb.T @ p + eps), "natural log"),
    (lambda p, fb, eps: torch.log(fb.T @ p.sqrt() + eps), "square root"),
    (lambda p, fb, eps: fb.T @ p, "forgot the log"),
])
def test_log_mel_mistakes(lenient, capsys, wrong, hint):
    out = _run(nb03.check_log_mel, wrong, capsys)
    assert "✗" in out and hint in out
