"""Safe readers for dataset files: bytes, text, CSV, images, audio, npz (used by every loader).

Each reader turns a bad input (missing, empty, truncated, corrupt, wrong encoding) into a
:class:`~mmcourse.data.errors.DataError` that names the file and the fix. Decoded images and
log-mel spectrograms go through :mod:`mmcourse.data.cache`.

Audio policy (notebooks 03, 05, 10): a file whose sample rate differs from the one asked
for is **resampled** (``torchaudio.functional.resample``), and a file with several channels
is **downmixed** to mono by averaging; each kind of conversion is announced once with a
:class:`~mmcourse.data.errors.DataWarning`. Truncated, empty or undecodable audio is an error.
"""
from __future__ import annotations

import csv
import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from mmcourse.data import cache
from mmcourse.data.errors import DataError, DataWarning, SkipLog, data_error, missing_path_error

REFETCH = ("restore the file from a good copy, or re-fetch the dataset: "
           "python -m mmcourse fetch data <dataset> --force")
_NOTES_SEEN: set[str] = set()


def note_once(kind: str, message: str) -> None:
    """Warn about a conversion (resampling, downmixing) the first time it happens in this process."""
    if kind not in _NOTES_SEEN:
        _NOTES_SEEN.add(kind)
        warnings.warn(message + " (further files with the same property are converted silently)",
                      DataWarning, stacklevel=3)


def read_bytes(path: str | os.PathLike, what: str = "file", fix: str = REFETCH) -> bytes:
    """The bytes of ``path``; missing, unreadable or zero-byte files raise a :class:`DataError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise missing_path_error(path, what, fix) from None
    except IsADirectoryError:
        raise data_error(path, f"expected a {what} but this is a folder", fix) from None
    except OSError as exc:
        raise data_error(path, f"cannot read {what}: {exc.strerror or exc}", "check the file permissions") from None
    if not data:
        raise data_error(path, f"empty {what} (0 bytes), probably an interrupted download or copy", fix)
    return data


def decode_text(data: bytes, path: str | os.PathLike, fix: str = REFETCH) -> str:
    """UTF-8 text (a BOM is dropped); other encodings raise a :class:`DataError` with the line number."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise data_error(path, f"not valid UTF-8 text (byte {exc.start}, line {line}): "
                         "the file is corrupt or was saved in another encoding",
                         f"convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or {fix}") from None


def read_lines(path: str | os.PathLike, what: str = "text file", fix: str = REFETCH,
               skips: SkipLog | None = None) -> list[tuple[int, str]]:
    """Non-empty lines of a UTF-8 file as ``(line_number, text)``.

    With ``skips``, a line that is not valid UTF-8 is skipped and counted; without, it is an error.
    """
    data = read_bytes(path, what, fix)
    if skips is None:
        text = decode_text(data, path, fix)
        raw = text.splitlines()
    else:
        raw = []
        for i, line in enumerate(data.split(b"\n"), 1):
            try:
                raw.append(line.decode("utf-8-sig" if i == 1 else "utf-8"))
            except UnicodeDecodeError:
                skips.skip(f"{path}:{i}", "line is not valid UTF-8", "convert the file to UTF-8 or " + fix)
                raw.append("")
    return [(i, line.rstrip("\r")) for i, line in enumerate(raw, 1) if line.strip()]


def read_csv(path: str | os.PathLike, columns: list[str], what: str = "CSV file",
             fix: str = REFETCH) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV with a header that must contain ``columns``; ragged rows are errors."""
    text = decode_text(read_bytes(path, what, fix), path, fix)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise data_error(path, f"{what} has no header line", fix) from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise data_error(path, f"{what} lacks the column(s) {missing}; header is {header}", fix)
    rows = []
    for lineno, row in enumerate(reader, 2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise data_error(f"{path}:{lineno}", f"row has {len(row)} fields, header has {len(header)}: {row}", fix)
        rows.append({h: cell.strip() for h, cell in zip(header, row)})
    return rows


def scan(folder: str | os.PathLike, suffixes: tuple[str, ...]) -> dict[str, int]:
    """``{name: size_in_bytes}`` of the files in ``folder`` ending in ``suffixes`` (one cheap listing)."""
    try:
        with os.scandir(folder) as it:
            return {e.name: e.stat().st_size for e in it
                    if e.name.lower().endswith(suffixes) and not e.name.startswith("._") and e.is_file()}
    except FileNotFoundError:
        return {}


# ---------------------------------------------------------------- images

def decode_image(data: bytes, path: str | os.PathLike, mode: str = "RGB", draft: int | None = None):
    """Decode image bytes fully into a PIL image of ``mode``; corrupt or truncated files raise."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        if draft and im.format == "JPEG":
            im.draft(mode, (draft, draft))  # decode big JPEGs at reduced size: much faster
        im.load()
        return im.convert(mode) if im.mode != mode else im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, zlib.error) as exc:
        raise data_error(path, f"cannot decode image ({type(exc).__name__}: {exc}); the file is corrupt or truncated",
                         "delete it and " + REFETCH) from None


def resize_image(im, size: int, how: str = "crop"):
    """``"crop"``: shorter side to ``size`` then centre crop; ``"squash"``: straight to ``size``×``size``."""
    from PIL import Image

    if how == "squash":
        return im.resize((size, size), Image.BILINEAR) if im.size != (size, size) else im
    if how != "crop":
        raise ValueError(f"resize must be 'crop' or 'squash', not {how!r}")
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size)) if (nw, nh) != (size, size) else im


