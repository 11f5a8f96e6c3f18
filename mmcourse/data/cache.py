"""On-disk cache of decoded images and audio features (notebooks 03, 04, 08, 09, 10).

Decoding a JPEG and resizing it, or computing a log-mel spectrogram, costs far more than
reading a small ``.npy`` file. The cache key is a hash of the file's *bytes* plus the
processing parameters, so a changed file or a changed image size never returns a stale
entry, and a renamed file still hits. Writes are atomic (temporary file + ``os.replace``),
so a crash or two DataLoader workers racing never leave a half-written entry.

Location: ``<MMCOURSE_CACHE_DIR>/data_cache/<kind>/`` (not ``<cache>/data``, the default data
folder); ``MMCOURSE_DATA_CACHE=0`` turns it off, :func:`clear` empties it. Size: entries are
uncompressed uint8 / float32 (a 224×224 RGB image is 147 KiB, so all of Flickr8k is ~1.2 GB;
FSDD log-mels are ~12 MB).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

from mmcourse import config
from mmcourse.fileio import atomic_path

VERSION = "1"  # bump when a processing function changes its output


def enabled(requested: bool = True) -> bool:
    """Whether caching is on: ``requested`` and not disabled by ``MMCOURSE_DATA_CACHE=0``."""
    return requested and os.environ.get("MMCOURSE_DATA_CACHE", "1").strip().lower() not in {"0", "off", "false", "no"}


def root() -> Path:
    """The cache folder for decoded data: ``<cache_dir>/data_cache``."""
    return config.cache_dir() / "data_cache"


def key(data: bytes, *params: object) -> str:
    """Content-hash key: blake2b of the file bytes, the parameters and the cache version."""
    h = hashlib.blake2b(data, digest_size=20)
    h.update(repr((VERSION, params)).encode())
    return h.hexdigest()


def path_for(kind: str, k: str) -> Path:
    """Where the entry ``k`` of ``kind`` (e.g. ``"image"``, ``"logmel"``) lives."""
    return root() / kind / k[:2] / f"{k}.npy"


def load(kind: str, k: str) -> np.ndarray | None:
    """The cached array, or ``None`` on a miss (an unreadable entry counts as a miss)."""
    p = path_for(kind, k)
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def save(kind: str, k: str, array: np.ndarray) -> None:
    """Write ``array`` atomically; a full or read-only disk only costs speed, never an error."""
    p = path_for(kind, k)
    try:
        with atomic_path(p) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    except OSError:
        pass


def cached(kind: str, data: bytes, params: tuple, compute: Callable[[], np.ndarray],
           use_cache: bool = True) -> np.ndarray:
    """Return ``compute()``, from the cache when the same bytes were processed with ``params`` before."""
    if not enabled(use_cache):
        return compute()
    k = key(data, kind, *params)
    hit = load(kind, k)
    if hit is not None:
        return hit
    value = compute()
    save(kind, k, value)
    return value


def clear(kind: str | None = None) -> None:
    """Delete the whole data cache, or one ``kind`` of it."""
    import shutil

    target = root() / kind if kind else root()
    shutil.rmtree(target, ignore_errors=True)
