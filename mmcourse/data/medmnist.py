"""MedMNIST v2/v3 (2D) npz files in the official key layout (notebook 09).

Reads ``<MMCOURSE_DATA_DIR>/medmnist/<flag>.npz`` (``<flag>_<size>.npz`` for 64/128/224; a
``<flag>_partial.npz`` is used when the complete file is absent, with a warning). The keys are
MedMNIST's own: ``train_images``, ``val_images``, ``test_images`` (uint8, ``(N, S, S)`` or
``(N, S, S, 3)``) and ``train_labels``, ``val_labels``, ``test_labels`` (``(N, 1)``, or
``(N, L)`` for multi-label ChestMNIST). So the files MedMNIST publishes on Zenodo (record
10519652, fetched by ``data_scripts/fetch_medmnist.py`` and checked against the MD5s of
MedMNIST's ``info.py``) load unchanged. Every flag below gives the same interface.

Samples: ``{"image" (C, S, S) float in [0, 1], "label"}``; ``label`` is an int (binary,
multi-class, ordinal) or a float multi-hot tensor (multi-label).
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from mmcourse.data import files, sources
from mmcourse.data import synthetic as synth
from mmcourse.data.errors import DataWarning, SkipLog, data_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import resize, to_channels

NAME = "medmnist"
FOLDERS = ("medmnist", "MedMNIST")
SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
ZENODO = "https://zenodo.org/records/10519652/files/{file}?download=1"
CITATION = ("J. Yang, R. Shi, D. Wei, Z. Liu, L. Zhao, B. Ke, H. Pfister, B. Ni. MedMNIST v2 - A large-scale "
            "lightweight benchmark for 2D and 3D biomedical image classification. Scientific Data 10, 41 (2023).")
HOMEPAGE = "https://medmnist.com/"
_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
           "lung-left", "lung-right", "pancreas", "spleen"]

# From MedMNIST/MedMNIST medmnist/info.py (v3.0.2): task, labels, channels, split sizes, licence,
# MD5 per image size (28, 64, 128, 224).
FLAGS: dict[str, dict] = {
    "pathmnist": dict(task="multi-class", channels=3, n=(89996, 10004, 7180), licence="CC BY 4.0",
                      labels=["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                              "normal colon mucosa", "cancer-associated stroma",
                              "colorectal adenocarcinoma epithelium"],
                      md5={28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
                           128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"}),
    "chestmnist": dict(task="multi-label, binary-class", channels=1, n=(78468, 11219, 22433), licence="CC BY 4.0",
                       labels=["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
                               "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
                               "pleural", "hernia"],
                       md5={28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
                            128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"}),
    "dermamnist": dict(task="multi-class", channels=3, n=(7007, 1003, 2005), licence="CC BY-NC 4.0",
                       labels=["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                               "benign keratosis-like lesions", "dermatofibroma", "melanoma",
                               "melanocytic nevi", "vascular lesions"],
                       md5={28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
                            128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"}),
    "octmnist": dict(task="multi-class", channels=1, n=(97477, 10832, 1000), licence="CC BY 4.0",
                     labels=["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
                     md5={28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
                          128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"}),
    "pneumoniamnist": dict(task="binary-class", channels=1, n=(4708, 524, 624), licence="CC BY 4.0",
                           labels=["normal", "pneumonia"],
                           md5={28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
                                128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}),
    "retinamnist": dict(task="ordinal-regression", channels=3, n=(1080, 120, 400), licence="CC BY 4.0",
                        labels=["0", "1", "2", "3", "4"],
                        md5={28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
                             128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"}),
    "breastmnist": dict(task="binary-class", channels=1, n=(546, 78, 156), licence="CC BY 4.0",
                        labels=["malignant", "normal, benign"],
                        md5={28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
                             128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"}),
    "bloodmnist": dict(task="multi-class", channels=3, n=(11959, 1712, 3421), licence="CC BY 4.0",
                       labels=["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                               "monocyte", "neutrophil", "platelet"],
                       md5={28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
                            128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"}),
    "tissuemnist": dict(task="multi-class", channels=1, n=(165466, 23640, 47280), licence="CC BY 4.0",
                        labels=["Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
                                "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
                                "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"],
                        md5={28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
                             128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"}),
    "organamnist": dict(task="multi-class", channels=1, n=(34561, 6491, 17778), licence="CC BY 4.0", labels=_ORGANS,
                        md5={28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
                             128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"}),
    "organcmnist": dict(task="multi-class", channels=1, n=(12975, 2392, 8216), licence="CC BY 4.0", labels=_ORGANS,
                        md5={28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
                             128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"}),
    "organsmnist": dict(task="multi-class", channels=1, n=(13932, 2452, 8827), licence="CC BY 4.0", labels=_ORGANS,
                        md5={28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
                             128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"}),
}
FIX = "get the official file: python -m mmcourse fetch data medmnist:{flag}"


def check_flag(flag: str) -> dict:
    """The info of a MedMNIST 2D ``flag``; an unknown one raises with the nearest names."""
    if flag in FLAGS:
        return FLAGS[flag]
    import difflib

    near = difflib.get_close_matches(flag.lower(), list(FLAGS), n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ValueError(f"unknown MedMNIST flag {flag!r}{hint} (known: {', '.join(FLAGS)}; 3D flags are not supported)")


def file_name(flag: str, size: int = 28) -> str:
    """The official file name: ``<flag>.npz`` for 28×28, ``<flag>_<size>.npz`` otherwise."""
    if size not in SIZES:
        raise ValueError(f"MedMNIST size must be one of {SIZES}, not {size}")
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def url(flag: str, size: int = 28) -> str:
    """Zenodo download URL of ``flag`` at ``size`` (record 10519652)."""
    return ZENODO.format(file=file_name(flag, size))


def find_file(folder: Path, flag: str, size: int = 28) -> Path | None:
    """The npz for ``flag``: the official name, else ``<flag>_partial.npz`` (28 only), else None."""
    for name in (file_name(flag, size), f"{flag}_partial.npz" if size == 28 else None):
        if name and (folder / name).exists():
            return folder / name
    return None


def validate(path: Path, flag: str, size: int) -> dict[str, int]:
    """Check keys, shapes and dtypes from the npz headers; return ``{split: n}``. Raises on problems."""
    info = FLAGS[flag]
    fix = FIX.format(flag=flag)
    shapes = files.npz_shapes(path)
    need = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in need if k not in shapes]
    if missing:
        raise data_error(path, f"npz lacks the key(s) {missing}; it has {sorted(shapes)} "
                         "(MedMNIST files hold train/val/test _images and _labels)", fix)
    img_shape = (size, size) if info["channels"] == 1 else (size, size, 3)
    n_labels = len(info["labels"]) if info["task"].startswith("multi-label") else 1
    out = {}
    for s in SPLITS:
        (ishape, idtype), (lshape, ldtype) = shapes[f"{s}_images"], shapes[f"{s}_labels"]
        if tuple(ishape[1:]) != img_shape:
            raise data_error(path, f"{s}_images has shape {ishape}, expected (N, {', '.join(map(str, img_shape))}) "
                             f"for {flag} at size {size}", fix + " (or pass the matching size=)")
        if idtype != "uint8":
            raise data_error(path, f"{s}_images has dtype {idtype}, expected uint8", fix)
        if not (len(lshape) in (1, 2) and (len(lshape) == 1 and n_labels == 1 or lshape[1:] == (n_labels,))):
            raise data_error(path, f"{s}_labels has shape {lshape}, expected (N, {n_labels})", fix)
        if lshape[0] != ishape[0]:
            raise data_error(path, f"{s}_images has {ishape[0]} images but {s}_labels has {lshape[0]} labels", fix)
        if not np.issubdtype(np.dtype(ldtype), np.integer):
            raise data_error(path, f"{s}_labels has dtype {ldtype}, expected an integer type", fix)
        out[s] = ishape[0]
    return out


def load(flag: str = "pneumoniamnist", split: str = "train", *, size: int = 28, image_size: int | None = None,
         channels: int | None = None, transform=None, strict: bool = False, fallback: str = "synthetic",
         root: str | os.PathLike | None = None) -> Records:
    """MedMNIST ``flag`` / ``split`` as a Dataset of dicts (notebook 09).

    ``size`` picks the published resolution (28, 64, 128, 224); ``image_size`` resizes further
    (bilinear) and ``channels`` repeats gray to 3 (or averages RGB to 1). Rows whose label is out
    of range are skipped with a counted warning (``strict=True`` raises).
    """
    info_f = check_flag(flag)
    if split not in SPLITS:
        raise ValueError(f"MedMNIST split must be one of {SPLITS}, not {split!r}")
    sources.check_fallback(fallback)
    name = f"{NAME}:{flag}"
    folder, why = sources.locate(FOLDERS, file_name(flag, size), root)
    if folder is None and find_file(sources.data_root(root), flag, size):
        folder = sources.data_root(root)  # root= points at the medmnist folder itself
    path = find_file(folder, flag, size) if folder is not None else None
    if path is None:
        if folder is not None:
            why = f"no {file_name(flag, size)} in {folder}"
        sources.missing_real_data(name, why, fallback, name)
        return synthetic(flag, split, size=size, image_size=image_size, channels=channels,
                                  transform=transform, reason=why)
    counts = validate(path, flag, size)
    notes = []
    if counts != dict(zip(SPLITS, info_f["n"])):
        notes.append(f"split sizes {counts} differ from MedMNIST's {dict(zip(SPLITS, info_f['n']))}: "
                     "a partial or modified file, results are not comparable with the MedMNIST tables")
        warnings.warn(f"{path}: {notes[-1]}", DataWarning, stacklevel=2)
    arrays = files.load_npz_arrays(path, [f"{split}_images", f"{split}_labels"])
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    keep = check_labels(labels, flag, path, split, strict)
    multi = info_f["task"].startswith("multi-label")
    images_t = torch.from_numpy(np.ascontiguousarray(images))
    labels_t = torch.from_numpy(labels.reshape(len(labels), -1).astype(np.int64))
    records = [{"index": int(i), "label": labels_t[i].tolist() if multi else int(labels_t[i, 0])} for i in keep]
    info = sources.Info(name, "real", split, info_f["licence"], CITATION, counts, path=str(path),
                        classes=list(info_f["labels"]), notes=notes + [f"task: {info_f['task']}"], homepage=HOMEPAGE)
    sources.record(info)
    read = functools.partial(read_sample, images=images_t, labels=labels_t, multi=multi, image_size=image_size,
                             channels=channels, transform=transform)
    return Records(records, read, info, strict)


def check_labels(labels: np.ndarray, flag: str, path: Path, split: str, strict: bool) -> np.ndarray:
    """Indices of rows whose labels are in range; the others are counted skips."""
    k = len(FLAGS[flag]["labels"])
    lab = labels.reshape(len(labels), -1)
    multi = FLAGS[flag]["task"].startswith("multi-label")
    bad = ((lab < 0) | (lab > 1)).any(1) if multi else ((lab < 0) | (lab >= k)).any(1)
    skips = SkipLog(f"{NAME}:{flag} {split}", strict)
    for i in np.flatnonzero(bad)[:1000]:
        skips.skip(f"{path}[{split}_labels][{i}]", f"label {lab[i].tolist()} out of range for {flag} "
                   f"({'0/1 per class' if multi else f'0..{k - 1}'})", FIX.format(flag=flag))
    skips.warn(len(labels))
    return np.flatnonzero(~bad)


def read_sample(record: dict, images: torch.Tensor, labels: torch.Tensor, multi: bool, image_size: int | None,
                channels: int | None, transform) -> dict:
    """One row → ``{"image" (C, S, S) float, "label"}``."""
    img = images[record["index"]]
    img = (img.unsqueeze(0) if img.ndim == 2 else img.permute(2, 0, 1)).float().div_(255.0)
    label = labels[record["index"]].float() if multi else int(labels[record["index"], 0])
    return {"image": _finish(img, image_size, channels, transform), "label": label}


def _finish(img: torch.Tensor, image_size: int | None, channels: int | None, transform) -> torch.Tensor:
    """Resize, set the channel count and apply the caller's transform (real and stand-in images alike)."""
    if image_size:
        img = resize(img, image_size)
    if channels:
        img = to_channels(img, channels)
    return transform(img) if transform is not None else img


