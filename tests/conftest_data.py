"""Fixtures for the data tests (imported explicitly by tests/test_data_*.py).

- ``real_data``: MMCOURSE_DATA_DIR (or <repo>/../shared/datasets) with the prepared real
  datasets; tests that need it skip with a clear reason when it is absent.
- ``no_data``: MMCOURSE_DATA_DIR pointed at an empty folder, so loaders fall back to synthetic.
- ``data_cache``: an isolated MMCOURSE_CACHE_DIR per test (``shared_cache``: one per session).
- ``record_file``: MMCOURSE_RECORD_FILE, to check what goes to build/report.json.
- ``http_server``: a loopback http.server (127.0.0.1, random port) serving in-memory files
  with switchable faults: drop the connection mid-file, corrupt bytes, 404, no Range support.
- ``upstream``: small archives built in the true upstream formats of every dataset.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """The prepared datasets: MMCOURSE_DATA_DIR if set, else <repo>/../shared/datasets; None if absent."""
    env = os.environ.get("MMCOURSE_DATA_DIR", "").strip()
    cand = Path(env) if env else REPO.parent / "shared" / "datasets"
    return cand.resolve() if cand.is_dir() and any(cand.iterdir()) else None


REAL_DIR = real_data_dir()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mmcourse-cache")


@pytest.fixture
def real_data(monkeypatch, shared_cache) -> Path:
    """The real prepared datasets (skips when absent); the cache goes to a session tmp folder."""
    if REAL_DIR is None:
        where = os.environ.get("MMCOURSE_DATA_DIR") or REPO.parent / "shared" / "datasets"
        pytest.skip(f"real datasets absent ({where} is missing or empty): set MMCOURSE_DATA_DIR to the "
                    "prepared data, e.g. ../shared/datasets")
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(REAL_DIR))
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(shared_cache))
    return REAL_DIR


def need_real(*parts: str) -> Path:
    """Path under the real data dir, or skip the test with the reason."""
    if REAL_DIR is None or not (REAL_DIR.joinpath(*parts)).exists():
        pytest.skip(f"real data {'/'.join(parts)} absent under MMCOURSE_DATA_DIR={REAL_DIR}")
    return REAL_DIR.joinpath(*parts)


@pytest.fixture
def data_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def no_data(tmp_path, monkeypatch, data_cache) -> Path:
    """An empty MMCOURSE_DATA_DIR: every loader must fall back to its synthetic stand-in."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(empty))
    return empty


