"""Fetch + prepare against real HTTP on loopback (127.0.0.1, random port): normal download,
resume after a dropped connection, corrupt bytes, 404, network down, mirror folder and host.
Archives are tiny fixtures built in the true upstream formats; no other host is contacted."""
from __future__ import annotations

import io
import json
import re
import runpy
import socket
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest_data import ESC50_COMMIT, REPO, md5, sha256

from mmcourse import data
from mmcourse.data import fetch, prepare

DATASETS = {"flickr8k": "flickr8k", "chest_xray": "chest_xray", "medmnist:breastmnist": "medmnist",
            "fsdd": "fsdd", "esc50": "esc50"}
FAST = ["--backoff", "0.01", "--timeout", "10", "--no-progress"]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test here that tries to reach a host other than 127.0.0.1."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"test tried to reach {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)


def dead_url() -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def point_registry(monkeypatch, upstream, name: str, base: str | None = None, server=None, mode: str = "ok",
                   pin: bool = True) -> dict[str, bytes]:
    """Make registry entry ``name`` use the fixture archives, served by ``server`` (or at ``base``)."""
    src = fetch.REGISTRY[name]
    files, blobs = [], {}
    for r in src.files:
        blob = upstream[DATASETS[name]][r.filename]
        blobs[r.filename] = blob
        url = server.add(r.filename, blob, mode) if server else f"{base}/{r.filename}"
        files.append(replace(r, url=url, md5=None, sha256=sha256(blob) if pin else None, size=None))
    monkeypatch.setitem(fetch.REGISTRY, name, replace(src, files=tuple(files)))
    return blobs


@pytest.fixture
def dirs(tmp_path, monkeypatch, data_cache):
    dest, dl = tmp_path / "data", tmp_path / "downloads"
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(dest))
    return dest, dl


def run(dest: Path, dl: Path, *names: str, extra=()) -> int:
    return fetch.main([*names, "--dest", str(dest), "--downloads", str(dl), *FAST, *extra])