def available(folder: Path) -> list[str]:
    """Flags with an npz (complete or partial) in ``folder``, for ``describe()``."""
    found = []
    for flag in FLAGS:
        if any(find_file(folder, flag, s) for s in SIZES):
            found.append(flag)
    return found



def summary(flag: str, root: str | os.PathLike | None = None, size: int = 28) -> dict:
    """Status row for ``data.describe()``: real / synthetic fallback / missing, path, split sizes."""
    check_flag(flag)
    folder, why = sources.locate(FOLDERS, file_name(flag, size), root)
    path = find_file(folder, flag, size) if folder is not None else None
    if path is None:
        caps = SYNTHETIC_CAPS
        sizes = {s: min(n, caps[s]) for s, n in zip(SPLITS, FLAGS[flag]["n"])}
        where = (folder or sources.data_root(root) / FOLDERS[0]) / file_name(flag, size)
        return {"status": "synthetic fallback", "path": str(where), "splits": sizes,
                "detail": why or f"no {file_name(flag, size)} in {folder}"}
    counts = validate(path, flag, size)
    official = dict(zip(SPLITS, FLAGS[flag]["n"]))
    detail = "official split sizes" if counts == official else f"partial/modified file (MedMNIST: {official})"
    return {"status": "real", "path": str(path), "splits": counts, "detail": detail}