@pytest.fixture
def record_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "record.jsonl"
    monkeypatch.setenv("MMCOURSE_RECORD_FILE", str(path))
    return path


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------ loopback HTTP server

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        srv = self.server
        name = self.path.split("?", 1)[0].lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        entry = srv.files.get(name)
        if entry is None or entry["mode"] == "404":
            body = b"not found"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data, mode = entry["data"], entry["mode"]
        if mode == "corrupt":
            data = bytes(b ^ 0x5A if i % 97 == 0 else b for i, b in enumerate(data))
        start = 0
        rng = self.headers.get("Range")
        if rng and mode != "norange" and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "drop" and entry["drops"] > 0:
            entry["drops"] -= 1
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class LoopbackServer:
    """Serve in-memory files over HTTP on 127.0.0.1 with switchable faults."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests

    def add(self, name: str, data: bytes, mode: str = "ok", drops: int = 1) -> str:
        """Serve ``data`` at ``/name``; mode ok | drop | corrupt | 404 | norange. Returns the URL."""
        self.httpd.files[name] = {"data": data, "mode": mode, "drops": drops}
        return f"{self.url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()


# ------------------------------------------------------------------ upstream-format fixture archives

def _jpeg(seed: int, size=(40, 30), mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _wav(seed: int, sr: int, seconds: float, channels: int = 1) -> bytes:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    x = (rng.normal(0, 0.2, (int(sr * seconds), channels))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


FLICKR_IMAGES = [f"{1000 + i}_abc{i}.jpg" for i in range(8)]
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
ESC50_COMMIT = "33c8ce9eb2cf0b1c2f8bcf322eb349b6be34dbb6"


def build_upstream() -> dict[str, dict[str, bytes]]:
    """Tiny archives in the upstream formats: ``{dataset: {upstream file name: bytes}}``."""
    names = FLICKR_IMAGES
    token = "".join(f"{n}#{k}\tcaption {k} of {n} .\n" for n in names for k in range(5))
    token += "".join(f"{names[0]}.1#{k}\tghost caption {k}\n" for k in range(5))  # the upstream quirk
    flickr_images = {f"Flicker8k_Dataset/{n}": _jpeg(i) for i, n in enumerate(names)}
    flickr_images["__MACOSX/Flicker8k_Dataset/._" + names[0]] = b"\x00\x05\x16\x07junk"
    flickr_text = {"Flickr8k.token.txt": token.encode(),
                   "Flickr_8k.trainImages.txt": "\n".join(names[:4]).encode() + b"\n",
                   "Flickr_8k.devImages.txt": "\n".join(names[4:6]).encode() + b"\n",
                   "Flickr_8k.testImages.txt": "\n".join(names[6:8]).encode() + b"\n",
                   "Flickr8k.lemma.token.txt": token.encode(),
                   "readme.txt": b"Flickr8k text readme\n"}
    chest = {}
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            chest[f"chest_xray/{split}/NORMAL/IM-{100 + i:04d}-0001.jpeg"] = _jpeg(10 + i, (60, 48), "L")
            chest[f"chest_xray/{split}/PNEUMONIA/person{i + 1}_{'bacteria' if i % 2 == 0 else 'virus'}_{i}.jpeg"] = \
                _jpeg(20 + i, (60, 48), "RGB")
    chest["chest_xray/train/NORMAL/.DS_Store"] = b"\x00\x00\x00\x01Bud1"
    chest["__MACOSX/chest_xray/._train"] = b"junk"
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    np.savez(buf, train_images=rng.integers(0, 255, (12, 28, 28), dtype=np.uint8),
             val_images=rng.integers(0, 255, (4, 28, 28), dtype=np.uint8),
             test_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
             train_labels=rng.integers(0, 2, (12, 1), dtype=np.uint8),
             val_labels=rng.integers(0, 2, (4, 1), dtype=np.uint8),
             test_labels=rng.integers(0, 2, (6, 1), dtype=np.uint8))
    fsdd_root = f"free-spoken-digit-dataset-{FSDD_COMMIT}"
    fsdd = {f"{fsdd_root}/README.md": b"# FSDD\n", f"{fsdd_root}/utils/spectogramer.py": b"# code\n"}
    for d in range(2):
        for spk in ("george", "jackson"):
            for idx in (0, 5, 6):
                fsdd[f"{fsdd_root}/recordings/{d}_{spk}_{idx}.wav"] = _wav(d * 100 + idx, 8000, 0.2)
    esc_rows = ["filename,fold,target,category,esc10,src_file,take"]
    esc_root = f"ESC-50-{ESC50_COMMIT}"  # GitHub's archive of a commit: one top folder named after it
    esc = {}
    for fold in (1, 2):
        for target, cat, is10 in ((0, "dog", True), (5, "cat", False)):
            fname = f"{fold}-{1000 + target}-A-{target}.wav"
            esc_rows.append(f"{fname},{fold},{target},{cat},{is10},{1000 + target},A")
            esc[f"{esc_root}/audio/{fname}"] = _wav(fold * 10 + target, 44100, 0.25)
    esc[f"{esc_root}/meta/esc50.csv"] = ("\n".join(esc_rows) + "\n").encode()
    esc[f"{esc_root}/README.md"] = b"# ESC-50\n"
    return {
        "flickr8k": {"Flickr8k_Dataset.zip": _zip(flickr_images), "Flickr8k_text.zip": _zip(flickr_text)},
        "chest_xray": {"ChestXRay2017.zip": _zip(chest)},
        "medmnist": {"breastmnist.npz": buf.getvalue()},
        "fsdd": {f"free-spoken-digit-dataset-{FSDD_COMMIT}.zip": _zip(fsdd)},
        "esc50": {f"ESC-50-{ESC50_COMMIT}.zip": _zip(esc)},
    }


@pytest.fixture(scope="session")
def upstream() -> dict[str, dict[str, bytes]]:
    return build_upstream()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
