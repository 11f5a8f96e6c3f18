"""Download and prepare the real datasets: ``make data``, ``python -m mmcourse fetch data [names]``
and ``python data_scripts/fetch_<name>.py`` (notebook 00, "Getting the real data").

Every download goes to ``<downloads>/<file>.part`` (default ``<MMCOURSE_CACHE_DIR>/downloads``,
never the data folder), resumes with an HTTP ``Range`` request after a dropped connection,
retries with exponential back-off, shows a tqdm progress bar, is checked against the pinned
MD5/SHA-256 and only then renamed into place. A corrupt download is deleted. The prepare step
(:mod:`mmcourse.data.prepare`) builds the dataset folder next to its final place and moves it
in atomically, so a failure leaves nothing half-made in the data folder.

``--mirror DIR`` takes the files from a local folder (air-gapped classrooms: copy the archives
there under their upstream names); ``--mirror URL`` replaces the upstream host (each file is
fetched as ``URL/<file name>``). When everything fails, the message gives the URL, checksum,
expected file name and target folder for a manual download.

Checksums: MedMNIST's come from MedMNIST's own ``info.py``; Flickr8k's are the MD5s pinned by
the mlverse ``torchvision`` R package for the same URLs. The others (Mendeley zip, GitHub
archives generated on the fly) have no published checksum, so they are **trusted on first use**:
the SHA-256 of every file that prepared successfully is recorded in
``<data dir>/checksums.lock.json`` (pinned files too), and every later fetch or prepare of the
same file must match it. A changed file is refused with both hashes and the fix, unless
``--allow-changed`` is given (which accepts it and records the new hash). The prepare step also
checks the content (file counts, CSV columns, npz keys). ``mmcourse doctor`` shows, per
dataset, whether it is pinned, recorded on first use, or not verified yet (:func:`integrity`).

One source is *generated*, not downloaded: ``spoken`` (notebook 10) synthesises its clips with
the ``tts`` model into ``<MMCOURSE_CACHE_DIR>/spoken`` (:mod:`mmcourse.data.spoken`, which keeps
its own sha256 manifest); ``--dest``, ``--mirror`` and the lock do not apply to it.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from mmcourse import config
from mmcourse.fileio import file_digest, write_text_atomic
from mmcourse.data import esc, medmnist, prepare

USER_AGENT = "mmcourse-fetch/0.1 (+https://github.com/; course data downloader)"
CHUNK = 1 << 16
PERMANENT_HTTP = {400, 401, 403, 404, 410, 451}


class FetchError(Exception):
    """A dataset could not be downloaded or prepared; the message says how to finish by hand."""


@dataclass(frozen=True)
class Remote:
    """One upstream file: where it is, what it is called, and how to check it."""

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    approx: str = ""
    note: str = ""

    def checksum(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.md5:
            return f"md5 {self.md5}"
        return ("none published (its sha256 is recorded on first use in checksums.lock.json "
                "and checked on every later use)")


@dataclass(frozen=True)
class Source:
    """A dataset in the registry: its files, the folder it becomes, and how to prepare it."""

    name: str
    files: tuple[Remote, ...]
    target: str
    prepare: Callable[..., list[Path]]
    description: str = ""
    aliases: tuple[str, ...] = field(default=())
    generated: bool = False  # made locally by ``prepare(progress=..., log=...)``: no files, no lock, no target


FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
GH_ARCHIVE_NOTE = ("GitHub builds archives on the fly, so no published checksum: its sha256 is recorded on "
                   "first use and the content is checked")
ESC50_COMMIT = esc.ESC50_COMMIT


def _medmnist_source(flag: str, size: int = 28) -> Source:
    info = medmnist.FLAGS[flag]
    name = f"medmnist:{flag}" + ("" if size == 28 else f"_{size}")
    return Source(name, (Remote(medmnist.url(flag, size), medmnist.file_name(flag, size), md5=info["md5"][size],
                                note="MD5 from MedMNIST info.py (v3.0.2)"),),
                  f"medmnist/{medmnist.file_name(flag, size)}", partial(prepare.prepare_medmnist, flag=flag, size=size),
                  f"MedMNIST {flag} {size}x{size} ({info['licence']}), notebook 09")


def generate_spoken(progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Synthesise every spoken-instruction clip not stored yet (1,242 in all, ~0.25 s each on a CPU)."""
    from mmcourse.data import spoken
    return [spoken.generate(progress=progress)]


