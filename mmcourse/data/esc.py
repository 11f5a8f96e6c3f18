"""ESC-50 and its CC-BY subset ESC-10: 5-second environmental sound clips in 5 folds (notebooks 03, 10).

Layouts read (under ``<MMCOURSE_DATA_DIR>``):

- ``esc10/meta/esc10.csv`` + ``esc10/audio/*.flac``: the prepared ESC-10 (16 kHz mono FLAC),
  as in ``../shared/datasets/esc10`` and as written by ``data_scripts/fetch_esc50.py``;
- ``esc50/meta/esc50.csv`` + ``esc50/audio/*.wav``: upstream ESC-50 (44.1 kHz WAV). ESC-10 is
  taken from it (rows with ``esc10 == True``) when there is no ``esc10/`` folder.

CSV columns: ``filename, fold, target, category`` (+ ``esc10, src_file, take``). A file listed
as ``.wav`` is also found as ``.flac`` and vice versa. Evaluation is fold-based: ``split="test"``
is fold ``test_fold``, ``split="train"`` the other four (``"all"``: every fold); report the mean
over ``test_fold`` = 1..5 (5-fold cross-validation, as in Piczak 2015).

Samples: ``{"audio" (T,) | "logmel" (n_mels, frames), "sample_rate", "label", "target",
"category", "fold", "path"}``. ``label`` is 0..9 for ESC-10 (sorted ESC-50 targets) and the
ESC-50 ``target`` for ESC-50. Audio is resampled to ``sample_rate`` (default 16 kHz) with a note.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from mmcourse.data import files, sources
from mmcourse.data import synthetic as synth
from mmcourse.data.errors import SkipLog, data_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import log_mel

VARIANTS = ("esc10", "esc50")
SPLITS = ("train", "test", "all")
FOLDS = (1, 2, 3, 4, 5)
FEATURES = ("waveform", "logmel")
COLUMNS = ["filename", "fold", "target", "category"]
CATEGORIES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind", "pouring_water",
    "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing", "brushing_teeth",
    "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening", "washing_machine",
    "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells", "airplane", "fireworks",
    "hand_saw",
]
ESC10_TARGETS = (0, 1, 10, 11, 12, 20, 21, 38, 40, 41)
LICENCES = {"esc10": "CC BY 3.0 (per-clip attribution in ESC-10_README_upstream.txt / ESC-50 meta)",
            "esc50": "CC BY-NC 3.0 (ESC-10 subset: CC BY 3.0)"}
CITATION = ("K. J. Piczak. ESC: Dataset for Environmental Sound Classification. ACM Multimedia 2015, "
            "doi:10.1145/2733373.2806390; data doi:10.7910/DVN/YDEPUT.")
HOMEPAGE = "https://github.com/karolpiczak/ESC-50"
FIX = "re-run `python -m mmcourse fetch data esc50 --force`"
# The upstream commit the course pins (``make data`` fetches GitHub's archive of it, whose top folder is
# ``ESC-50-<commit>/``). It is the newest commit on master as far as we know; it could not be checked
# against GitHub from here, but several independent public projects pin this same commit for the
# archive (645,832,161 bytes). The archive has no published checksum: its sha256 is recorded on first use.
ESC50_COMMIT = "33c8ce9eb2cf0b1c2f8bcf322eb349b6be34dbb6"
ESC50_FOLDERS = ("esc50", "ESC-50", f"ESC-50-{ESC50_COMMIT}", "ESC-50-master")


def classes(variant: str) -> list[str]:
    """Category names in label order for ``variant``."""
    return [CATEGORIES[t] for t in ESC10_TARGETS] if variant == "esc10" else list(CATEGORIES)


def find(variant: str, root: str | os.PathLike | None) -> tuple[Path | None, Path | None, str]:
    """``(folder, csv_path, why_not)``: where the variant's metadata lives."""
    if variant == "esc10":
        folder, why = sources.locate(("esc10", "ESC-10"), "meta/esc10.csv", root)
        if folder is not None:
            return folder, folder / "meta" / "esc10.csv", ""
    folder, why50 = sources.locate(ESC50_FOLDERS, "meta/esc50.csv", root)
    if folder is not None:
        return folder, folder / "meta" / "esc50.csv", ""
    return None, None, why if variant == "esc10" else why50


