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

from mmcourse.data import files, sources, synthetic
from mmcourse.data.errors import SkipLog, data_error
from mmcourse.data.records import Records

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
ESC50_FOLDERS = ("esc50", "ESC-50", "ESC-50-master")


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
        return synthetic.sounds(variant, split, test_fold=test_fold, sample_rate=sample_rate, features=features,
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
        per = synthetic.SOUNDS_PER_FOLD[variant] * len(classes(variant))
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
