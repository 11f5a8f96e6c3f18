"""Flickr8k: 8,091 photos, 5 captions each, official 6,000 / 1,000 / 1,000 splits (notebooks 04 and 08).

Layout read (``<MMCOURSE_DATA_DIR>/flickr8k/``), as written by ``data_scripts/fetch_flickr8k.py``
and as in ``../shared/datasets/flickr8k``::

    Flickr8k.token.txt            NAME.jpg#K<TAB>caption, 5 lines per image
    Flickr_8k.{train,dev,test}Images.txt
    Images/NAME.jpg               (the upstream zip's Flicker8k_Dataset/ is accepted too)

Two views: ``view="image"`` gives one sample per image with its 5 captions (retrieval,
evaluation), ``view="caption"`` one sample per (image, caption) pair (captioning training).
Images come back as float tensors ``(3, S, S)`` in [0, 1] (shorter side resized to ``S``,
centre crop; decoded images are cached on disk), or as PIL images with ``pil=True``.
The token file names one image that does not exist upstream (``2258277193_586949ec62.jpg.1``);
it is in no split, so it is simply never used.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from mmcourse.data import files, sources, synthetic
from mmcourse.data.errors import SkipLog, data_error
from mmcourse.data.records import Records
from mmcourse.data.transforms import to_float

NAME = "flickr8k"
FOLDERS = ("flickr8k", "Flickr8k")
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
IMAGE_DIRS = ("Images", "Flicker8k_Dataset", "Flickr8k_Dataset")
VIEWS = ("image", "caption")
LICENCE = ("research and teaching use only (Flickr8k terms of use); the images belong to their "
           "Flickr owners; do not redistribute")
CITATION = ("M. Hodosh, P. Young, J. Hockenmaier. Framing Image Description as a Ranking Task: Data, "
            "Models and Evaluation Metrics. JAIR 47 (2013) 853-899.")
HOMEPAGE = "https://hockenmaier.cs.illinois.edu/8k-pictures.html"
FIX = "re-run `python -m mmcourse fetch data flickr8k --force`"
_LINE = re.compile(r"^(?P<image>[^\s#]+)#(?P<k>\d+)\s+(?P<caption>.*\S)\s*$")
_SPLIT_ALIASES = {"dev": "val", "validation": "val", "valid": "val"}


def split_name(split: str) -> str:
    """Canonical split name: ``train``, ``val`` (alias ``dev``) or ``test``."""
    s = _SPLIT_ALIASES.get(split, split)
    if s not in SPLIT_FILES:
        raise ValueError(f"Flickr8k split must be one of {list(SPLIT_FILES)} (or 'dev'), not {split!r}")
    return s


def read_captions(path: str | os.PathLike, skips: SkipLog) -> dict[str, list[str]]:
    """``{image_name: [captions in #K order]}`` from ``Flickr8k.token.txt``; bad lines are counted skips."""
    out: dict[str, dict[int, str]] = {}
    for lineno, line in files.read_lines(path, "caption file", FIX, skips=skips):
        m = _LINE.match(line)
        if not m:
            skips.skip(f"{path}:{lineno}", f"malformed caption line {line[:70]!r} "
                       "(expected 'NAME.jpg#K<TAB>caption' with a non-empty caption)",
                       "repair or delete that line, or " + FIX)
            continue
        out.setdefault(m["image"], {})[int(m["k"])] = m["caption"].strip()
    return {name: [caps[k] for k in sorted(caps)] for name, caps in out.items()}


def read_split(path: str | os.PathLike) -> list[str]:
    """Image names listed in an official split file (one per line)."""
    return [line.strip() for _, line in files.read_lines(path, "split file", FIX)]


def image_dir(folder: Path) -> Path:
    """The folder holding the JPEGs (``Images/`` or the upstream ``Flicker8k_Dataset/``)."""
    for name in IMAGE_DIRS:
        if (folder / name).is_dir():
            return folder / name
    raise data_error(folder, f"no image folder (looked for {', '.join(IMAGE_DIRS)})", FIX)


def split_sizes(folder: Path) -> dict[str, int]:
    """Images per split, counted from the split files (cheap; missing files are left out)."""
    out = {}
    for split, fname in SPLIT_FILES.items():
        try:
            out[split] = len(read_split(folder / fname))
        except files.DataError:
            pass
    return out


def load(split: str = "train", *, view: str = "image", image_size: int | None = 224, transform=None,
         pil: bool = False, cache: bool = True, strict: bool = False, fallback: str = "synthetic",
         root: str | os.PathLike | None = None) -> Records:
    """Flickr8k ``split`` as a Dataset of dicts (notebooks 04 and 08).

    ``view="image"``: ``{"image", "captions" (5 str), "image_id"}``; ``view="caption"``:
    ``{"image", "caption", "caption_index", "image_id"}``. ``transform`` is applied to the image
    tensor (or PIL image). Missing or empty image files are skipped with a counted warning
    (``strict=True`` raises). Without real data: the synthetic shapes stand-in (see ``fallback``).
    """
    split = split_name(split)
    if view not in VIEWS:
        raise ValueError(f"Flickr8k view must be one of {VIEWS}, not {view!r} "
                         "(question/answer pairs exist only in data.synthetic.shapes(view='vqa'))")
    sources.check_fallback(fallback)
    folder, why = sources.locate(FOLDERS, TOKEN_FILE, root)
    if folder is None:
        sources.missing_real_data(NAME, why, fallback, NAME)
        return synthetic.shapes(split, view=view, image_size=image_size or 224, transform=transform, pil=pil,
                                name=NAME, reason=why)
    skips = SkipLog(f"{NAME} {split}", strict)
    captions = read_captions(folder / TOKEN_FILE, skips)
    split_file = folder / SPLIT_FILES[split]
    names = read_split(split_file)
    images = image_dir(folder)
    sizes = files.scan(images, (".jpg", ".jpeg", ".png"))
    records = []
    for name in names:
        caps = captions.get(name)
        if not caps:
            skips.skip(split_file, f"lists {name} but {TOKEN_FILE} has no captions for it", FIX)
        elif name not in sizes:
            skips.skip(images / name, "image file listed in the split is missing", FIX)
        elif sizes[name] == 0:
            skips.skip(images / name, "empty image file (0 bytes)", FIX)
        elif view == "image":
            records.append({"path": images / name, "image_id": name, "captions": caps})
        else:
            records += [{"path": images / name, "image_id": name, "caption": c, "caption_index": k}
                        for k, c in enumerate(caps)]
    skips.warn(len(names))
    notes = [f"{view} view: {len(records):,} samples from {len(names) - len(skips):,} images"]
    if skips:
        notes.append(f"{len(skips)} listed images skipped (see warning)")
    info = sources.Info(NAME, "real", split, LICENCE, CITATION, split_sizes(folder), path=str(folder),
                        notes=notes, homepage=HOMEPAGE)
    sources.record(info)
    read = functools.partial(read_sample, image_size=image_size, transform=transform, pil=pil, use_cache=cache)
    return Records(records, read, info, strict)


def read_sample(record: dict, image_size: int | None, transform, pil: bool, use_cache: bool) -> dict:
    """One record → sample dict (image decoded, resized and cached)."""
    if pil:
        image = files.read_pil(record["path"], "RGB")
        if image_size:
            image = files.resize_image(image, image_size, "crop")
    else:
        image = to_float(files.read_image(record["path"], image_size, "RGB", "crop", use_cache))
    if transform is not None:
        image = transform(image)
    out = {k: v for k, v in record.items() if k != "path"}
    out["image"] = image
    return out


def summary(root: str | os.PathLike | None = None) -> dict:
    """Status row for ``data.describe()``: real / synthetic fallback / missing, path, split sizes."""
    folder, why = sources.locate(FOLDERS, TOKEN_FILE, root)
    if folder is None:
        return {"status": "synthetic fallback", "path": str(sources.data_root(root) / FOLDERS[0]),
                "splits": dict(synthetic.SHAPE_SPLITS), "detail": why}
    problems = [f for f in (TOKEN_FILE, *SPLIT_FILES.values()) if not (folder / f).is_file()]
    try:
        n_images = len(files.scan(image_dir(folder), (".jpg", ".jpeg", ".png")))
    except files.DataError:
        n_images, problems = 0, problems + ["Images/"]
    status = "missing" if problems or not n_images else "real"
    detail = f"incomplete: missing {', '.join(problems) or 'images'}" if status == "missing" else f"{n_images:,} images"
    return {"status": status, "path": str(folder), "splits": split_sizes(folder), "detail": detail}