def read_meta(csv_path: Path, variant: str, skips: SkipLog) -> list[dict]:
    """Validated rows of the metadata CSV (ESC-10 rows only for ``variant="esc10"``)."""
    rows = []
    audio = csv_path.parent.parent / "audio"
    sizes = files.scan(audio, (".wav", ".flac", ".ogg"))
    if not sizes and not audio.is_dir():
        raise data_error(audio, "audio folder missing", FIX)
    for lineno, row in enumerate(files.read_csv(csv_path, COLUMNS, "ESC metadata file", FIX), 2):
        where = f"{csv_path}:{lineno}"
        try:
            fold, target = int(row["fold"]), int(row["target"])
        except ValueError:
            skips.skip(where, f"fold {row['fold']!r} / target {row['target']!r} are not integers", FIX)
            continue
        if fold not in FOLDS:
            skips.skip(where, f"fold {fold} out of range 1-5", FIX)
            continue
        if not 0 <= target < len(CATEGORIES):
            skips.skip(where, f"target {target} out of range 0-49", FIX)
            continue
        in_esc10 = target in ESC10_TARGETS and row.get("esc10", "True") in ("True", "true", "1")
        if variant == "esc10" and not in_esc10:
            continue
        name = row["filename"]
        stem = os.path.splitext(name)[0]
        present = [n for n in (name, stem + ".flac", stem + ".wav", stem + ".ogg") if n in sizes]
        if not present:
            skips.skip(audio / name, "audio file listed in the metadata is missing", FIX)
        elif sizes[present[0]] == 0:
            skips.skip(audio / present[0], "empty audio file (0 bytes)", FIX)
        else:
            label = ESC10_TARGETS.index(target) if variant == "esc10" else target
            rows.append({"path": audio / present[0], "fold": fold, "target": target, "label": label,
                         "category": row["category"] or CATEGORIES[target]})
    return rows


def load(variant: str = "esc10", split: str = "train", *, test_fold: int = 1, sample_rate: int = 16000,
         features: str = "waveform", n_mels: int = 64, transform=None, cache: bool = True, strict: bool = False,
         fallback: str = "synthetic", root: str | os.PathLike | None = None) -> Records:
    """ESC-10 / ESC-50 ``split`` for fold ``test_fold`` as a Dataset of dicts (notebooks 03, 10)."""
    if variant not in VARIANTS:
        raise ValueError(f"ESC variant must be one of {VARIANTS}, not {variant!r}")
    if split not in SPLITS:
        raise ValueError(f"ESC split must be one of {SPLITS}, not {split!r}")
    if test_fold not in FOLDS:
        raise ValueError(f"test_fold must be one of {FOLDS}, not {test_fold!r}")
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, not {features!r}")
    sources.check_fallback(fallback)
    folder, csv_path, why = find(variant, root)
    if folder is None:
        sources.missing_real_data(variant, why, fallback, "esc50")
        return synthetic(variant, split, test_fold=test_fold, sample_rate=sample_rate, features=features,
                                n_mels=n_mels, transform=transform, reason=why)
    skips = SkipLog(f"{variant} {split}", strict)
    rows = read_meta(csv_path, variant, skips)
    skips.warn(len(rows) + len(skips))
    if split == "all":
        records = rows
    else:
        records = [r for r in rows if (r["fold"] == test_fold) == (split == "test")]
    sizes = {f"fold{f}": sum(r["fold"] == f for r in rows) for f in FOLDS}
    sizes.update(train=sum(r["fold"] != test_fold for r in rows), test=sizes[f"fold{test_fold}"], all=len(rows))
    info = sources.Info(variant, "real", split, LICENCES[variant], CITATION, sizes, path=str(folder),
                        classes=classes(variant), notes=[f"test fold {test_fold}; metadata {csv_path.name}"],
                        homepage=HOMEPAGE)
    sources.record(info)
    read = functools.partial(read_sample, sample_rate=sample_rate, features=features, n_mels=n_mels,
                             transform=transform, use_cache=cache)
    return Records(records, read, info, strict)


