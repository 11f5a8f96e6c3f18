"""Turn upstream archives into the layout the loaders read (``make data``; notebook 00, "Real data").

Each ``prepare_<name>(archives, dest, force)`` builds its folder in a temporary sibling
(``dest/.<name>.partial-*``) and moves it into place with one ``os.replace`` only when it is
complete, so an interrupted or failed prepare never leaves a half-built dataset behind.
The resulting layouts match ``../shared/datasets`` (see its README), except that images and
WAVs are copied unchanged (the prepared copies there were resized / converted to FLAC);
the loaders read both.

- Flickr8k: ``Flicker8k_Dataset/*.jpg`` → ``flickr8k/Images/``; token and split files → ``flickr8k/``.
- Kermany: ``chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*`` → ``chest_xray_pneumonia/`` + ``labels.csv``
  (a Kaggle-style ``val/`` folder is merged into ``train/``, which gives Mendeley's 5,232 train images).
- MedMNIST: the npz is checked (keys, shapes) and copied to ``medmnist/<flag>.npz``.
- FSDD: ``recordings/*.wav`` → ``fsdd/recordings/``.
- ESC-50: ``<top>/audio/*.wav`` + ``<top>/meta/esc50.csv`` → ``esc50/``, where ``<top>`` is the archive's
  top folder (``ESC-50-<commit>/`` for the pinned commit archive, ``ESC-50-master/`` for master.zip);
  the ESC-10 rows are also written as
  16 kHz mono 16-bit FLAC to ``esc10/`` (resampled with ``torchaudio.functional.resample``;
  the shared copy used scipy's ``resample_poly``, so samples may differ by a few LSB).
"""
from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from tqdm.auto import tqdm

from mmcourse.fileio import replace_dir


class PrepareError(Exception):
    """An archive does not have the expected content (wrong file, truncated, or upstream changed)."""


JUNK = re.compile(r"(^|/)(__MACOSX|\.DS_Store|\._[^/]*|Thumbs\.db)(/|$)")


def members(zf: zipfile.ZipFile) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Regular-file members of a zip, skipping macOS/Windows junk; unsafe paths raise (zip-slip)."""
    for info in zf.infolist():
        if info.is_dir() or JUNK.search(info.filename):
            continue
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise PrepareError(f"{zf.filename}: unsafe path {info.filename!r} in archive; refusing to extract")
        yield info, p


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip archive, turning a corrupt one into a :class:`PrepareError`."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None


@contextlib.contextmanager
def staging(dest: Path, target: str) -> Iterator[Path]:
    """A temporary folder next to ``dest/target``; removed unless the caller published it."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=f".{target}.partial-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, final: Path, force: bool) -> Path:
    """Move a finished ``tmp`` folder (or file) to ``final`` atomically; ``force`` replaces an old one."""
    if final.exists() and not force:
        raise PrepareError(f"{final} already exists; pass --force to replace it")
    return replace_dir(tmp, final)


def extract(zf: zipfile.ZipFile, items: list[tuple[zipfile.ZipInfo, Path]], desc: str) -> None:
    """Copy zip members to their target paths, with a progress bar."""
    for info, target in tqdm(items, desc=desc, unit="file", leave=False, mininterval=0.5):
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def note(msg: str) -> None:
    print(f"  note: {msg}", flush=True)


# ------------------------------------------------------------------ per dataset

FLICKR_TEXT = ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
               "Flickr_8k.testImages.txt")