def build_registry() -> dict[str, Source]:
    """The upstream sources, by name."""
    reg = {
        "flickr8k": Source("flickr8k", (
            Remote("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
                   "Flickr8k_Dataset.zip", md5="f18a1e2920de5bd84dae7cf08ec78978", approx="1.1 GB",
                   note="MD5 as pinned by the mlverse torchvision R package"),
            Remote("https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
                   "Flickr8k_text.zip", md5="bf6c1abcb8e4a833b7f922104de18627", approx="2.3 MB",
                   note="MD5 as pinned by the mlverse torchvision R package"),
        ), "flickr8k", prepare.prepare_flickr8k,
            "Flickr8k images + captions (research/teaching use), notebooks 04, 08"),
        "chest_xray": Source("chest_xray", (
            Remote("https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
                   "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded", "ChestXRay2017.zip", approx="1.2 GB",
                   note="Mendeley Data doi:10.17632/rscbjbr9sj.2; no checksum published"),
        ), "chest_xray_pneumonia", prepare.prepare_chest_xray, "Kermany chest X-rays (CC BY 4.0), notebook 09",
            aliases=("kermany", "chest_xray_pneumonia")),
        "fsdd": Source("fsdd", (
            Remote(f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip",
                   f"free-spoken-digit-dataset-{FSDD_COMMIT}.zip", approx="16 MB", note=GH_ARCHIVE_NOTE),
        ), "fsdd", prepare.prepare_fsdd, "Free Spoken Digit Dataset (CC BY-SA 4.0), notebooks 03, 05, 10"),
        "esc50": Source("esc50", (
            Remote(f"https://github.com/karolpiczak/ESC-50/archive/{ESC50_COMMIT}.zip", f"ESC-50-{ESC50_COMMIT}.zip",
                   approx="616 MiB", note=GH_ARCHIVE_NOTE),
        ), "esc50", prepare.prepare_esc50, "ESC-50 (CC BY-NC 3.0) + its ESC-10 subset (CC BY 3.0), notebooks 03, 10",
            aliases=("esc10", "esc")),
        "spoken": Source("spoken", (), "<cache>/spoken", generate_spoken,
                         "spoken instructions synthesised by the tts model (Piper en_US-joe-medium, CC0), notebook 10",
                         generated=True),
    }
    for flag in medmnist.FLAGS:
        for size in medmnist.SIZES:
            src = _medmnist_source(flag, size)
            reg[src.name] = src
    return reg


REGISTRY: dict[str, Source] = build_registry()
DEFAULT = ("flickr8k", "chest_xray", "medmnist", "fsdd", "esc50", "spoken")
MEDMNIST_DEFAULT = ("pneumoniamnist", "breastmnist")


def resolve(names: list[str]) -> list[Source]:
    """Registry entries for ``names`` (``medmnist`` = the default flags; a bare flag works too)."""
    out: list[Source] = []
    for name in names or list(DEFAULT):
        key = name.lower()
        if key == "medmnist":
            keys = [f"medmnist:{f}" for f in MEDMNIST_DEFAULT]
        elif key in medmnist.FLAGS or key.split("_")[0] in medmnist.FLAGS and key not in REGISTRY:
            keys = ["medmnist:" + key]
        else:
            keys = [next((k for k, s in REGISTRY.items() if key == k or key in s.aliases), key)]
        for k in keys:
            if k not in REGISTRY:
                import difflib

                near = difflib.get_close_matches(k, list(REGISTRY), n=3)
                raise FetchError(f"unknown dataset {name!r}" + (f"; did you mean {', '.join(near)}?" if near else "")
                                 + " (see --list)")
            if REGISTRY[k] not in out:
                out.append(REGISTRY[k])
    return out


# ------------------------------------------------------------------ download