def read_sample(record: dict, sample_rate: int, features: str, n_mels: int, transform, use_cache: bool) -> dict:
    """One clip → sample dict with ``audio`` or ``logmel``."""
    out = {"sample_rate": sample_rate, "label": record["label"], "target": record["target"],
           "category": record["category"], "fold": record["fold"], "path": str(record["path"])}
    if features == "logmel":
        x = files.read_logmel(record["path"], sample_rate, n_mels, use_cache)
    else:
        x, _ = files.read_audio(record["path"], sample_rate, use_cache=use_cache)
    out["logmel" if features == "logmel" else "audio"] = transform(x) if transform is not None else x
    return out


def summary(variant: str = "esc10", root: str | os.PathLike | None = None) -> dict:
    """Status row for ``data.describe()``: real / synthetic fallback / missing, path, split sizes."""
    folder, csv_path, why = find(variant, root)
    if folder is None:
        per = SOUNDS_PER_FOLD[variant] * len(classes(variant))
        where = sources.data_root(root) / ("esc10" if variant == "esc10" else "esc50")
        return {"status": "synthetic fallback", "path": str(where),
                "splits": {**{f"fold{f}": per for f in FOLDS}, "all": 5 * per}, "detail": why}
    skips = SkipLog(variant)
    rows = read_meta(csv_path, variant, skips)
    sizes = {**{f"fold{f}": sum(r["fold"] == f for r in rows) for f in FOLDS}, "all": len(rows)}
    if not rows:
        return {"status": "missing", "path": str(folder), "splits": sizes, "detail": f"no usable rows in {csv_path}"}
    folds = "/".join(str(sizes[f"fold{f}"]) for f in FOLDS)
    detail = f"{csv_path.name}, folds {folds}" + (f", {len(skips)} unusable rows" if skips else "")
    return {"status": "real", "path": str(folder), "splits": sizes, "detail": detail}


# ======================================================================= synthetic stand-in

_ESC10_KIND = {0: 0, 1: 1, 10: 2, 11: 3, 12: 4, 20: 5, 21: 6, 38: 7, 40: 8, 41: 9}
SOUNDS_PER_FOLD = {"esc10": 4, "esc50": 2}