def prepare_flickr8k(archives: list[Path], dest: Path, force: bool = False) -> list[Path]:
    """Flickr8k_Dataset.zip + Flickr8k_text.zip → ``dest/flickr8k``."""
    with staging(dest, "flickr8k") as tmp:
        images = 0
        for archive in archives:
            with open_zip(archive) as zf:
                items = []
                for info, p in members(zf):
                    if p.suffix.lower() in (".jpg", ".jpeg"):
                        items.append((info, tmp / "Images" / p.name))
                    elif p.name.endswith(".txt"):
                        items.append((info, tmp / ("Flickr8k_text_readme.txt" if p.name == "readme.txt" else p.name)))
                images += sum(1 for _, t in items if t.parent.name == "Images")
                extract(zf, items, archive.name)
        missing = [f for f in FLICKR_TEXT if not (tmp / f).is_file()]
        if missing:
            raise PrepareError(f"Flickr8k archives lack {missing}: are these the jbrownlee Flickr8k zips?")
        if images != 8091:
            note(f"Flickr8k has {images} images (the official release has 8,091)")
        listed = {line.strip() for f in FLICKR_TEXT[1:] for line in (tmp / f).read_text().splitlines() if line.strip()}
        absent = [n for n in listed if not (tmp / "Images" / n).is_file()]
        if absent:
            note(f"{len(absent)} images listed in the splits are not in the archive (e.g. {absent[0]})")
        return [publish(tmp, dest / "flickr8k", force)]


_CHEST = re.compile(r"(?:^|/)(train|test|val)/(NORMAL|PNEUMONIA)/([^/]+\.(?:jpe?g|png))$", re.IGNORECASE)


