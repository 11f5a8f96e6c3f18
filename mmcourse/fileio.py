"""File integrity and atomic writes: the one sha256 helper and the one atomic-write helper.

Every artifact the course writes (checkpoints, cached features, converted models, prepared
datasets, released notebooks, the dashboard's static files) goes through :func:`atomic_path`
or :func:`replace_dir`, so an interrupted run never leaves a half-written file under the
final name; every artifact it checks goes through :func:`file_digest`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_digest(path: str | os.PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest (``sha256`` by default, ``md5`` for upstreams that publish only that) of a file."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    return file_digest(path, "sha256")


def fsync_dir(directory: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk, where the OS and file system allow it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it.

    ``with atomic_path(p) as tmp: write(tmp)`` - readers see the old file or the whole new one,
    never a partial one. ``fsync=True`` also forces the bytes and the rename to disk
    (checkpoints, which must survive a power cut).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fsync:
        fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move a finished folder (or file) ``tmp`` onto ``final``, moving an existing ``final`` aside first.

    The old copy is renamed away before the new one is renamed in, so ``final`` is never a mix
    of both; the old copy is then deleted.
    """
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
    return final
