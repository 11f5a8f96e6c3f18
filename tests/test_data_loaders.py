"""Dataset loaders on the real prepared data (exact split sizes) and on the synthetic fallback."""
from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from conftest_data import REAL_DIR, _jpeg, _zip, build_upstream, need_real, read_records

from mmcourse import data
from mmcourse.data import DataError


# ------------------------------------------------------------------ real data: exact split sizes

def test_flickr8k_official_splits(real_data):
    need_real("flickr8k")
    sizes = {}
    for split in ("train", "val", "test"):
        ds = data.load("flickr8k", split)
        assert ds.info.source == "real"
        assert all(len(r["captions"]) == 5 for r in ds.records)
        sizes[split] = len(ds)
    assert sizes == {"train": 6000, "val": 1000, "test": 1000}
    assert ds.info.splits == sizes
    assert len(data.load("flickr8k", "dev", view="caption")) == 5000
    assert not set(data.load("flickr8k", "train").column("image_id")) & set(ds.column("image_id"))
    sample = ds[0]
    assert sample["image"].shape == (3, 224, 224) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert len(sample["captions"]) == 5 and all(isinstance(c, str) and c for c in sample["captions"])
    small = data.load("flickr8k", "test", view="caption", image_size=64)[3]
    assert small["image"].shape == (3, 64, 64) and small["caption_index"] == 3
    assert data.load("flickr8k", "test", pil=True, image_size=None)[0]["image"].size == (224, 224)


# Official training set sizes of the two layouts: what `make data` prepares from Mendeley's zip (its
# train/ holds the 16 images Kaggle moved to val/) and Kaggle's / ../shared/datasets' (without them).
CHEST_TRAINVAL = {5232: "Mendeley ChestXRay2017.zip (make data)", 5216: "Kaggle layout without val/ (shared copy)"}