def leftovers(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*")]


def test_download_and_prepare_every_dataset(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    for name in DATASETS:
        point_registry(monkeypatch, upstream, name, server=http_server)
    assert run(dest, dl, *DATASETS) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["checksums.lock.json", "chest_xray_pneumonia", "esc10", "esc50",
                                                       "flickr8k", "fsdd", "medmnist"]
    assert not leftovers(dl), "archives are removed after preparing unless --keep-archives"
    fl = data.load("flickr8k", "train", image_size=32)
    assert fl.info.source == "real" and len(fl) == 4 and all(len(r["captions"]) == 5 for r in fl.records)
    assert fl[0]["image"].shape == (3, 32, 32) and (dest / "flickr8k" / "Images").is_dir()
    assert {s: len(data.load("flickr8k", s)) for s in ("val", "test")} == {"val": 2, "test": 2}
    assert (dest / "chest_xray_pneumonia" / "labels.csv").read_text().count("\n") == 11
    assert len(data.load("chest_xray", "trainval")) == 6 and len(data.load("chest_xray", "test", image_size=16)) == 4
    assert data.load("chest_xray", "test", image_size=16)[0]["image"].shape == (1, 16, 16)
    with pytest.warns(data.DataWarning, match="partial or modified"):
        assert len(data.load("breastmnist", "train")) == 12
    tr, te = data.load("fsdd", "train"), data.load("fsdd", "test")
    assert (len(tr), len(te)) == (8, 4) and tr[0]["audio"].shape == (1600,)
    assert len(data.load("esc50", "all")) == 4
    esc10 = data.load("esc10", "all")
    assert len(esc10) == 2 and str(esc10.records[0]["path"]).endswith(".flac")
    assert esc10[0]["audio"].shape == (4000,) and esc10.info.path.endswith("esc10")
    assert {r["name"]: r["status"] for r in data.describe()}["fsdd"] == "real"
    assert not [p for p in dest.iterdir() if p.name.startswith(".")], "no staging folders left behind"


def test_resume_after_dropped_connection(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    blobs = point_registry(monkeypatch, upstream, "fsdd", server=http_server, mode="drop")
    (name, blob), = blobs.items()
    argv = ["fsdd", "--dest", str(dest), "--downloads", str(dl), "--backoff", "0.01", "--keep-archives"]
    assert fetch.main(argv) == 0  # with progress bars
    got = [r for r in http_server.requests if r[0] == name]
    assert len(got) == 2 and got[0][1] is None and got[1][1] == f"bytes={len(blob) // 2}-"
    assert (dl / name).read_bytes() == blob, "resumed file must be byte-identical"
    assert "retry 1/4" in capsys.readouterr().out
    assert len(data.load("fsdd", "train")) == 8


def test_resume_partial_file_from_an_earlier_run(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    blobs = point_registry(monkeypatch, upstream, "esc50", server=http_server)
    (name, blob), = blobs.items()
    dl.mkdir(parents=True)
    (dl / f"{name}.part").write_bytes(blob[:1000])
    assert run(dest, dl, "esc50", extra=["--keep-archives"]) == 0
    assert http_server.requests == [(name, "bytes=1000-")]
    assert (dl / name).read_bytes() == blob


def test_stale_partial_file_is_downloaded_again(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "fsdd", server=http_server).items()
    dl.mkdir(parents=True)
    (dl / f"{name}.part").write_bytes(b"x" * 500)  # not a prefix of this file
    assert run(dest, dl, "fsdd", extra=["--keep-archives"]) == 0
    assert http_server.requests == [(name, "bytes=500-"), (name, None)]
    assert (dl / name).read_bytes() == blob and "downloading it again" in capsys.readouterr().out


def test_server_ignoring_range_restarts_cleanly(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "fsdd", server=http_server, mode="norange").items()
    dl.mkdir(parents=True)
    (dl / f"{name}.part").write_bytes(b"stale bytes from another file")
    assert run(dest, dl, "fsdd", extra=["--keep-archives"]) == 0
    assert (dl / name).read_bytes() == blob


def test_corrupt_download_is_rejected_and_nothing_is_left(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "chest_xray", server=http_server, mode="corrupt").items()
    assert run(dest, dl, "chest_xray") == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and sha256(blob) in err and "corrupt file was deleted" in err
    assert not dest.exists() and not leftovers(dl)


def test_404_gives_manual_download_instructions(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "fsdd", server=http_server, mode="404").items()
    assert run(dest, dl, "fsdd") == 1
    err = capsys.readouterr().err
    url = fetch.REGISTRY["fsdd"].files[0].url
    for needle in ("HTTP 404", f"URL:       {url}", f"sha256 {sha256(blob)}", f"save as:   {dl / name}",
                   str(dest / "fsdd"), "--mirror"):
        assert needle in err, needle
    assert len(http_server.requests) == 1, "a 404 is final: no retries"
    assert not dest.exists() and not leftovers(dl)


def test_network_down_retries_then_explains(upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    point_registry(monkeypatch, upstream, "medmnist:breastmnist", base=dead_url())
    assert fetch.main(["breastmnist", "--dest", str(dest), "--downloads", str(dl), "--retries", "2", *FAST]) == 1
    out, err = capsys.readouterr()
    assert out.count("retry ") == 2 and "after 3 attempts" in err
    assert "breastmnist.npz" in err and "medmnist/breastmnist.npz" in err
    assert not dest.exists() and not leftovers(dl)


def test_mirror_directory(upstream, dirs, monkeypatch, tmp_path):
    dest, dl = dirs
    mirror = tmp_path / "usb-stick"
    (mirror / "fsdd").mkdir(parents=True)
    for name in ("fsdd", "flickr8k"):
        for fname, blob in point_registry(monkeypatch, upstream, name, base=dead_url()).items():
            (mirror / ("fsdd" if name == "fsdd" else "") / fname).write_bytes(blob)
    assert run(dest, dl, "fsdd", "flickr8k", extra=["--mirror", str(mirror), "--retries", "0"]) == 0
    assert len(data.load("fsdd", "test")) == 4 and len(data.load("flickr8k", "train")) == 4


def test_mirror_url_replaces_the_host(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    for fname, blob in point_registry(monkeypatch, upstream, "medmnist:breastmnist", base=dead_url()).items():
        http_server.add(fname, blob)
    assert run(dest, dl, "medmnist:breastmnist", extra=["--mirror", http_server.url + "/", "--retries", "0"]) == 0
    assert http_server.requests == [("breastmnist.npz", None)]
    assert (dest / "medmnist" / "breastmnist.npz").is_file()


def test_mirror_folder_without_the_file(upstream, dirs, monkeypatch, tmp_path, capsys):
    dest, dl = dirs
    point_registry(monkeypatch, upstream, "fsdd", base=dead_url())
    (tmp_path / "empty-mirror").mkdir()
    assert run(dest, dl, "fsdd", extra=["--mirror", str(tmp_path / "empty-mirror")]) == 1
    assert "is not in that folder" in capsys.readouterr().err and not dest.exists()


def lock_of(dest: Path) -> dict:
    return json.loads((dest / fetch.LOCK_NAME).read_text())["files"]


def with_extra_member(blob: bytes, name: str = "NEWS.md") -> bytes:
    """The same archive with one more file: what an upstream re-release looks like."""
    buf = io.BytesIO(blob)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(name, b"a new upstream release\n")
    return buf.getvalue()


def test_unpinned_file_is_trusted_on_first_use_then_verified(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "fsdd", server=http_server, pin=False).items()
    assert run(dest, dl, "fsdd") == 0
    entry = lock_of(dest)[name]
    assert (entry["sha256"], entry["size"], entry["pinned"]) == (sha256(blob), len(blob), None)
    assert entry["dataset"] == "fsdd"
    assert "trust on first use" in capsys.readouterr().out
    assert run(dest, dl, "fsdd", extra=["--force"]) == 0  # second use: downloaded again, checked against the lock
    assert "matches the sha256 recorded" in capsys.readouterr().out and lock_of(dest)[name] == entry

    new = with_extra_member(blob)
    http_server.add(name, new)  # the upstream changes the file behind the same URL
    assert run(dest, dl, "fsdd", extra=["--force"]) == 1
    err = capsys.readouterr().err
    for needle in (name, f"recorded sha256: {sha256(blob)}", f"found sha256:    {sha256(new)}",
                   "--force --allow-changed", f"delete {dl / name}"):
        assert needle in err, needle
    assert lock_of(dest)[name] == entry, "a refused file is never recorded"
    assert (dest / "fsdd" / "recordings" / "0_george_0.wav").is_file(), "the prepared data is left alone"
    assert (dl / name).read_bytes() == new, "the refused file is kept, so accepting it needs no new download"

    served = len(http_server.requests)
    assert run(dest, dl, "fsdd", extra=["--force", "--allow-changed"]) == 0
    assert len(http_server.requests) == served and "--allow-changed: accepting" in capsys.readouterr().out
    assert lock_of(dest)[name]["sha256"] == sha256(new)
    assert run(dest, dl, "fsdd", extra=["--force"]) == 0, "the re-recorded hash verifies from now on"


def test_damaged_local_copy_is_refused(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    (name, blob), = point_registry(monkeypatch, upstream, "esc50", server=http_server, pin=False).items()
    assert run(dest, dl, "esc50", extra=["--keep-archives"]) == 0
    (dl / name).write_bytes(with_extra_member(blob, "stray.txt"))
    assert run(dest, dl, "esc50", extra=["--force"]) == 1
    assert "not the file recorded on first use" in capsys.readouterr().err


def test_pinned_md5_file_also_gets_its_sha256_recorded(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    src = fetch.REGISTRY["medmnist:breastmnist"]
    blob = upstream["medmnist"]["breastmnist.npz"]
    remote = replace(src.files[0], url=http_server.add("breastmnist.npz", blob), md5=md5(blob))
    monkeypatch.setitem(fetch.REGISTRY, "medmnist:breastmnist", replace(src, files=(remote,)))
    assert run(dest, dl, "breastmnist") == 0
    entry = lock_of(dest)["breastmnist.npz"]
    assert entry["sha256"] == sha256(blob) and entry["pinned"] == "md5"
    rows = {r["dataset"]: r for r in fetch.integrity(dest)}
    assert rows["medmnist:breastmnist"]["status"] == "pinned md5, sha256 recorded"
    assert rows["medmnist:pneumoniamnist"]["status"] == "pinned md5"
    assert rows["chest_xray"]["status"] == "unverified" and rows["fsdd"]["status"] == "unverified"
    table = fetch.format_integrity(dest)
    assert "pinned md5, sha256 recorded" in table and str(dest / fetch.LOCK_NAME) in table


def test_integrity_reports_files_recorded_on_first_use(http_server, upstream, dirs, monkeypatch):
    dest, dl = dirs
    point_registry(monkeypatch, upstream, "chest_xray", server=http_server, pin=False)
    assert run(dest, dl, "chest_xray") == 0
    row = next(r for r in fetch.integrity(dest) if r["dataset"] == "chest_xray")
    assert row["status"] == "recorded on first use" and row["file"] == "ChestXRay2017.zip"
    (dest / fetch.LOCK_NAME).write_text("{not json")
    assert run(dest, dl, "chest_xray", extra=["--force"]) == 1  # a broken lock is never silently replaced
    assert "unreadable checksum lock" in fetch.integrity(dest)[0]["detail"]


def test_prepared_dataset_is_skipped_unless_forced(http_server, upstream, dirs, monkeypatch, capsys):
    dest, dl = dirs
    point_registry(monkeypatch, upstream, "fsdd", server=http_server)
    assert run(dest, dl, "fsdd") == 0 and run(dest, dl, "fsdd") == 0
    assert "already prepared" in capsys.readouterr().out and len(http_server.requests) == 1
    (dest / "fsdd" / "recordings" / "0_george_0.wav").unlink()
    assert run(dest, dl, "fsdd", extra=["--force"]) == 0
    assert (dest / "fsdd" / "recordings" / "0_george_0.wav").is_file()


def test_wrong_archive_fails_prepare_without_touching_data(http_server, dirs, monkeypatch, capsys):
    dest, dl = dirs
    src = fetch.REGISTRY["fsdd"]
    junk = b"PK\x05\x06" + bytes(18)  # an empty zip: valid archive, no recordings
    url = http_server.add(src.files[0].filename, junk)
    remote = replace(src.files[0], url=url, sha256=sha256(junk))
    monkeypatch.setitem(fetch.REGISTRY, "fsdd", replace(src, files=(remote,)))
    assert run(dest, dl, "fsdd") == 1
    assert "no recordings" in capsys.readouterr().err
    assert not (dest / "fsdd").exists() and not [p for p in dest.iterdir() if p.name.startswith(".")]
    assert not (dest / fetch.LOCK_NAME).exists(), "a file that failed to prepare is not trusted"


def test_list_registry_and_unknown_names(capsys):
    assert fetch.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("flickr8k", "chest_xray", "medmnist:breastmnist", "fsdd", "esc50"):
        assert name in out
    assert fetch.main(["flikr8k"]) == 2
    assert "did you mean flickr8k" in capsys.readouterr().err
    assert fetch.main(["--help"]) == 0


def test_registry_sources_cannot_change_silently():
    """Every upstream file is https, pinned or recordable, and GitHub archives name a commit, not a branch."""
    names = [r.filename for s in fetch.REGISTRY.values() for r in s.files]
    assert len(names) == len(set(names)), "the lock is keyed by file name: names must be unique"
    for name, s in fetch.REGISTRY.items():
        for r in s.files:
            assert r.url.startswith("https://"), (name, r.url)
            assert r.md5 is None or re.fullmatch(r"[0-9a-f]{32}", r.md5), (name, r.md5)
            if "/archive/" in r.url:
                ref = r.url.rsplit("/", 1)[1].removesuffix(".zip")
                assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{name}: archive of a branch ({ref}) changes over time"
                assert ref in r.filename
    assert ESC50_COMMIT in fetch.REGISTRY["esc50"].files[0].url
    assert [s.name for s in fetch.resolve(["medmnist"])] == ["medmnist:pneumoniamnist", "medmnist:breastmnist"]
    assert fetch.resolve(["esc10"])[0].name == "esc50"
    assert fetch.resolve(["dermamnist_64"])[0].name == "medmnist:dermamnist_64"


@pytest.mark.parametrize("top", [f"ESC-50-{ESC50_COMMIT}", "ESC-50-master"])
def test_prepare_esc50_takes_the_archive_top_folder(upstream, tmp_path, top):
    """The commit archive unpacks to ESC-50-<commit>/, master.zip to ESC-50-master/: both prepare the same."""
    (blob,) = upstream["esc50"].values()
    src, buf = zipfile.ZipFile(io.BytesIO(blob)), io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            out.writestr(top + "/" + info.filename.split("/", 1)[1], src.read(info))
        out.writestr(f"{top}/tests/audio/extra.wav", b"not a clip")  # only <top>/audio/ holds the clips
    archive = tmp_path / f"{top}.zip"
    archive.write_bytes(buf.getvalue())
    made = prepare.prepare_esc50([archive], tmp_path / "data")
    assert [p.name for p in made] == ["esc50", "esc10"]
    assert sorted(p.name for p in (tmp_path / "data" / "esc50" / "audio").iterdir()) == \
        ["1-1000-A-0.wav", "1-1005-A-5.wav", "2-1000-A-0.wav", "2-1005-A-5.wav"]


@pytest.mark.parametrize("script,name", [("fetch_flickr8k.py", "flickr8k"), ("fetch_chest_xray.py", "chest_xray"),
                                         ("fetch_medmnist.py", "medmnist"), ("fetch_fsdd.py", "fsdd"),
                                         ("fetch_esc50.py", "esc50"), ("fetch_esc10.py", "esc10")])
def test_data_scripts_forward_to_fetch_main(script, name, monkeypatch):
    seen = []
    monkeypatch.setattr(fetch, "main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(sys, "argv", [script, "--mirror", "/srv/mirror"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "data_scripts" / script), run_name="__main__")
    assert exc.value.code == 0 and seen == [[name, "--mirror", "/srv/mirror"]]


def test_fetch_output_matches_shared_layout(http_server, upstream, dirs, monkeypatch):
    """What the prepare step writes is what ../shared/datasets holds (names, columns, formats)."""
    dest, dl = dirs
    for name in ("chest_xray", "esc50"):
        point_registry(monkeypatch, upstream, name, server=http_server)
    assert run(dest, dl, "chest_xray", "esc50") == 0
    header = (dest / "chest_xray_pneumonia" / "labels.csv").read_text().splitlines()[0]
    assert header == "path,split,label,label_id,subtype"
    meta = (dest / "esc10" / "meta" / "esc10.csv").read_text().splitlines()
    assert meta[0] == "filename,fold,target,category,esc10,src_file,take" and meta[1].split(",")[0].endswith(".flac")
    import soundfile as sf
    info = sf.info(next((dest / "esc10" / "audio").iterdir()))
    assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
    clip = data.load("esc10", "all", cache=False)[0]["audio"]
    assert clip.dtype == torch.float32 and clip.shape == (4000,)