def verify(path: Path, remote: Remote, log: Callable[[str], None] = print) -> str | None:
    """``None`` if ``path`` matches the pinned size/checksum (or none is pinned), else why not.

    Unpinned files are checked against ``checksums.lock.json`` by :func:`check_recorded` instead."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"size {size:,} bytes, expected {remote.size:,}"
    if remote.sha256:
        got = file_digest(path, "sha256")
        return None if got == remote.sha256 else f"sha256 {got}, expected {remote.sha256}"
    if remote.md5:
        got = file_digest(path, "md5")
        return None if got == remote.md5 else f"md5 {got}, expected {remote.md5}"
    return None


# ------------------------------------------------------------------ trust on first use: checksums.lock.json

LOCK_NAME = "checksums.lock.json"
LOCK_VERSION = 1


def lock_path(dest: Path) -> Path:
    """The lock file of a data folder: ``<dest>/checksums.lock.json``."""
    return Path(dest) / LOCK_NAME


def read_lock(dest: Path) -> dict:
    """``{file name: {"sha256", "size", "dataset", "url", "recorded"}}`` from the lock ({} if none)."""
    path = lock_path(dest)
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = doc["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
            raise ValueError("unexpected structure")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FetchError(f"{path}: unreadable checksum lock ({exc}).\n  fix: restore it from a backup, or delete it "
                         "to trust the files of the next download again") from None
    return files


def record(dest: Path, entries: dict[str, dict]) -> None:
    """Add or replace lock entries (atomically rewrites the lock file)."""
    files = {**read_lock(dest), **entries}
    doc = {"version": LOCK_VERSION,
           "about": "sha256 of each downloaded dataset file, recorded on first use by `mmcourse fetch data` "
                    "and checked on every later use; --allow-changed accepts a changed file and re-records it",
           "files": dict(sorted(files.items()))}
    write_text_atomic(lock_path(dest), json.dumps(doc, indent=2) + "\n")


def changed_message(source: Source, remote: Remote, path: Path, entry: dict, found: str, lock: Path) -> str:
    """Why a file whose sha256 differs from the recorded one is refused, and how to proceed."""
    return "\n".join([
        f"{remote.filename} ({source.name}) is not the file recorded on first use: refusing it.",
        f"  recorded sha256: {entry['sha256']}  ({entry.get('size', '?'):,} bytes, first downloaded "
        f"{entry.get('recorded', '?')} from {entry.get('url', '?')}; in {lock})"
        if isinstance(entry.get("size"), int) else
        f"  recorded sha256: {entry['sha256']}  (in {lock})",
        f"  found sha256:    {found}  ({path.stat().st_size:,} bytes, {path})",
        "  The upstream published a different file, or this copy was damaged or tampered with. Nothing was prepared.",
        "  fix: if you trust the new file (check the upstream's changelog), accept it and record its hash:",
        f"         python -m mmcourse fetch data {source.name} --force --allow-changed",
        f"       or delete {path} and run the command again to download it afresh.",
    ])


def check_recorded(path: Path, remote: Remote, source: Source, dest: Path, *, allow_changed: bool = False,
                   log: Callable[[str], None] = print) -> dict | None:
    """Compare ``path`` with its lock entry; return the entry to record (``None``: already recorded).

    A file whose sha256 differs from the recorded one raises :class:`FetchError` unless ``allow_changed``.
    """
    found = file_digest(path, "sha256")
    entry = read_lock(dest).get(remote.filename)
    new = {"sha256": found, "size": path.stat().st_size, "dataset": source.name, "url": remote.url,
           "recorded": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "pinned": "sha256" if remote.sha256 else "md5" if remote.md5 else None}
    if entry is None:
        kind = f"pinned {new['pinned']} verified; " if new["pinned"] else "no checksum is published; "
        log(f"  {remote.filename}: {kind}sha256 {found} will be recorded in {lock_path(dest)} (trust on first use)")
        return new
    if entry["sha256"] == found:
        log(f"  {remote.filename}: matches the sha256 recorded on {entry.get('recorded', 'first use')}")
        return None
    if not allow_changed:
        raise FetchError(changed_message(source, remote, path, entry, found, lock_path(dest)))
    log(f"  --allow-changed: accepting {remote.filename} with sha256 {found} (was {entry['sha256']}); "
        "the new hash will be recorded")
    return new


def integrity(dest: Path | None = None, names: list[str] | None = None) -> list[dict]:
    """Per dataset file: how it is verified (for ``mmcourse doctor``).

    ``status`` is ``pinned md5`` / ``pinned sha256`` (+ ``, sha256 recorded``), ``recorded on first use``
    or ``unverified`` (no published checksum and not downloaded yet: it will be recorded on first use).
    """
    dest = Path(dest) if dest is not None else config.data_dir()
    try:
        lock, problem = read_lock(dest), ""
    except FetchError as exc:
        lock, problem = {}, str(exc).splitlines()[0]
    sources = resolve(names or list(DEFAULT))
    sources += [REGISTRY[e["dataset"]] for e in lock.values()
                if e.get("dataset") in REGISTRY and REGISTRY[e["dataset"]] not in sources]
    rows = []
    for s in sources:
        for r in s.files:
            entry = lock.get(r.filename)
            pinned = "sha256" if r.sha256 else "md5" if r.md5 else ""
            if pinned:
                status = f"pinned {pinned}" + (", sha256 recorded" if entry else "")
            else:
                status = "recorded on first use" if entry else "unverified"
            detail = (f"sha256 {entry['sha256'][:16]}… recorded {entry.get('recorded', '?')}" if entry
                      else problem or ("not downloaded yet" if pinned else "none published; recorded on first use"))
            rows.append({"dataset": s.name, "file": r.filename, "status": status, "detail": detail})
    return rows


def format_integrity(dest: Path | None = None) -> str:
    """:func:`integrity` as a text table (``mmcourse doctor``)."""
    dest = Path(dest) if dest is not None else config.data_dir()
    lines = [f"{'dataset':<24} {'verification':<28} {'detail':<52} file"]
    for r in integrity(dest):
        lines.append(f"{r['dataset']:<24} {r['status']:<28} {r['detail']:<52} {r['file']}")
    lines.append(f"(lock file: {lock_path(dest)}{'' if lock_path(dest).is_file() else ', not written yet'})")
    return "\n".join(lines)


def mirror_location(mirror: str, remote: Remote, source: Source) -> tuple[str, Path | None]:
    """Where ``remote`` is in ``mirror``: ``(url, None)`` for an HTTP mirror, ``("", path)`` for a folder."""
    parsed = urllib.parse.urlparse(mirror)
    if parsed.scheme in ("http", "https"):
        return mirror.rstrip("/") + "/" + urllib.parse.quote(remote.filename), None
    base = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else mirror).expanduser()
    if not base.is_dir():
        raise FetchError(f"--mirror {mirror}: not an http(s) URL and not an existing folder")
    for cand in (base / remote.filename, base / source.name.split(":")[0] / remote.filename,
                 base / source.target.split("/")[0] / remote.filename):
        if cand.is_file():
            return "", cand
    raise FetchError(f"--mirror {base}: {remote.filename} is not in that folder (looked in {base}, "
                     f"{base / source.name.split(':')[0]})")


def http_get(url: str, part: Path, timeout: float, progress: bool, size: int | None) -> None:
    """One attempt: GET ``url`` into ``part``, resuming from its current length with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if have and resp.status == 206:
            start = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if start.isdigit() and int(start) != have:
                have = 0  # the server resumed somewhere else: start over
        elif have:
            have = 0  # the server ignored Range (200): start over
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = have + expected if expected is not None else size
        got = 0
        with open(part, "ab" if have else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5],
                disable=not progress, leave=False, mininterval=0.5) as bar:
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if expected is not None and got < expected:
            raise ConnectionError(f"connection closed after {have + got:,} of {have + expected:,} bytes")