def read_image(path: str | os.PathLike, size: int | None = 224, mode: str = "RGB", resize: str = "crop",
               use_cache: bool = True) -> torch.Tensor:
    """Image file → uint8 tensor ``(C, H, W)`` resized to ``size`` (cached on disk by content hash)."""
    data = read_bytes(path, "image file")

    def compute() -> np.ndarray:
        im = decode_image(data, path, mode, draft=size)
        if size:
            im = resize_image(im, size, resize)
        return np.array(im, dtype=np.uint8)

    arr = cache.cached("image", data, (mode, size, resize), compute, use_cache and size is not None)
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def read_pil(path: str | os.PathLike, mode: str = "RGB"):
    """Image file → fully decoded PIL image (no cache, no resize)."""
    return decode_image(read_bytes(path, "image file"), path, mode)


# ---------------------------------------------------------------- audio

def wav_problem(data: bytes) -> str | None:
    """Why a RIFF/WAVE byte string is unusable (truncated samples, no data chunk), or ``None``."""
    if len(data) < 12 or data[8:12] != b"WAVE":
        return "has a RIFF header but is not a WAVE file"
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"data":
            avail = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and avail < size:
                return (f"is truncated: its header announces {size} bytes of samples "
                        f"but only {avail} are present")
            return None
        pos += 8 + size + (size & 1)
    return "is truncated: no 'data' chunk after the header"


def decode_audio(data: bytes, path: str | os.PathLike, sample_rate: int | None = None,
                 mono: bool = True) -> tuple[torch.Tensor, int]:
    """Audio bytes (wav, flac, ogg, ...) → float32 tensor ``(T,)`` (or ``(C, T)``) and its sample rate.

    Resamples to ``sample_rate`` and downmixes to mono with a one-time note (see module doc).
    """
    wave, sr, _ = _decode_audio(data, path, sample_rate, mono)
    return wave, sr


def _decode_audio(data: bytes, path, sample_rate: int | None, mono: bool) -> tuple[torch.Tensor, int, bool]:
    import soundfile as sf

    if data[:4] == b"RIFF":
        problem = wav_problem(data)
        if problem:
            raise data_error(path, f"WAV file {problem}", "delete it and " + REFETCH)
    try:
        x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        raise data_error(path, f"cannot decode audio ({exc}); the file is corrupt, truncated or not audio",
                         "delete it and " + REFETCH) from None
    if x.shape[0] == 0:
        raise data_error(path, "audio file contains no samples", "delete it and " + REFETCH)
    if not np.isfinite(x).all():
        raise data_error(path, "audio contains NaN or infinite samples", "delete it and " + REFETCH)
    wave = torch.from_numpy(np.ascontiguousarray(x.T))  # (C, T)
    converted = False
    if mono and wave.shape[0] > 1:
        note_once(f"downmix{wave.shape[0]}", f"{path}: {wave.shape[0]} channels downmixed to mono (mean)")
        wave, converted = wave.mean(0, keepdim=True), True
    if sample_rate and sr != sample_rate:
        import torchaudio.functional as AF

        note_once(f"resample{sr}->{sample_rate}", f"{path}: resampled from {sr} Hz to {sample_rate} Hz")
        wave, sr, converted = AF.resample(wave, sr, sample_rate), sample_rate, True
    return (wave[0] if mono else wave), sr, converted


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = True,
               use_cache: bool = True) -> tuple[torch.Tensor, int]:
    """Audio file → ``(waveform, sample_rate)``; see :func:`decode_audio`.

    Waveforms that had to be resampled or downmixed are cached on disk (content-hash key).
    """
    data = read_bytes(path, "audio file")
    k = cache.key(data, "wave", sample_rate, mono) if cache.enabled(use_cache) and sample_rate else None
    if k is not None:
        hit = cache.load("wave", k)
        if hit is not None:
            return torch.from_numpy(hit), sample_rate
    wave, sr, converted = _decode_audio(data, path, sample_rate, mono)
    if k is not None and converted:
        cache.save("wave", k, wave.numpy())
    return wave, sr


def read_logmel(path: str | os.PathLike, sample_rate: int, n_mels: int = 64, use_cache: bool = True) -> torch.Tensor:
    """Audio file → log-mel spectrogram ``(n_mels, frames)`` float32, cached on disk by content hash."""
    from mmcourse.data.transforms import log_mel

    data = read_bytes(path, "audio file")

    def compute() -> np.ndarray:
        wave, sr = decode_audio(data, path, sample_rate)
        return log_mel(wave, sr, n_mels=n_mels).numpy()

    # "uncentred-v2": the framing of notebook 03's transform; entries of the older centred one miss
    return torch.from_numpy(cache.cached("logmel", data, (sample_rate, n_mels, "uncentred-v2"), compute, use_cache))


# ---------------------------------------------------------------- npz

def npz_shapes(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of an ``.npz`` read from the array headers only (cheap)."""
    path = Path(path)
    if not path.is_file():
        raise missing_path_error(path, "npz file", REFETCH)
    if path.stat().st_size == 0:
        raise data_error(path, "empty npz file (0 bytes)", "delete it and " + REFETCH)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                out[name[:-4]] = (tuple(shape), str(dtype))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise data_error(path, f"not a readable npz archive ({exc}); corrupt or truncated",
                         "delete it and " + REFETCH) from None
    return out


def load_npz_arrays(path: str | os.PathLike, keys: list[str]) -> dict[str, np.ndarray]:
    """Load ``keys`` from an ``.npz`` (no pickles); unreadable members raise a :class:`DataError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError) as exc:
        raise data_error(path, f"cannot read arrays {keys} ({type(exc).__name__}: {exc})",
                         "delete it and " + REFETCH) from None


__all__ = ["DataError", "read_bytes", "read_lines", "read_csv", "read_image", "read_pil", "read_audio",
           "read_logmel", "decode_audio", "decode_image", "npz_shapes", "load_npz_arrays", "wav_problem"]
