"""Kermany pediatric chest X-rays, pneumonia vs normal (notebook 09).

Layout read (``<MMCOURSE_DATA_DIR>/chest_xray_pneumonia/``; ``chest_xray/`` is accepted too)::

    train/{NORMAL,PNEUMONIA}/*.jpeg   test/{NORMAL,PNEUMONIA}/*.jpeg
    [val/{NORMAL,PNEUMONIA}/*.jpeg]   (Kaggle's upstream val split, optional)
    labels.csv                        path,split,label,label_id,subtype (optional: else the folders are scanned)

Splits: ``train`` and ``val`` are carved from the official training set, ``trainval`` is the
whole official training set and ``test`` is the official test set (624). The official training
set is 5,232 images in Mendeley's ChestXRay2017.zip (what ``make data`` prepares) and 5,216 in
Kaggle's layout and in ``../shared/datasets``, which lack the 16 images Kaggle moved to its tiny
``val/`` folder. Both layouts load: an upstream ``val/`` folder (or ``val`` rows in
``labels.csv``) counts as official training data, exactly as the prepare step merges it.
Labels: 0 = NORMAL, 1 = PNEUMONIA; ``subtype`` is normal / bacteria / virus, from the file name.

How the validation split is carved (deterministic, patient-grouped): each file's *patient key*
is ``personN`` for pneumonia files (``person1_bacteria_1.jpeg``) and the ``IM-NNNN`` stem for
normal files (``IM-0115-0001.jpeg``, ``NORMAL2-IM-0173-0001-0001.jpeg``). A file goes to
``val`` when ``sha1(patient key)`` read as a fraction of 2**64 (first 8 bytes) is below
``val_fraction`` (default 0.1). So all images of one patient land on the same side, the split
does not depend on file order or on which other files exist, and it is the same on every
machine. (Train and test themselves may share patients upstream; see SOURCES.md.)

Images come back as float tensors ``(channels, S, S)`` in [0, 1], squashed to ``S``×``S``
(``image_size``, default 224; ``channels=3`` repeats the gray channel for ImageNet backbones).
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch

from mmcourse.data import files, sources
from mmcourse.data import synthetic as synth
from mmcourse.data.errors import SkipLog, data_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import resize, to_channels, to_float

NAME = "chest_xray"
FOLDERS = ("chest_xray_pneumonia", "chest_xray")
LABELS_FILE = "labels.csv"
COLUMNS = ["path", "split", "label", "label_id", "subtype"]
CLASSES = ["NORMAL", "PNEUMONIA"]
SUBTYPES = ("normal", "bacteria", "virus")
SPLITS = ("train", "val", "test", "trainval")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
LICENCE = "CC BY 4.0"
CITATION = ("D. Kermany, K. Zhang, M. Goldbaum. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
            "Images for Classification. Mendeley Data v2 (2018), doi:10.17632/rscbjbr9sj.2; "
            "Kermany et al., Cell 172(5) (2018) 1122-1131.")
HOMEPAGE = "https://data.mendeley.com/datasets/rscbjbr9sj/2"
FIX = "re-run `python -m mmcourse fetch data chest_xray --force`"


def subtype_of(filename: str) -> str:
    """``bacteria`` / ``virus`` from a Kaggle pneumonia file name, else ``normal``."""
    low = filename.lower()
    return "bacteria" if "bacteria" in low else "virus" if "virus" in low else "normal"


def patient_key(filename: str) -> str:
    """The patient a file belongs to: ``personN`` or the ``[NORMAL2-]IM-NNNN`` stem (see module doc)."""
    stem = Path(filename).stem
    m = re.search(r"(person\d+)_", stem) or re.match(r"((?:NORMAL2-)?IM-\d+)", stem)
    return m[1] if m else stem


def in_val(filename: str, val_fraction: float) -> bool:
    """Whether a training file goes to the carved validation split (patient-grouped hash)."""
    h = hashlib.sha1(patient_key(filename).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < val_fraction


def read_labels(folder: Path, skips: SkipLog) -> list[dict]:
    """All rows (train and test) from ``labels.csv``, or from the folder layout when it is absent."""
    path = folder / LABELS_FILE
    if not path.exists():
        return scan_folders(folder)
    rows = []
    for lineno, row in enumerate(files.read_csv(path, COLUMNS, "labels file", FIX), 2):
        where = f"{path}:{lineno}"
        if row["split"] not in ("train", "val", "test"):
            skips.skip(where, f"split {row['split']!r} is not 'train', 'val' or 'test'", FIX)
        elif row["label"] not in CLASSES:
            skips.skip(where, f"label {row['label']!r} is not one of {CLASSES}", FIX)
        elif row["label_id"] != str(CLASSES.index(row["label"])):
            skips.skip(where, f"label_id {row['label_id']!r} out of range or inconsistent with label "
                       f"{row['label']!r} (expected {CLASSES.index(row['label'])})", FIX)
        else:
            rows.append({"path": row["path"], "split": "test" if row["split"] == "test" else "train",
                         "label": CLASSES.index(row["label"]),
                         "subtype": row["subtype"] if row["subtype"] in SUBTYPES else subtype_of(row["path"])})
    return rows


def scan_folders(folder: Path) -> list[dict]:
    """Rows built from ``{train,val,test}/{NORMAL,PNEUMONIA}/`` when there is no ``labels.csv``.

    An upstream ``val/`` folder is official training data (Kaggle split 16 images off ``train/``)."""
    if not (folder / "train").is_dir() and not (folder / "test").is_dir():
        raise data_error(folder, f"neither {LABELS_FILE} nor train/ and test/ folders found", FIX)
    rows = []
    for split in ("train", "val", "test"):
        for label, cls in enumerate(CLASSES):
            for name in sorted(files.scan(folder / split / cls, IMAGE_SUFFIXES)):
                rows.append({"path": f"{split}/{cls}/{name}", "split": "test" if split == "test" else "train",
                             "label": label,
                             "subtype": subtype_of(name)})
    return rows


def assign_split(row: dict, val_fraction: float) -> str:
    """``train``/``val`` for official training rows (patient-grouped hash), ``test`` otherwise."""
    if row["split"] == "test":
        return "test"
    return "val" if in_val(row["path"], val_fraction) else "train"


def split_sizes(rows: list[dict], val_fraction: float) -> dict[str, int]:
    """Images per split, including ``trainval`` (the official training set)."""
    out = dict.fromkeys(SPLITS, 0)
    for r in rows:
        s = assign_split(r, val_fraction)
        out[s] += 1
        if s != "test":
            out["trainval"] += 1
    return out


def load(split: str = "train", *, image_size: int | None = 224, channels: int = 1, val_fraction: float = 0.1,
         transform=None, pil: bool = False, cache: bool = True, strict: bool = False,
         fallback: str = "synthetic", root: str | os.PathLike | None = None) -> Records:
    """Chest X-ray ``split`` (train / val / test / trainval) as a Dataset of dicts (notebook 09).

    Samples: ``{"image" (channels, S, S) float, "label" 0/1, "subtype", "path"}``. Missing or
    empty files are skipped with a counted warning (``strict=True`` raises).
    """
    if split not in SPLITS:
        raise ValueError(f"chest X-ray split must be one of {SPLITS}, not {split!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    sources.check_fallback(fallback)
    folder, why = sources.locate(FOLDERS, LABELS_FILE, root)
    if folder is None:
        sources.missing_real_data(NAME, why, fallback, NAME)
        return synthetic(split, image_size=image_size or 224, channels=channels, val_fraction=val_fraction,
                                    transform=transform, pil=pil, name=NAME, reason=why)
    skips = SkipLog(f"{NAME} {split}", strict)
    rows = read_labels(folder, skips)
    if split == "trainval":
        wanted = [r for r in rows if r["split"] == "train"]
    else:
        wanted = [r for r in rows if assign_split(r, val_fraction) == split]
    sizes = {}
    for d in {str(Path(r["path"]).parent) for r in wanted}:
        sizes.update({f"{d}/{n}": s for n, s in files.scan(folder / d, IMAGE_SUFFIXES).items()})
    records = []
    for r in wanted:
        size = sizes.get(r["path"])
        if size is None:
            skips.skip(folder / r["path"], "image file listed in labels.csv is missing", FIX)
        elif size == 0:
            skips.skip(folder / r["path"], "empty image file (0 bytes)", FIX)
        else:
            records.append({**r, "path": folder / r["path"]})
    skips.warn(len(wanted))
    notes = [f"val = official train images whose patient key hashes below {val_fraction} (see module doc)"]
    info = sources.Info(NAME, "real", split, LICENCE, CITATION, split_sizes(rows, val_fraction), path=str(folder),
                        classes=list(CLASSES), notes=notes, homepage=HOMEPAGE)
    sources.record(info)
    read = functools.partial(read_sample, image_size=image_size, channels=channels, transform=transform,
                             pil=pil, use_cache=cache)
    return Records(records, read, info, strict)


def read_sample(record: dict, image_size: int | None, channels: int, transform, pil: bool, use_cache: bool) -> dict:
    """One record → ``{"image", "label", "subtype", "path"}``."""
    if pil:
        image = files.read_pil(record["path"], "L" if channels == 1 else "RGB")
        if image_size:
            image = files.resize_image(image, image_size, "squash")
    else:
        image = to_channels(to_float(files.read_image(record["path"], image_size, "L", "squash", use_cache)), channels)
    if transform is not None:
        image = transform(image)
    return {"image": image, "label": record["label"], "subtype": record["subtype"], "path": str(record["path"])}


def summary(root: str | os.PathLike | None = None, val_fraction: float = 0.1) -> dict:
    """Status row for ``data.describe()``: real / synthetic fallback / missing, path, split sizes."""
    folder, why = sources.locate(FOLDERS, LABELS_FILE, root)
    if folder is None:
        rows = _synthetic_rows("trainval")
        n_val = sum(in_val(r["path"], val_fraction) for r in rows)
        sizes = {"train": len(rows) - n_val, "val": n_val, "test": SYNTHETIC_SIZES["test"], "trainval": len(rows)}
        return {"status": "synthetic fallback", "path": str(sources.data_root(root) / FOLDERS[0]),
                "splits": sizes, "detail": why}
    rows = read_labels(folder, SkipLog(NAME))
    n_files = sum(len(files.scan(folder / s / c, IMAGE_SUFFIXES)) for s in ("train", "val", "test") for c in CLASSES)
    sizes = split_sizes(rows, val_fraction)
    if not rows or not n_files:
        return {"status": "missing", "path": str(folder), "splits": sizes, "detail": "no labelled images found"}
    return {"status": "real", "path": str(folder), "splits": sizes, "detail": f"{n_files:,} image files"}


# ======================================================================= synthetic stand-in

SYNTHETIC_SIZES = {"trainval": 520, "test": 124}
_CHEST_PNEUMONIA_RATE = {"trainval": 0.743, "test": 0.625}


def _soft(d: np.ndarray, edge: float = 0.08) -> np.ndarray:
    """Smooth inside-ness of an implicit shape (``d`` < 1 inside)."""
    return 1.0 / (1.0 + np.exp(np.minimum((d - 1.0) / edge, 50.0)))


def xray_image(rng: np.random.Generator, label: int, subtype: str, size: int) -> np.ndarray:
    """A chest-X-ray-like uint8 image ``(size, size)``: body, lungs, spine, ribs, heart (+ opacities).

    The smooth anatomy is drawn at up to 112×112 and upsampled; the noise is added at full size.
    """
    res = min(size, 112)
    dx, dy = rng.uniform(-0.03, 0.03, 2)
    sc = rng.uniform(0.95, 1.05)
    y, x = np.mgrid[0:res, 0:res].astype(np.float32) / res
    x, y = (x - 0.5 - dx) / sc + 0.5, (y - 0.5 - dy) / sc + 0.5
    img = 0.06 + 0.36 * _soft(((x - 0.5) / 0.44) ** 2 + ((y - 0.6) / 0.55) ** 2)
    lungs = np.zeros_like(x)
    for cx in (0.32, 0.68):
        lungs += _soft(((x - cx) / 0.14) ** 2 + ((y - 0.46) / 0.27) ** 2, 0.12)
    img -= 0.24 * lungs
    img += 0.22 * np.exp(-((x - 0.5) / 0.035) ** 2) * (y > 0.12)
    ribs = (np.sin(2 * np.pi * (y * 9.0 - 2.5 * (x - 0.5) ** 2)) > 0.6).astype(np.float32)
    img += 0.07 * ribs * lungs
    img += 0.16 * _soft(((x - 0.56) / 0.13) ** 2 + ((y - 0.63) / 0.11) ** 2)
    if label == 1 and subtype == "bacteria":
        cx, cy = (0.32 if rng.random() < 0.5 else 0.68) + rng.uniform(-0.04, 0.04), rng.uniform(0.38, 0.6)
        s = rng.uniform(0.05, 0.09)
        img += rng.uniform(0.3, 0.42) * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))) * lungs
    elif label == 1:
        spots = np.zeros_like(x)
        for _ in range(int(rng.integers(18, 34))):
            cx, cy = rng.choice([0.32, 0.68]) + rng.uniform(-0.1, 0.1), rng.uniform(0.25, 0.68)
            spots += np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.018 ** 2)))
        img += (0.05 + 0.07 * np.clip(spots, 0, 1)) * lungs
    img = img * rng.uniform(0.9, 1.1)
    if res != size:
        img = resize(torch.from_numpy(img.astype(np.float32))[None], size)[0].numpy()
    img = img + rng.normal(0, 0.018, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _synthetic_rows(group: str) -> list[dict]:
    rows = []
    for i in range(SYNTHETIC_SIZES[group]):
        rng = synth.rng(21, synth.SPLIT_IDS[group], i)
        label = int(rng.random() < _CHEST_PNEUMONIA_RATE[group])
        subtype = ("bacteria" if rng.random() < 0.65 else "virus") if label else "normal"
        pid = 5000 * synth.SPLIT_IDS[group] + i // 2
        fname = f"person{pid}_{subtype}_{i}.jpeg" if label else f"IM-{pid:05d}-{i % 2 + 1:04d}.jpeg"
        cls = "PNEUMONIA" if label else "NORMAL"
        rows.append({"path": f"synthetic/{'test' if group == 'test' else 'train'}/{cls}/{fname}",
                     "label": label, "subtype": subtype, "group": group, "index": i})
    return rows


def synthetic(split: str = "train", *, image_size: int = 224, channels: int = 1, val_fraction: float = 0.1,
               transform=None, pil: bool = False, name: str = "chest_xray", reason: str = "") -> Records:
    """Chest-X-ray-like classification set (Kermany stand-in; notebook 09).

    Same splits and sample dicts as :func:`mmcourse.data.chest_xray.load`: 520 official-train
    images (about 74 % pneumonia, val carved by the same patient hash) and 124 test images.
    """
    if split not in ("train", "val", "test", "trainval"):
        raise ValueError(f"split must be train, val, test or trainval, not {split!r}")
    trainval, test = _synthetic_rows("trainval"), _synthetic_rows("test")
    val = [r for r in trainval if in_val(r["path"], val_fraction)]
    train = [r for r in trainval if not in_val(r["path"], val_fraction)]
    by = {"train": train, "val": val, "test": test, "trainval": trainval}
    sizes = {k: len(v) for k, v in by.items()}
    info = sources.Info(name, "synthetic", split, synth.LICENCE, synth.CITATION, sizes,
                        classes=["NORMAL", "PNEUMONIA"])
    synth.announce(info, "procedural chest-X-ray-like images (normal / lobar / diffuse opacities)", reason,
                   "chest_xray")
    read = functools.partial(_read_xray, image_size=image_size, channels=channels, transform=transform, pil=pil)
    return Records(by[split], read, info)


def _read_xray(record: dict, image_size: int, channels: int, transform, pil: bool = False) -> dict:
    rng = synth.rng(22, synth.SPLIT_IDS[record["group"]], record["index"])
    arr = xray_image(rng, record["label"], record["subtype"], image_size)
    if pil:
        from PIL import Image

        img = Image.fromarray(arr, "L").convert("L" if channels == 1 else "RGB")
    else:
        img = to_channels(torch.from_numpy(arr).float().div_(255.0)[None], channels)
    if transform is not None:
        img = transform(img)
    return {"image": img, "label": record["label"], "subtype": record["subtype"], "path": record["path"]}