def http_download(url: str, part: Path, *, retries: int, backoff: float, timeout: float, progress: bool,
                  size: int | None = None, log: Callable[[str], None] = print) -> None:
    """GET with resume and exponential back-off; raises the last error when every attempt failed."""
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            done = part.stat().st_size if part.exists() else 0
            log(f"  retry {attempt}/{retries} in {delay:.1f}s (have {done:,} bytes) after: {last}")
            time.sleep(delay)
        try:
            http_get(url, part, timeout, progress, size)
            return
        except urllib.error.HTTPError as exc:
            last = exc
            if exc.code in PERMANENT_HTTP:
                break
            if exc.code == 416:  # our partial file is not a prefix the server knows: start over
                part.unlink(missing_ok=True)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            last = exc
    raise last if last else RuntimeError("download failed")


def copy_file(src: Path, part: Path, progress: bool) -> None:
    """Copy a mirror file to ``part`` with a progress bar."""
    with open(src, "rb") as fi, open(part, "wb") as fo, tqdm(
            total=src.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=src.name,
            disable=not progress, leave=False, mininterval=0.5) as bar:
        for block in iter(lambda: fi.read(1 << 20), b""):
            fo.write(block)
            bar.update(len(block))


def manual_help(source: Source, remote: Remote, downloads: Path, dest: Path, reason: str) -> str:
    """The message shown when a download fails for good: how to finish by hand."""
    return "\n".join([
        f"Could not get {remote.filename} for {source.name}: {reason}",
        "To finish by hand, download the file yourself and run the same command again:",
        f"  URL:       {remote.url}",
        f"  checksum:  {remote.checksum()}",
        *([f"  size:      {remote.size:,} bytes" if remote.size else f"  size:      about {remote.approx}"]
          if remote.size or remote.approx else []),
        f"  save as:   {downloads / remote.filename}",
        f"  then run:  python -m mmcourse fetch data {source.name}   (prepares it into {dest / source.target})",
        f"Or put {remote.filename} in any folder and add  --mirror THAT_FOLDER  (or --mirror http://your.mirror/).",
    ])


