"""Free Spoken Digit Dataset: 3,000 recordings of digits 0-9 by 6 speakers at 8 kHz (notebooks 03, 05, 10).

Layout read: ``<MMCOURSE_DATA_DIR>/fsdd/recordings/{digit}_{speaker}_{index}.{wav,flac}``. The
prepared copy in ``../shared/datasets`` holds lossless FLAC; ``data_scripts/fetch_fsdd.py``
keeps the upstream WAVs. Both load the same (a stem present in both formats is read once,
from the FLAC). Official split (upstream README): ``index`` 0-4 → ``test`` (300), 5-49 → ``train`` (2,700).

Samples: ``{"audio" (T,) float32 | "logmel" (n_mels, frames), "sample_rate", "label" (digit),
"speaker", "speaker_id", "path"}``; ``features="logmel"`` returns cached log-mel spectrograms.
Files at another sample rate are resampled, stereo is downmixed (one note each; see files.py).
Badly named, empty or unreadable files are skipped with a counted warning (``strict=True`` raises).
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np
import torch

from mmcourse.data import files, sources
from mmcourse.data import synthetic as synth
from mmcourse.data.errors import SkipLog, missing_path_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import log_mel

NAME = "fsdd"
FOLDERS = ("fsdd", "free-spoken-digit-dataset")
RECORDINGS = "recordings"
SPLITS = ("train", "test", "all")
FEATURES = ("waveform", "logmel")
SAMPLE_RATE = 8000
LICENCE = "CC BY-SA 4.0"
CITATION = ("Z. Jackson, C. Souza, J. Flaks, Y. Pan, H. Nicolas, A. Thite. Jakobovski/free-spoken-digit-dataset "
            "v1.0.8 (2018), Zenodo, doi:10.5281/zenodo.1342401.")
HOMEPAGE = "https://github.com/Jakobovski/free-spoken-digit-dataset"
FIX = "rename it to {digit}_{speaker}_{index}.wav or re-run `python -m mmcourse fetch data fsdd --force`"
_NAME = re.compile(r"^(?P<digit>\d+)_(?P<speaker>[A-Za-z][A-Za-z0-9-]*)_(?P<index>\d+)$")


def parse_name(stem: str) -> dict | None:
    """``{"label", "speaker", "index"}`` from a ``{digit}_{speaker}_{index}`` stem, else None."""
    m = _NAME.match(stem)
    return {"label": int(m["digit"]), "speaker": m["speaker"], "index": int(m["index"])} if m else None


def split_of(index: int) -> str:
    """Official split: recordings 0-4 of each speaker and digit are ``test``."""
    return "test" if index <= 4 else "train"


def scan_recordings(folder, skips: SkipLog) -> list[dict]:
    """All well-named, non-empty recordings in ``folder`` (flac preferred over wav for one stem)."""
    found = files.scan(folder, (".wav", ".flac"))
    by_stem: dict[str, str] = {}
    for name in sorted(found):
        stem, ext = os.path.splitext(name)
        if stem not in by_stem or ext.lower() == ".flac":
            by_stem[stem] = name
    rows = []
    for stem, name in sorted(by_stem.items()):
        meta = parse_name(stem)
        path = os.path.join(folder, name)
        if meta is None:
            skips.skip(path, "file name is not {digit}_{speaker}_{index}", FIX)
        elif not 0 <= meta["label"] <= 9:
            skips.skip(path, f"digit label {meta['label']} out of range 0-9", FIX)
        elif found[name] == 0:
            skips.skip(path, "empty audio file (0 bytes)", FIX)
        else:
            rows.append({**meta, "path": path, "split": split_of(meta["index"])})
    return rows


def load(split: str = "train", *, sample_rate: int = SAMPLE_RATE, features: str = "waveform", n_mels: int = 64,
         transform=None, cache: bool = True, strict: bool = False, fallback: str = "synthetic",
         root: str | os.PathLike | None = None) -> Records:
    """FSDD ``split`` (train / test / all) as a Dataset of dicts (notebooks 03, 05, 10)."""
    if split not in SPLITS:
        raise ValueError(f"FSDD split must be one of {SPLITS}, not {split!r}")
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, not {features!r}")
    sources.check_fallback(fallback)
    folder, why = sources.locate(FOLDERS, RECORDINGS, root)
    if folder is None:
        sources.missing_real_data(NAME, why, fallback, NAME)
        return synthetic(split, sample_rate=sample_rate, features=features, n_mels=n_mels,
                                       transform=transform, name=NAME, reason=why)
    rec = folder / RECORDINGS
    if not rec.is_dir():
        raise missing_path_error(rec, "recordings folder", "re-run `python -m mmcourse fetch data fsdd --force`")
    skips = SkipLog(f"{NAME} {split}", strict)
    rows = scan_recordings(rec, skips)
    skips.warn(len(rows) + len(skips))
    speakers = sorted({r["speaker"] for r in rows})
    for r in rows:
        r["speaker_id"] = speakers.index(r["speaker"])
    records = [r for r in rows if split == "all" or r["split"] == split]
    sizes = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    info = sources.Info(NAME, "real", split, LICENCE, CITATION, sizes, path=str(folder),
                        classes=[str(d) for d in range(10)], notes=[f"speakers: {', '.join(speakers)}"],
                        homepage=HOMEPAGE)
    sources.record(info)
    read = functools.partial(read_sample, sample_rate=sample_rate, features=features, n_mels=n_mels,
                             transform=transform, use_cache=cache)
    return Records(records, read, info, strict)


def read_sample(record: dict, sample_rate: int, features: str, n_mels: int, transform, use_cache: bool) -> dict:
    """One recording → sample dict with ``audio`` or ``logmel``."""
    out = {"sample_rate": sample_rate, "label": record["label"], "speaker": record["speaker"],
           "speaker_id": record["speaker_id"], "path": str(record["path"])}
    if features == "logmel":
        x = files.read_logmel(record["path"], sample_rate, n_mels, use_cache)
    else:
        x, _ = files.read_audio(record["path"], sample_rate, use_cache=use_cache)
    out["logmel" if features == "logmel" else "audio"] = transform(x) if transform is not None else x
    return out


def summary(root: str | os.PathLike | None = None) -> dict:
    """Status row for ``data.describe()``: real / synthetic fallback / missing, path, split sizes."""
    folder, why = sources.locate(FOLDERS, RECORDINGS, root)
    if folder is None:
        n_test = 10 * len(VOICES) * 5
        return {"status": "synthetic fallback", "path": str(sources.data_root(root) / FOLDERS[0]),
                "splits": {"train": 10 * len(VOICES) * DIGIT_INDICES - n_test, "test": n_test},
                "detail": why}
    skips = SkipLog(NAME)
    rows = scan_recordings(folder / RECORDINGS, skips)
    sizes = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    if not rows:
        return {"status": "missing", "path": str(folder), "splits": sizes, "detail": "no recordings found"}
    exts = sorted({os.path.splitext(str(r["path"]))[1] for r in rows})
    detail = f"{len(rows):,} recordings ({'/'.join(exts)})" + (f", {len(skips)} unusable files" if skips else "")
    return {"status": "real", "path": str(folder), "splits": sizes, "detail": detail}


# ======================================================================= synthetic stand-in

VOICES = ("voiceA", "voiceB", "voiceC", "voiceD", "voiceE", "voiceF")
_VOICE_F0 = (98.0, 112.0, 126.0, 145.0, 172.0, 205.0)
DIGIT_INDICES = 20  # recordings per (digit, voice): 0-4 test, 5-19 train


def digit_tone(digit: int, voice: int, index: int, sample_rate: int = 8000) -> np.ndarray:
    """A synthetic spoken-digit-like "word": 2-3 formant segments on a voiced pitch (float32)."""
    drng, vrng, irng = synth.rng(41, digit), synth.rng(42, voice), synth.rng(43, digit, voice, index)
    n_seg = 2 + digit % 2
    f1 = drng.uniform(280, 850, n_seg)
    f2 = drng.uniform(900, 2400, n_seg)
    scale = vrng.uniform(0.92, 1.08) * irng.uniform(0.97, 1.03)
    dur = drng.uniform(0.32, 0.55) * vrng.uniform(0.85, 1.15) * irng.uniform(0.9, 1.1)
    n = int(dur * sample_rate)
    t = np.arange(n) / sample_rate
    pos = np.linspace(0, n_seg - 1, n)
    F1 = np.interp(pos, np.arange(n_seg), f1) * scale
    F2 = np.interp(pos, np.arange(n_seg), f2) * scale
    f0 = _VOICE_F0[voice] * irng.uniform(0.95, 1.05) * (1 + 0.04 * np.sin(2 * np.pi * 5 * t)) * (1 - 0.1 * t / dur)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harm = np.arange(1, int(0.45 * sample_rate / _VOICE_F0[voice]))[:, None]
    freqs = harm * f0[None, :]
    amp = np.exp(-0.5 * ((freqs - F1) / 90) ** 2) + 0.6 * np.exp(-0.5 * ((freqs - F2) / 120) ** 2)
    amp *= freqs < 0.48 * sample_rate
    x = (amp * np.sin(harm * phase[None, :])).sum(0)
    env = np.minimum(1, t / 0.02) * np.minimum(1, (dur - t) / 0.05)
    x = x * env + irng.normal(0, 0.01, n)
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def synthetic(split: str = "train", *, sample_rate: int = 8000, features: str = "waveform", n_mels: int = 64,
                  transform=None, name: str = "fsdd", reason: str = "") -> Records:
    """Spoken-digit-like tones from 6 synthetic voices (FSDD stand-in; notebooks 03, 05, 10).

    1,200 clips: 10 digits × 6 voices × indices 0-19; index 0-4 is ``test`` (300), like FSDD.
    Same sample dicts as :func:`mmcourse.data.fsdd.load`.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, not {split!r}")
    rows = [{"label": d, "speaker": VOICES[v], "speaker_id": v, "index": i,
             "split": "test" if i <= 4 else "train", "path": f"synthetic/{d}_{VOICES[v]}_{i}.wav"}
            for d in range(10) for v in range(len(VOICES)) for i in range(DIGIT_INDICES)]
    records = [r for r in rows if split == "all" or r["split"] == split]
    sizes = {s: sum(r["split"] == s for r in rows) for s in ("train", "test")}
    info = sources.Info(name, "synthetic", split, synth.LICENCE, synth.CITATION, sizes,
                        classes=[str(d) for d in range(10)], notes=[f"voices: {', '.join(VOICES)}"])
    synth.announce(info, "formant-synthesised digit tones from 6 synthetic voices", reason, "fsdd")
    read = functools.partial(_read_digit, sample_rate=sample_rate, features=features, n_mels=n_mels,
                             transform=transform)
    return Records(records, read, info)


def _read_digit(record: dict, sample_rate: int, features: str, n_mels: int, transform) -> dict:
    wave = torch.from_numpy(digit_tone(record["label"], record["speaker_id"], record["index"], sample_rate))
    x = log_mel(wave, sample_rate, n_mels=n_mels) if features == "logmel" else wave
    out = {"sample_rate": sample_rate, "label": record["label"], "speaker": record["speaker"],
           "speaker_id": record["speaker_id"], "path": record["path"]}
    out["logmel" if features == "logmel" else "audio"] = transform(x) if transform is not None else x
    return out