def prepare_chest_xray(archives: list[Path], dest: Path, force: bool = False) -> list[Path]:
    """ChestXRay2017.zip (Mendeley) → ``dest/chest_xray_pneumonia`` with ``labels.csv``."""
    from mmcourse.data.chest_xray import CLASSES, subtype_of

    with staging(dest, "chest_xray_pneumonia") as tmp, open_zip(archives[0]) as zf:
        found = [(info, p, _CHEST.search(str(p))) for info, p in members(zf)]
        found = [(info, p, m) for info, p, m in found if m]
        if not found:
            raise PrepareError(f"{archives[0]}: no train/ or test/ NORMAL|PNEUMONIA images; is this ChestXRay2017.zip?")
        roots = sorted({str(p)[: m.start(1)] for _, p, m in found}, key=len)
        items, rows = [], []
        for info, p, m in found:
            if str(p)[: m.start(1)] != roots[0]:
                continue  # a nested duplicate copy (Kaggle's chest_xray/chest_xray/...)
            split, cls, name = m[1].lower(), m[2].upper(), m[3]
            split = "train" if split == "val" else split
            rel = f"{split}/{cls}/{name}"
            items.append((info, tmp / rel))
            rows.append([rel, split, cls, CLASSES.index(cls), subtype_of(name)])
        extract(zf, items, archives[0].name)
        rows.sort()
        with open(tmp / "labels.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["path", "split", "label", "label_id", "subtype"])
            w.writerows(rows)
        counts = {s: sum(r[1] == s for r in rows) for s in ("train", "test")}
        print(f"  chest X-rays: train {counts['train']:,}, test {counts['test']:,}", flush=True)
        return [publish(tmp, dest / "chest_xray_pneumonia", force)]


def prepare_medmnist(archives: list[Path], dest: Path, force: bool = False, flag: str = "",
                     size: int = 28) -> list[Path]:
    """``<flag>.npz`` → ``dest/medmnist/<flag>.npz`` after checking keys and shapes."""
    from mmcourse.data import medmnist
    from mmcourse.data.errors import DataError

    try:
        counts = medmnist.validate(archives[0], flag, size)
    except DataError as exc:
        raise PrepareError(str(exc)) from None
    folder = dest / "medmnist"
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{flag}.partial-", suffix=".npz")
    os.close(fd)
    try:
        shutil.copyfile(archives[0], tmp)
        print(f"  {flag}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
        return [publish(Path(tmp), folder / medmnist.file_name(flag, size), force)]
    finally:
        Path(tmp).unlink(missing_ok=True)


def prepare_fsdd(archives: list[Path], dest: Path, force: bool = False) -> list[Path]:
    """The FSDD GitHub archive → ``dest/fsdd/recordings/*.wav``."""
    with staging(dest, "fsdd") as tmp, open_zip(archives[0]) as zf:
        items = [(info, tmp / "recordings" / p.name) for info, p in members(zf)
                 if len(p.parts) >= 2 and p.parts[-2] == "recordings" and p.suffix.lower() in (".wav", ".flac")]
        if not items:
            raise PrepareError(f"{archives[0]}: no recordings/*.wav; is this the free-spoken-digit-dataset archive?")
        extract(zf, items, archives[0].name)
        if len(items) != 3000:
            note(f"FSDD has {len(items)} recordings (the pinned commit has 3,000)")
        return [publish(tmp, dest / "fsdd", force)]


def prepare_esc50(archives: list[Path], dest: Path, force: bool = False) -> list[Path]:
    """The ESC-50 GitHub archive → ``dest/esc50`` (as upstream) and ``dest/esc10`` (16 kHz FLAC subset)."""
    from mmcourse.data.files import read_csv

    with staging(dest, "esc50") as tmp, open_zip(archives[0]) as zf:
        found = list(members(zf))
        metas = sorted((p for _, p in found if p.name == "esc50.csv" and p.parent.name == "meta"),
                       key=lambda p: len(p.parts))
        if not metas:
            raise PrepareError(f"{archives[0]}: no meta/esc50.csv; is this the ESC-50 archive?")
        root = metas[0].parent.parent  # ESC-50-<commit>/ for a pinned commit, ESC-50-master/ for master.zip
        meta = next(info for info, p in found if p == metas[0])
        items = [(info, tmp / "audio" / p.name) for info, p in found
                 if p.parent == root / "audio" and p.suffix.lower() in (".wav", ".flac", ".ogg")]
        if not items:
            raise PrepareError(f"{archives[0]}: no audio files in {root / 'audio'}/; is this the ESC-50 archive?")
        items.append((meta, tmp / "meta" / "esc50.csv"))
        extract(zf, items, archives[0].name)
        rows = read_csv(tmp / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10"])
        if len(rows) != 2000 or len(items) - 1 != 2000:
            note(f"ESC-50 has {len(rows)} metadata rows and {len(items) - 1} clips (upstream: 2,000 each)")
        out = [publish(tmp, dest / "esc50", force)]
    if (dest / "esc10").exists() and not force:
        note(f"{dest / 'esc10'} exists; kept (use --force to rebuild it from ESC-50)")
        return out
    return out + [make_esc10(dest / "esc50", dest, rows, force)]


def make_esc10(esc50: Path, dest: Path, rows: list[dict], force: bool, sample_rate: int = 16000) -> Path:
    """Write the ESC-10 rows of ESC-50 as 16 kHz mono 16-bit FLAC + ``meta/esc10.csv``."""
    import numpy as np
    import soundfile as sf
    import torch
    import torchaudio.functional as AF

    from mmcourse.data.files import decode_audio, read_bytes

    keep = [r for r in rows if r["esc10"] in ("True", "true", "1")]
    with staging(dest, "esc10") as tmp:
        (tmp / "audio").mkdir()
        (tmp / "meta").mkdir()
        header = list(rows[0]) if rows else ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
        w.writeheader()
        for r in tqdm(keep, desc="ESC-10 → 16 kHz FLAC", unit="clip", leave=False, mininterval=0.5):
            path = esc50 / "audio" / r["filename"]
            wave, sr = decode_audio(read_bytes(path, "audio file"), path, None, mono=False)  # (C, T)
            mono = torch.as_tensor(wave).reshape(-1, wave.shape[-1]).mean(0)
            if sr != sample_rate:
                mono = AF.resample(mono, sr, sample_rate)
            x = np.clip(np.round(mono.numpy() * 32768), -32768, 32767).astype(np.int16)
            name = Path(r["filename"]).with_suffix(".flac").name
            sf.write(tmp / "audio" / name, x, sample_rate, format="FLAC", subtype="PCM_16")
            w.writerow({**r, "filename": name})
        (tmp / "meta" / "esc10.csv").write_text(buf.getvalue(), encoding="utf-8")
        print(f"  ESC-10: {len(keep)} clips written as {sample_rate // 1000} kHz FLAC", flush=True)
        return publish(tmp, dest / "esc10", force)