def download(remote: Remote, source: Source, downloads: Path, dest: Path, *, mirror: str | None = None,
             retries: int = 4, backoff: float = 1.0, timeout: float = 60.0, progress: bool = True,
             log: Callable[[str], None] = print) -> Path:
    """Get one verified file into ``downloads``: cached, from a mirror, or over HTTP with resume."""
    final = downloads / remote.filename
    if final.is_file():
        if verify(final, remote, log) is None:
            log(f"  using {final} (already downloaded)")
            return final
        final.unlink()
    downloads.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    url, local = mirror_location(mirror, remote, source) if mirror else (remote.url, None)
    resumed = local is None and part.is_file() and part.stat().st_size > 0
    try:
        if local is not None:
            log(f"  copying {local}")
            part.unlink(missing_ok=True)
            copy_file(local, part, progress)
        else:
            log(f"  downloading {url}" + (f" (resuming at {part.stat().st_size:,} bytes)" if resumed else ""))
            http_download(url, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress,
                          size=remote.size, log=log)
            if resumed and verify(part, remote, lambda _: None):
                log("  the resumed file does not verify (left over from another version?); downloading it again")
                part.unlink()
                http_download(url, part, retries=retries, backoff=backoff, timeout=timeout, progress=progress,
                              size=remote.size, log=log)
    except FetchError:
        raise
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        reason = f"HTTP {exc.code} {exc.reason} from {url}"
        raise FetchError(manual_help(source, remote, downloads, dest, reason)) from None
    except Exception as exc:  # noqa: BLE001 - network errors of every kind end in the same advice
        kept = part.exists() and part.stat().st_size > 0
        reason = f"{type(exc).__name__}: {exc} (from {url}, after {retries + 1} attempts)"
        if kept:
            reason += f"; the partial download is kept in {part} and the next run resumes it"
        raise FetchError(manual_help(source, remote, downloads, dest, reason)) from None
    problem = verify(part, remote, log)
    if problem:
        part.unlink(missing_ok=True)
        raise FetchError(manual_help(source, remote, downloads, dest,
                                     f"checksum mismatch: got {problem}; the corrupt file was deleted"))
    os.replace(part, final)
    return final


# ------------------------------------------------------------------ fetch + prepare