# ======================================================================= synthetic stand-in

SYNTHETIC_CAPS = {"train": 1000, "val": 200, "test": 400}


def synthetic(flag: str = "pneumoniamnist", split: str = "train", *, size: int = 28, image_size: int | None = None,
             channels: int | None = None, transform=None, reason: str = "") -> Records:
    """Class-dependent procedural images in the shape of MedMNIST ``flag`` (notebook 09).

    Split sizes are MedMNIST's, capped at 1,000 / 200 / 400; labels follow the flag's task
    (binary, multi-class, ordinal, multi-label). Same sample dicts as the real loader.
    """
    meta = check_flag(flag)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    sizes = {s: min(n, SYNTHETIC_CAPS[s]) for s, n in zip(SPLITS, meta["n"])}
    k, multi = len(meta["labels"]), meta["task"].startswith("multi-label")
    records = []
    for i in range(sizes[split]):
        rng = synth.rng(31, synth.SPLIT_IDS[split], i, list(FLAGS).index(flag))
        if multi:
            label = (rng.random(k) < 0.12).astype(int).tolist()
        elif k == 2:
            label = int(rng.random() < 0.73)
        else:
            label = int(rng.integers(k))
        records.append({"index": i, "label": label})
    info = sources.Info(f"medmnist:{flag}", "synthetic", split, synth.LICENCE, synth.CITATION, sizes,
                        classes=list(meta["labels"]), notes=[f"task: {meta['task']}"])
    synth.announce(info, f"procedural class-dependent {size}x{size} images shaped like {flag}", reason,
              f"medmnist:{flag}")
    read = functools.partial(_read_med, flag_id=list(FLAGS).index(flag), split=split, k=k, multi=multi,
                             n_channels=meta["channels"], size=size, image_size=image_size, channels=channels,
                             transform=transform)
    return Records(records, read, info)


def _read_med(record: dict, flag_id: int, split: str, k: int, multi: bool, n_channels: int, size: int,
              image_size: int | None, channels: int | None, transform) -> dict:
    rng = synth.rng(32, synth.SPLIT_IDS[split], record["index"], flag_id)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    active = [c for c, v in enumerate(record["label"]) if v] if multi else [record["label"]]
    img = 0.25 + 0.1 * rng.random() + np.zeros_like(x)
    for c in active:
        ang = 2 * np.pi * c / k
        cx, cy = 0.5 + 0.25 * np.cos(ang), 0.5 + 0.25 * np.sin(ang)
        img += 0.45 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.1 ** 2)))
        img += 0.1 * np.sin(2 * np.pi * (4 + c) * (x * np.cos(ang / 2) + y * np.sin(ang / 2)))
    img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)
    t = torch.from_numpy(img)[None]
    if n_channels == 3:
        tint = torch.tensor([1.0, 0.75 + 0.2 * ((active[0] if active else 0) % 2), 0.85])[:, None, None]
        t = (t * tint).clamp_(0, 1)
    label = torch.tensor(record["label"], dtype=torch.float32) if multi else record["label"]
    return {"image": _finish(t, image_size, channels, transform), "label": label}