def labels_csv_counts(folder) -> dict[str, Counter]:
    """What the prepare step wrote: (label, subtype) counts per official split, read straight from labels.csv."""
    with open(folder / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = {"trainval": Counter(), "test": Counter()}
    for r in rows:
        out["test" if r["split"] == "test" else "trainval"][(int(r["label_id"]), r["subtype"])] += 1
    return out


def test_chest_xray_official_splits(real_data):
    folder = need_real("chest_xray_pneumonia")
    want = labels_csv_counts(folder)
    n = sum(want["trainval"].values())
    assert n in CHEST_TRAINVAL, f"{n} official training images: neither known layout ({CHEST_TRAINVAL})"
    assert sum(want["test"].values()) == 624
    trainval, test = data.load("chest_xray", "trainval"), data.load("chest_xray", "test")
    assert Counter(zip(trainval.column("label"), trainval.column("subtype"))) == want["trainval"]
    assert Counter(zip(test.column("label"), test.column("subtype"))) == want["test"]
    train, val = data.load("chest_xray", "train"), data.load("chest_xray", "val")
    assert len(train) + len(val) == n and 0.07 * n < len(val) < 0.13 * n
    assert trainval.info.splits == {"train": len(train), "val": len(val), "test": 624, "trainval": n}
    from mmcourse.data.chest_xray import patient_key
    tr_pat = {patient_key(str(p)) for p in train.column("path")}
    va_pat = {patient_key(str(p)) for p in val.column("path")}
    assert not tr_pat & va_pat, "validation split must be patient-disjoint from train"
    assert val.column("path") == data.load("chest_xray", "val").column("path")  # deterministic
    s = test[0]
    assert s["image"].shape == (1, 224, 224) and s["image"].dtype == torch.float32 and s["label"] in (0, 1)
    assert data.load("chest_xray", "test", image_size=96, channels=3)[0]["image"].shape == (3, 96, 96)


def test_breastmnist_official_splits(real_data):
    need_real("medmnist", "breastmnist.npz")
    sizes = {s: len(data.load("breastmnist", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 546, "val": 78, "test": 156}
    train = data.load("medmnist", "train", flag="breastmnist")
    assert train.info.source == "real" and train.info.licence == "CC BY 4.0"
    assert Counter(train.column("label")) == {0: 147, 1: 399}
    s = train[0]
    assert s["image"].shape == (1, 28, 28) and s["image"].dtype == torch.float32 and s["label"] in (0, 1)
    assert data.load("breastmnist", "test", image_size=64, channels=3)[0]["image"].shape == (3, 64, 64)


def test_pneumoniamnist_partial_file_is_flagged(real_data):
    need_real("medmnist", "pneumoniamnist_partial.npz")
    with pytest.warns(data.DataWarning, match="partial or modified"):
        ds = data.load("medmnist:pneumoniamnist", "val")
    assert len(ds) == 524 and ds.info.splits == {"train": 3882, "val": 524, "test": 624}
    assert any("partial" in n for n in ds.info.notes)


def test_fsdd_official_split(real_data):
    need_real("fsdd")
    train, test = data.load("fsdd", "train"), data.load("fsdd", "test")
    assert (len(train), len(test)) == (2700, 300)
    assert Counter(test.column("label")) == {d: 30 for d in range(10)}
    assert len(set(train.column("speaker"))) == 6
    s = test[0]
    assert s["audio"].ndim == 1 and s["audio"].dtype == torch.float32 and s["sample_rate"] == 8000
    mel = data.load("fsdd", "test", features="logmel", n_mels=40)[0]["logmel"]
    assert mel.shape[0] == 40 and mel.dtype == torch.float32 and torch.isfinite(mel).all()


def test_esc10_five_folds_of_80(real_data):
    need_real("esc10")
    full = data.load("esc10", "all")
    assert len(full) == 400
    assert Counter(full.column("fold")) == {f: 80 for f in range(1, 6)}
    assert Counter(full.column("label")) == {k: 40 for k in range(10)}
    for fold in (1, 5):
        tr, te = data.load("esc10", "train", test_fold=fold), data.load("esc10", "test", test_fold=fold)
        assert (len(tr), len(te)) == (320, 80) and set(te.column("fold")) == {fold}
    s = te[0]
    assert s["audio"].shape == (80000,) and s["sample_rate"] == 16000 and s["category"] in full.info.classes


def test_describe_lists_real_datasets(real_data):
    need_real("flickr8k")
    rows = {r["name"]: r for r in data.describe()}
    assert rows["flickr8k"]["status"] == "real"
    assert rows["flickr8k"]["splits"] == {"train": 6000, "val": 1000, "test": 1000}
    assert rows["chest_xray"]["splits"]["trainval"] in CHEST_TRAINVAL and rows["chest_xray"]["splits"]["test"] == 624
    assert rows["medmnist:breastmnist"]["splits"] == {"train": 546, "val": 78, "test": 156}
    assert rows["fsdd"]["splits"] == {"train": 2700, "test": 300}
    assert rows["esc10"]["splits"]["all"] == 400
    # `make data` prepares esc50/ too; the shared copy holds only esc10/: expect whichever is there
    assert rows["esc50"]["status"] == ("real" if (REAL_DIR / "esc50").is_dir() else "synthetic fallback")
    assert "flickr8k" in data.format_table(list(rows.values()))


def test_dataloader_batches_real_audio_and_images(real_data):
    need_real("fsdd")
    batch = next(iter(data.dataloader(data.load("fsdd", "test"), batch_size=4, num_workers=0)))
    assert batch["audio"].shape[0] == 4 and batch["audio_lengths"].shape == (4,)
    assert int(batch["audio_lengths"].max()) == batch["audio"].shape[1]
    assert batch["label"].dtype == torch.long and isinstance(batch["speaker"], list)
    need_real("flickr8k")
    batch = next(iter(data.dataloader(data.load("flickr8k", "test", image_size=32), batch_size=3, num_workers=0)))
    assert batch["image"].shape == (3, 3, 32, 32) and len(batch["captions"]) == 3


# ------------------------------------------------------------------ both layouts, built in tmp dirs

def chest_zip(val_split: bool) -> bytes:
    """A tiny ChestXRay2017-style zip; ``val_split`` moves two train images to Kaggle's val/ folder."""
    members = {}
    for split, n in (("train", 4), ("test", 2)):
        for i in range(n):
            for cls, name in (("NORMAL", f"IM-{100 + i:04d}-0001.jpeg"), ("PNEUMONIA", f"person{i}_virus_{i}.jpeg")):
                where = "val" if val_split and split == "train" and i == 3 else split
                members[f"chest_xray/{where}/{cls}/{name}"] = _jpeg(i, (40, 32), "L")
    return _zip(members)


@pytest.mark.parametrize("val_split", [False, True], ids=["mendeley", "kaggle-val"])
def test_chest_xray_layouts_with_and_without_val(tmp_path, data_cache, val_split):
    import zipfile

    from mmcourse.data import chest_xray, prepare

    archive = tmp_path / "ChestXRay2017.zip"
    archive.write_bytes(chest_zip(val_split))
    (folder,) = prepare.prepare_chest_xray([archive], tmp_path / "prepared")
    want = labels_csv_counts(folder)
    assert sum(want["trainval"].values()) == 8, "prepare merges an upstream val/ folder into train/"
    assert not (folder / "val").exists()
    zipfile.ZipFile(archive).extractall(tmp_path / "unpacked")
    # the prepared folder (labels.csv), and the raw upstream folders (scanned: train/, val/, test/)
    for root in (folder, tmp_path / "unpacked"):
        trainval = data.load("chest_xray", "trainval", root=root, image_size=16)
        assert trainval.info.source == "real"
        assert Counter(zip(trainval.column("label"), trainval.column("subtype"))) == want["trainval"]
        assert len(data.load("chest_xray", "test", root=root)) == 4
        assert trainval[0]["image"].shape == (1, 16, 16)
        assert chest_xray.summary(root)["splits"]["trainval"] == 8
    (folder / "val" / "NORMAL").mkdir(parents=True)  # Kaggle-style labels.csv: val rows are training data
    (folder / "val" / "NORMAL" / "a.jpeg").write_bytes(_jpeg(9, (40, 32), "L"))
    with open(folder / "labels.csv", "a") as f:
        f.write("val/NORMAL/a.jpeg,val,NORMAL,0,normal\n")
    assert len(data.load("chest_xray", "trainval", root=folder)) == 9


def test_fsdd_wav_and_flac_layouts_load_the_same(tmp_path, data_cache):
    """prepare_fsdd writes the upstream WAVs; the shared copy holds lossless FLAC: same samples either way."""
    import soundfile as sf
    from mmcourse.data import fsdd, prepare

    (name, blob), = build_upstream()["fsdd"].items()
    (tmp_path / name).write_bytes(blob)
    (wav_root,) = prepare.prepare_fsdd([tmp_path / name], tmp_path / "wav")
    wavs = sorted((wav_root / "recordings").iterdir())
    assert wavs and {p.suffix for p in wavs} == {".wav"}
    flac_rec = tmp_path / "flac" / "fsdd" / "recordings"
    flac_rec.mkdir(parents=True)
    for p in wavs:
        x, sr = sf.read(p, dtype="int16")
        sf.write(flac_rec / (p.stem + ".flac"), x, sr, format="FLAC", subtype="PCM_16")
    for split, n in (("train", 8), ("test", 4)):
        w = data.load("fsdd", split, root=wav_root, cache=False)
        f = data.load("fsdd", split, root=flac_rec.parent, cache=False)
        assert len(w) == len(f) == n and w.column("label") == f.column("label")
        assert all(torch.equal(w[i]["audio"], f[i]["audio"]) for i in range(n)), "FLAC is lossless"
    (flac_rec / wavs[0].name).write_bytes(wavs[0].read_bytes())  # a stem in both formats is read once
    mixed = data.load("fsdd", "all", root=flac_rec.parent)
    assert len(mixed) == 12 and str(mixed.column("path")[0]).endswith(".flac")
    assert fsdd.summary(root=wav_root)["detail"] == "12 recordings (.wav)"


# ------------------------------------------------------------------ no real data: synthetic stand-ins

SYNTHETIC_CASES = [
    ("flickr8k", {}, {"image", "captions", "image_id"}),
    ("chest_xray", {"image_size": 64}, {"image", "label", "subtype", "path"}),
    ("breastmnist", {}, {"image", "label"}),
    ("fsdd", {}, {"audio", "sample_rate", "label", "speaker", "speaker_id", "path"}),
    ("esc10", {}, {"audio", "sample_rate", "label", "target", "category", "fold", "path"}),
]


@pytest.mark.parametrize("name,kwargs,keys", SYNTHETIC_CASES, ids=[c[0] for c in SYNTHETIC_CASES])
def test_synthetic_fallback_says_so(no_data, record_file, capsys, name, kwargs, keys):
    ds = data.load(name, "train", **kwargs)
    assert ds.info.source == "synthetic" and "SYNTHETIC" in str(ds.info)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and ds.info.name in out
    assert keys <= set(ds[0])
    recs = [r for r in read_records(record_file) if r.get("kind") == "data"]
    assert recs and recs[-1]["source"] == "synthetic" and recs[-1]["dataset"] == ds.info.name


def test_synthetic_matches_real_interface(real_data, monkeypatch, tmp_path):
    need_real("fsdd")
    real = {n: data.load(n, "test", **kw)[0] for n, kw, _ in SYNTHETIC_CASES}
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(tmp_path))
    for n, kw, _ in SYNTHETIC_CASES:
        fake = data.load(n, "test", **kw)
        assert fake.info.source == "synthetic"
        s = fake[0]
        assert set(s) == set(real[n]) or n == "flickr8k" and set(real[n]) <= set(s), n
        for k, v in real[n].items():
            if isinstance(v, torch.Tensor):
                assert s[k].dtype == v.dtype and s[k].ndim == v.ndim, (n, k)
    assert data.load("flickr8k", "test", image_size=224)[0]["image"].shape == (3, 224, 224)


def test_fallback_error_raises_with_fix(no_data):
    with pytest.raises(DataError, match="fetch data flickr8k"):
        data.load("flickr8k", "train", fallback="error")
    with pytest.raises(DataError, match="MMCOURSE_DATA_DIR"):
        data.load("esc10", "train", fallback="error")
    with pytest.raises(ValueError, match="fallback"):
        data.load("fsdd", "train", fallback="maybe")


def test_synthetic_is_deterministic_and_sized(no_data):
    a, b = data.load("chest_xray", "val", image_size=32), data.load("chest_xray", "val", image_size=32)
    assert torch.equal(a[3]["image"], b[3]["image"]) and a.column("path") == b.column("path")
    sizes = {s: len(data.load("flickr8k", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 600, "val": 100, "test": 100}
    assert (len(data.load("fsdd", "train")), len(data.load("fsdd", "test"))) == (900, 300)
    esc = data.load("esc10", "all")
    assert len(esc) == 200 and Counter(esc.column("fold")) == {f: 40 for f in range(1, 6)}
    assert len(data.load("esc50", "test", test_fold=3)) == 100
    sizes = {s: len(data.load("breastmnist", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 546, "val": 78, "test": 156}
    chest = data.load("chestmnist", "val")
    assert chest[0]["label"].shape == (14,) and chest.info.source == "synthetic"
    assert data.load("dermamnist", "test")[0]["image"].shape == (3, 28, 28)


def test_synthetic_shapes_views(no_data):
    vqa = data.load("shapes", "val", view="vqa", image_size=48)
    s = vqa[0]
    assert s["image"].shape == (3, 48, 48) and s["question"].endswith("?") and s["answer"]
    img = data.synthetic.shapes("test", image_size=32)[0]
    assert len(img["captions"]) == 5 and len(set(img["captions"])) == 5
    assert len(img["questions"]) == len(img["answers"]) >= 4
    caps = [c for r in data.synthetic.shapes("train", n=50).records for c in r["captions"]]
    assert len(set(caps)) > 150  # varied templates, not one caption repeated


def test_synthetic_audio_features(no_data):
    s = data.load("fsdd", "test", features="logmel", n_mels=32)[0]
    assert s["logmel"].shape[0] == 32 and torch.isfinite(s["logmel"]).all()
    clip = data.load("esc50", "test", sample_rate=8000)[0]
    assert clip["audio"].shape == (40000,) and clip["audio"].abs().max() <= 1.0


def test_describe_without_data(no_data):
    rows = {r["name"]: r for r in data.describe()}
    spoken_row = rows.pop("spoken")  # generated by the tts voice, not read from MMCOURSE_DATA_DIR
    assert spoken_row["status"] in {"generated", "partly generated", "not generated"}
    assert sum(spoken_row["splits"].values()) == 1242
    assert {r["status"] for r in rows.values()} == {"synthetic fallback"}
    assert rows["flickr8k"]["splits"] == {"train": 600, "val": 100, "test": 100}
    assert rows["fsdd"]["path"].endswith("fsdd")


def test_load_rejects_unknown_names(no_data):
    with pytest.raises(ValueError, match="did you mean flickr8k"):
        data.load("flikr8k")
    with pytest.raises(ValueError, match="breastmnist"):
        data.load("medmnist:breastmnst")
    with pytest.raises(ValueError, match="split"):
        data.load("flickr8k", "training")


def test_stand_ins_live_next_to_their_datasets(no_data):
    """synthetic.py holds shared helpers only (no import of a dataset module: no cycle); old names still work."""
    import ast

    from mmcourse.data import chest_xray, esc, fsdd, medmnist, synthetic
    tree = ast.parse(open(synthetic.__file__, encoding="utf-8").read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"chest_xray", "esc", "fsdd", "medmnist", "flickr8k", "mmcourse.data.chest_xray",
                           "mmcourse.data.esc", "mmcourse.data.fsdd", "mmcourse.data.medmnist"}, imported
    assert synthetic.chest_xray is chest_xray.synthetic and synthetic.spoken_digits is fsdd.synthetic
    assert synthetic.sounds is esc.synthetic and synthetic.medmnist is medmnist.synthetic
    assert synthetic.VOICES == fsdd.VOICES and synthetic.CHEST_SIZES == chest_xray.SYNTHETIC_SIZES
    assert len(fsdd.synthetic("test")) == 300 and len(esc.synthetic("esc50", "test", test_fold=2)) == 100
    with pytest.raises(AttributeError):
        synthetic.no_such_stand_in