def fetch(source: Source, dest: Path, downloads: Path, *, mirror: str | None = None, force: bool = False,
          keep_archives: bool = False, retries: int = 4, backoff: float = 1.0, timeout: float = 60.0,
          progress: bool = True, allow_changed: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """Download (if needed), check against ``checksums.lock.json`` and prepare one dataset into ``dest``.

    Files not yet in the lock are recorded once the prepare step succeeded (so a broken first
    download is never trusted); a file that differs from its record is refused unless
    ``allow_changed``. Returns the paths made."""
    if source.generated:
        return make_generated(source, progress=progress, log=log)
    target = dest / source.target
    if target.exists() and not force:
        log(f"{source.name}: already prepared at {target} (use --force to redo)")
        return [target]
    log(f"{source.name}: {source.description}")
    archives = [download(r, source, downloads, dest, mirror=mirror, retries=retries, backoff=backoff,
                         timeout=timeout, progress=progress, log=log) for r in source.files]
    to_record = {}
    for remote, archive in zip(source.files, archives):
        entry = check_recorded(archive, remote, source, dest, allow_changed=allow_changed, log=log)
        if entry is not None:
            to_record[remote.filename] = entry
    try:
        made = source.prepare(archives, dest, force=force)
    except prepare.PrepareError as exc:
        raise FetchError(f"{source.name}: preparing failed: {exc}\n  nothing was written to {dest}; "
                         f"the downloaded files are in {downloads}") from None
    if to_record:
        record(dest, to_record)
        log(f"{source.name}: sha256 recorded in {lock_path(dest)}")
    if not keep_archives:
        for a in archives:
            a.unlink(missing_ok=True)
    for p in made:
        log(f"{source.name}: ready at {p}")
    return made


def make_generated(source: Source, *, progress: bool = True, log: Callable[[str], None] = print) -> list[Path]:
    """Make a generated source (``spoken``): what is stored and intact is kept, the rest is made."""
    from mmcourse.data.errors import DataError
    from mmcourse.pretrained import ModelError

    log(f"{source.name}: {source.description}")
    try:
        made = source.prepare(progress=progress, log=log)
    except (ModelError, DataError) as exc:
        raise FetchError(f"{source.name}: generating failed: {exc}") from None
    for p in made:
        log(f"{source.name}: ready at {p}")
    return made


def list_registry(log: Callable[[str], None] = print) -> None:
    """Print the registry (``--list``)."""
    log(f"{'name':<24} {'size':>15}  {'checksum':<8} {'target':<34} files")
    for name, s in REGISTRY.items():
        if name.startswith("medmnist:") and "_" in name.split(":")[1]:
            continue
        size = " + ".join(r.approx for r in s.files if r.approx) or "-"
        pinned = all(r.md5 or r.sha256 for r in s.files)
        kind = ("sha256" if all(r.sha256 for r in s.files) else "md5") if pinned else "1st-use"
        kind = "local" if s.generated else kind
        log(f"{name:<24} {size:>15}  {kind:<8} {s.target:<34} {', '.join(r.filename for r in s.files)}")
    log("MedMNIST flags also come at 64/128/224 px: medmnist:<flag>_64 etc. "
        f"`medmnist` alone fetches {', '.join(MEDMNIST_DEFAULT)}; `esc10` is made from esc50; "
        "`spoken` is synthesised locally by the tts model (into the cache, not --dest).")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmcourse fetch data", description="Download and prepare the course's real "
                                "datasets (default: " + " ".join(DEFAULT) + ").")
    p.add_argument("names", nargs="*", help="datasets to fetch (see --list)")
    p.add_argument("--list", action="store_true", help="print the registry of upstream sources and exit")
    p.add_argument("--mirror", metavar="DIR|URL", help="take files from this folder or host instead of upstream")
    p.add_argument("--dest", type=Path, help="data folder to prepare into (default: MMCOURSE_DATA_DIR)")
    p.add_argument("--downloads", type=Path, help="where archives are downloaded (default: <cache>/downloads)")
    p.add_argument("--force", action="store_true", help="prepare again even if the dataset folder exists")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives after preparing")
    p.add_argument("--retries", type=int, default=4, help="retries per file after a network error (default 4)")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--allow-changed", action="store_true",
                   help="accept a file whose sha256 differs from the one recorded on first use in "
                        "<dest>/checksums.lock.json, and record the new hash")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``python -m mmcourse fetch data [names] [--mirror X] [--dest DIR] [--list]``. Returns 0 on success."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        list_registry()
        return 0
    try:
        sources = resolve(args.names)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dest = (args.dest or config.data_dir()).expanduser().resolve()
    downloads = (args.downloads or config.cache_dir() / "downloads").expanduser().resolve()
    failed = []
    for source in sources:
        try:
            fetch(source, dest, downloads, mirror=args.mirror, force=args.force, keep_archives=args.keep_archives,
                  retries=args.retries, backoff=args.backoff, timeout=args.timeout, progress=not args.no_progress,
                  allow_changed=args.allow_changed)
        except FetchError as exc:
            failed.append(source.name)
            print(f"\nerror: {exc}\n", file=sys.stderr, flush=True)
    if failed:
        print(f"fetch failed for: {', '.join(failed)} (see the messages above)", file=sys.stderr)
        return 1
    fetched = [s.name for s in sources if not s.generated]
    made = [s.name for s in sources if s.generated]
    hint = ("" if dest == config.data_dir() or not fetched
            else f"\n  point the course at it: export MMCOURSE_DATA_DIR={dest}")
    where = ([f"{', '.join(fetched)} in {dest}"] if fetched else []) + ([f"{', '.join(made)} in {config.cache_dir()}"]
                                                                       if made else [])
    print(f"done: {'; '.join(where)}{hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