def sound_clip(target: int, clip: int, sample_rate: int = 16000, seconds: float = 5.0) -> np.ndarray:
    """A 5-s procedural sound of class ``target`` (barks, sweeps, hiss, waves, crackle, ...)."""
    kind = _ESC10_KIND.get(target, target % 10)
    crng, rng = synth.rng(51, target), synth.rng(52, target, clip)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    fs = crng.uniform(0.7, 1.4)  # class-level frequency scale (separates ESC-50 classes of one kind)
    x = np.zeros(n)
    noise = rng.normal(0, 1, n)

    def burst(start: float, length: float) -> np.ndarray:
        return np.exp(-0.5 * ((t - start - length / 2) / (length / 4)) ** 2)

    if kind == 0:  # barks: short harmonic bursts
        for s in rng.uniform(0, seconds - 0.3, int(rng.integers(3, 7))):
            f0 = 500 * fs * rng.uniform(0.9, 1.1)
            x += burst(s, 0.18) * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in (1, 2, 3))
    elif kind == 1:  # crowing: rising-falling harmonic sweep
        for s in rng.uniform(0, seconds - 1.5, int(rng.integers(1, 3))):
            f = 600 * fs * (1 + 0.5 * np.sin(np.pi * np.clip((t - s) / 1.3, 0, 1)))
            x += burst(s, 1.3) * np.sin(2 * np.pi * np.cumsum(f) / sample_rate)
    elif kind == 2:  # steady hiss (rain)
        x = np.diff(noise, prepend=0) * 0.5 * (1 + 0.1 * rng.random())
    elif kind == 3:  # waves: low noise with slow swell
        low = np.convolve(noise, np.ones(40) / 40, mode="same")
        x = low * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.12, 0.25) * fs * t + rng.uniform(0, 6)))
    elif kind == 4:  # crackle: sparse decaying clicks
        x = 0.05 * noise
        for s in rng.uniform(0, seconds, int(rng.integers(60, 160) * fs)):
            i = int(s * sample_rate)
            m = min(n - i, 200)
            x[i:i + m] += rng.uniform(0.5, 1) * np.exp(-np.arange(m) / 25) * rng.choice([-1, 1])
    elif kind == 5:  # crying: vibrato harmonic tone in bursts
        f = 420 * fs * (1 + 0.06 * np.sin(2 * np.pi * 5.5 * t))
        ph = 2 * np.pi * np.cumsum(f) / sample_rate
        env = sum(burst(s, 1.0) for s in np.arange(rng.uniform(0, 0.5), seconds - 0.8, 1.3))
        x = env * (np.sin(ph) + 0.5 * np.sin(2 * ph) + 0.3 * np.sin(3 * ph))
    elif kind == 6:  # sneeze: quiet rising inhale then a sharp noise burst
        s = rng.uniform(1, seconds - 1)
        inhale = 0.2 * noise * np.clip((t - s + 0.8) / 0.8, 0, 1) * (t < s)
        x = inhale + noise * np.exp(-np.clip(t - s, 0, None) / 0.08) * (t >= s)
    elif kind == 7:  # ticks: periodic clicks
        period = 0.5 / fs
        for s in np.arange(rng.uniform(0, period), seconds, period):
            i = int(s * sample_rate)
            m = min(n - i, 120)
            x[i:i + m] += np.sin(2 * np.pi * 3000 * np.arange(m) / sample_rate) * np.exp(-np.arange(m) / 20)
    elif kind == 8:  # rotor: noise amplitude-modulated at ~20 Hz
        x = noise * (0.5 + 0.5 * np.sin(2 * np.pi * 18 * fs * t)) ** 2
    else:  # buzz: sawtooth engine with noise
        f0 = 110 * fs * rng.uniform(0.9, 1.1)
        x = 2 * ((t * f0) % 1) - 1 + 0.3 * noise
        x *= np.clip(np.sin(np.pi * t / seconds) * 3, 0, 1)
    x = x + 0.01 * noise
    return (0.6 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def synthetic(variant: str = "esc10", split: str = "train", *, test_fold: int = 1, sample_rate: int = 16000,
           features: str = "waveform", n_mels: int = 64, transform=None, reason: str = "") -> Records:
    """Procedural 5-s sound classes in 5 folds (ESC-10 / ESC-50 stand-in; notebooks 03, 10).

    ESC-10: 10 classes × 4 clips × 5 folds = 200; ESC-50: 50 × 2 × 5 = 500. Same sample dicts
    and fold logic as :func:`mmcourse.data.esc.load`.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, not {split!r}")
    targets = ESC10_TARGETS if variant == "esc10" else range(len(CATEGORIES))
    per = SOUNDS_PER_FOLD[variant]
    rows = [{"target": tg, "label": (ESC10_TARGETS.index(tg) if variant == "esc10" else tg),
             "category": CATEGORIES[tg], "fold": f, "clip": (f - 1) * per + j,
             "path": f"synthetic/{f}-{tg:02d}{j:02d}-A-{tg}.wav"}
            for f in range(1, 6) for tg in targets for j in range(per)]
    records = [r for r in rows if split == "all" or (r["fold"] == test_fold) == (split == "test")]
    sizes = {f"fold{f}": sum(r["fold"] == f for r in rows) for f in range(1, 6)}
    sizes.update(train=len(rows) - sizes[f"fold{test_fold}"], test=sizes[f"fold{test_fold}"], all=len(rows))
    info = sources.Info(variant, "synthetic", split, synth.LICENCE, synth.CITATION, sizes, classes=classes(variant))
    synth.announce(info, "procedural 5-s sound classes (barks, sweeps, hiss, waves, clicks, ...)", reason, "esc50")
    read = functools.partial(_read_sound, sample_rate=sample_rate, features=features, n_mels=n_mels,
                             transform=transform)
    return Records(records, read, info)


def _read_sound(record: dict, sample_rate: int, features: str, n_mels: int, transform) -> dict:
    wave = torch.from_numpy(sound_clip(record["target"], record["clip"], sample_rate))
    x = log_mel(wave, sample_rate, n_mels=n_mels) if features == "logmel" else wave
    out = {"sample_rate": sample_rate, "label": record["label"], "target": record["target"],
           "category": record["category"], "fold": record["fold"], "path": record["path"]}
    out["logmel" if features == "logmel" else "audio"] = transform(x) if transform is not None else x
    return out
