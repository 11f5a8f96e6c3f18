"""Kermany pediatric chest X-rays, pneumonia vs normal (notebook 09).

Layout read (``<MMCOURSE_DATA_DIR>/chest_xray_pneumonia/``; ``chest_xray/`` is accepted too)::

    train/{NORMAL,PNEUMONIA}/*.jpeg   test/{NORMAL,PNEUMONIA}/*.jpeg
    labels.csv                        path,split,label,label_id,subtype (optional: else the folders are scanned)

Splits: ``train`` and ``val`` are carved from the official training set, ``trainval`` is the
whole official training set (5,216 images in the prepared copy; 5,232 in Mendeley's
ChestXRay2017.zip, whose train folder also holds Kaggle's 16 "val" images) and ``test`` is the
official test set (624). Labels: 0 = NORMAL, 1 = PNEUMONIA; ``subtype`` is normal / bacteria /
virus, from the file name.

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

from mmcourse.data import files, sources, synthetic
from mmcourse.data.errors import SkipLog, data_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import to_channels, to_float

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
        if row["split"] not in ("train", "test"):
            skips.skip(where, f"split {row['split']!r} is not 'train' or 'test'", FIX)
        elif row["label"] not in CLASSES:
            skips.skip(where, f"label {row['label']!r} is not one of {CLASSES}", FIX)
        elif row["label_id"] != str(CLASSES.index(row["label"])):
            skips.skip(where, f"label_id {row['label_id']!r} out of range or inconsistent with label "
                       f"{row['label']!r} (expected {CLASSES.index(row['label'])})", FIX)
        else:
            rows.append({"path": row["path"], "split": row["split"], "label": CLASSES.index(row["label"]),
                         "subtype": row["subtype"] if row["subtype"] in SUBTYPES else subtype_of(row["path"])})
    return rows


def scan_folders(folder: Path) -> list[dict]:
    """Rows built from ``{train,test}/{NORMAL,PNEUMONIA}/`` when there is no ``labels.csv``."""
    if not (folder / "train").is_dir() and not (folder / "test").is_dir():
        raise data_error(folder, f"neither {LABELS_FILE} nor train/ and test/ folders found", FIX)
    rows = []
    for split in ("train", "test"):
        for label, cls in enumerate(CLASSES):
            for name in sorted(files.scan(folder / split / cls, IMAGE_SUFFIXES)):
                rows.append({"path": f"{split}/{cls}/{name}", "split": split, "label": label,
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
        return synthetic.chest_xray(split, image_size=image_size or 224, channels=channels, val_fraction=val_fraction,
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
        rows = synthetic._chest_rows("trainval")
        n_val = sum(in_val(r["path"], val_fraction) for r in rows)
        sizes = {"train": len(rows) - n_val, "val": n_val, "test": synthetic.CHEST_SIZES["test"], "trainval": len(rows)}
        return {"status": "synthetic fallback", "path": str(sources.data_root(root) / FOLDERS[0]),
                "splits": sizes, "detail": why}
    rows = read_labels(folder, SkipLog(NAME))
    n_files = sum(len(files.scan(folder / s / c, IMAGE_SUFFIXES)) for s in ("train", "test") for c in CLASSES)
    sizes = split_sizes(rows, val_fraction)
    if not rows or not n_files:
        return {"status": "missing", "path": str(folder), "splits": sizes, "detail": "no labelled images found"}
    return {"status": "real", "path": str(folder), "splits": sizes, "detail": f"{n_files:,} image files"}
