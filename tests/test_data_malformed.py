"""A corpus of malformed inputs, generated here: each gives a clear DataError naming the file
(and a fix), or a counted skip that ``strict=True`` turns into that error. Never a bare
traceback from PIL, NumPy or soundfile."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image


from mmcourse import data
from mmcourse.data import DataError, DataWarning, files


# ------------------------------------------------------------------ tiny valid datasets to break

def jpeg(seed: int = 0, size=(32, 24), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "JPEG")
    return buf.getvalue()


def audio(sr: int = 8000, seconds: float = 0.2, channels: int = 1, fmt: str = "FLAC") -> bytes:
    x = np.random.default_rng(1).normal(0, 0.1, (int(sr * seconds), channels)).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype="PCM_16")
    return buf.getvalue()


def make_flickr(root: Path) -> Path:
    d = root / "flickr8k"
    (d / "Images").mkdir(parents=True)
    names = [f"{i}_x.jpg" for i in range(6)]
    for i, n in enumerate(names):
        (d / "Images" / n).write_bytes(jpeg(i))
    (d / "Flickr8k.token.txt").write_text("".join(f"{n}#{k}\ta caption {k} .\n" for n in names for k in range(5)))
    (d / "Flickr_8k.trainImages.txt").write_text("\n".join(names[:4]) + "\n")
    (d / "Flickr_8k.devImages.txt").write_text(names[4] + "\n")
    (d / "Flickr_8k.testImages.txt").write_text(names[5] + "\n")
    return d


def make_chest(root: Path) -> Path:
    d = root / "chest_xray_pneumonia"
    rows = ["path,split,label,label_id,subtype"]
    for split in ("train", "test"):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            (d / split / cls).mkdir(parents=True)
            for i in range(2):
                name = f"IM-{i:04d}-0001.jpeg" if label == 0 else f"person{i}_bacteria_{i}.jpeg"
                (d / split / cls / name).write_bytes(jpeg(i, mode="L"))
                rows.append(f"{split}/{cls}/{name},{split},{cls},{label},{'normal' if label == 0 else 'bacteria'}")
    (d / "labels.csv").write_text("\n".join(rows) + "\n")
    return d


def make_npz(root: Path, drop: tuple = (), **override) -> Path:
    d = root / "medmnist"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 546), ("val", 78), ("test", 156)):  # BreastMNIST's official sizes
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    arrays.update(override)
    for k in drop:
        arrays.pop(k)
    np.savez(d / "breastmnist.npz", **arrays)
    return d / "breastmnist.npz"


def make_fsdd(root: Path) -> Path:
    d = root / "fsdd" / "recordings"
    d.mkdir(parents=True)
    for digit in range(2):
        for idx in (0, 5, 6):
            (d / f"{digit}_george_{idx}.flac").write_bytes(audio())
    return d


def make_esc(root: Path) -> Path:
    d = root / "esc10"
    (d / "audio").mkdir(parents=True)
    (d / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        name = f"{fold}-100{fold}-A-0.flac"
        (d / "audio" / name).write_bytes(audio(16000, 0.3))
        rows.append(f"{name},{fold},0,dog,True,100{fold},A")
    (d / "meta" / "esc10.csv").write_text("\n".join(rows) + "\n")
    return d


# ------------------------------------------------------------------ assertions

def expect_error(fn, *fragments: str) -> DataError:
    """``fn()`` raises a DataError whose message holds every fragment and a fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(DataError) as info:
            fn()
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in error message:\n{msg}"
    assert "fix" in msg.lower() or "did you mean" in msg or "typo" in msg, msg
    return info.value


def expect_skip(load, fragment: str, n_ok: int) -> None:
    """Non-strict: a counted DataWarning naming ``fragment`` and ``n_ok`` samples; strict: DataError."""
    with pytest.warns(DataWarning, match="skipped 1 of") as rec:
        ds = load(strict=False)
    assert any(fragment in str(w.message) for w in rec), [str(w.message) for w in rec]
    assert len(ds) == n_ok
    expect_error(lambda: load(strict=True), fragment)


def expect_item_skip(load, index: int, fragment: str) -> None:
    """Reading item ``index`` fails: non-strict returns another sample with a counted warning."""
    ds = load(strict=False)
    with pytest.warns(DataWarning, match="1 skipped so far") as rec:
        sample = ds[index]
    assert sample is not None and index in ds.skipped and fragment in ds.skipped[index]
    assert any(fragment in str(w.message) for w in rec)
    expect_error(lambda: load(strict=True)[index], fragment)


# ------------------------------------------------------------------ the corpus

def flickr_token_missing(root):
    d = make_flickr(root)
    (d / "Flickr8k.token.txt").unlink()
    expect_error(lambda: data.load("flickr8k"), "Flickr8k.token.txt", "not found")


def flickr_token_empty(root):
    d = make_flickr(root)
    (d / "Flickr8k.token.txt").write_bytes(b"")
    expect_error(lambda: data.load("flickr8k"), "Flickr8k.token.txt", "0 bytes")


def flickr_split_missing(root):
    d = make_flickr(root)
    (d / "Flickr_8k.trainImages.txt").unlink()
    expect_error(lambda: data.load("flickr8k", "train"), "Flickr_8k.trainImages.txt", "not found")


def flickr_split_typo(root):
    d = make_flickr(root)
    (d / "Flickr_8k.devImages.txt").rename(d / "Flickr_8k.devImage.txt")
    expect_error(lambda: data.load("flickr8k", "val"), "Flickr_8k.devImages.txt", "did you mean", "devImage.txt")


def flickr_split_not_utf8(root):
    d = make_flickr(root)
    (d / "Flickr_8k.testImages.txt").write_bytes(b"caf\xe9_1.jpg\n")
    expect_error(lambda: data.load("flickr8k", "test"), "Flickr_8k.testImages.txt", "UTF-8", "line 1")


def flickr_no_image_folder(root):
    d = make_flickr(root)
    (d / "Images").rename(d / "imgs")
    expect_error(lambda: data.load("flickr8k"), "flickr8k", "no image folder")


def flickr_corrupt_jpeg(root):
    d = make_flickr(root)
    (d / "Images" / "1_x.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    expect_item_skip(lambda **kw: data.load("flickr8k", **kw), 1, "1_x.jpg")


def flickr_truncated_jpeg(root):
    d = make_flickr(root)
    p = d / "Images" / "2_x.jpg"
    p.write_bytes(p.read_bytes()[:300])
    expect_item_skip(lambda **kw: data.load("flickr8k", **kw), 2, "2_x.jpg")


def flickr_zero_byte_jpeg(root):
    d = make_flickr(root)
    (d / "Images" / "0_x.jpg").write_bytes(b"")
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "0_x.jpg", 3)


def flickr_image_missing(root):
    d = make_flickr(root)
    (d / "Images" / "3_x.jpg").unlink()
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "3_x.jpg", 3)


def flickr_caption_line_no_tab(root):
    d = make_flickr(root)
    with open(d / "Flickr8k.token.txt", "a") as f:
        f.write("this line has no image id at all\n")
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "Flickr8k.token.txt:31", 4)


def flickr_caption_empty(root):
    d = make_flickr(root)
    with open(d / "Flickr8k.token.txt", "a") as f:
        f.write("0_x.jpg#5\t   \n")
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "malformed caption line", 4)


def flickr_caption_not_utf8(root):
    d = make_flickr(root)
    with open(d / "Flickr8k.token.txt", "ab") as f:
        f.write(b"0_x.jpg#5\ta caf\xe9 caption\n")
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "not valid UTF-8", 4)


def flickr_split_lists_uncaptioned(root):
    d = make_flickr(root)
    with open(d / "Flickr_8k.trainImages.txt", "a") as f:
        f.write("999_nocaps.jpg\n")
    expect_skip(lambda **kw: data.load("flickr8k", **kw), "999_nocaps.jpg", 4)


def chest_csv_missing_column(root):
    d = make_chest(root)
    text = (d / "labels.csv").read_text().replace("label_id,", "", 1)
    (d / "labels.csv").write_text(text)
    expect_error(lambda: data.load("chest_xray"), "labels.csv", "label_id")


def chest_csv_ragged_row(root):
    d = make_chest(root)
    with open(d / "labels.csv", "a") as f:
        f.write("train/NORMAL/x.jpeg,train\n")
    expect_error(lambda: data.load("chest_xray"), "labels.csv:10", "fields")


def chest_label_out_of_range(root):
    d = make_chest(root)
    text = (d / "labels.csv").read_text().replace("PNEUMONIA,1,", "PNEUMONIA,7,", 1)
    (d / "labels.csv").write_text(text)
    expect_skip(lambda **kw: data.load("chest_xray", "trainval", **kw), "label_id '7' out of range", 3)


def chest_unknown_label(root):
    d = make_chest(root)
    text = (d / "labels.csv").read_text().replace(",NORMAL,0,", ",HEALTHY,0,", 1)
    (d / "labels.csv").write_text(text)
    expect_skip(lambda **kw: data.load("chest_xray", "trainval", **kw), "HEALTHY", 3)


def chest_listed_file_missing(root):
    d = make_chest(root)
    (d / "test" / "PNEUMONIA" / "person0_bacteria_0.jpeg").unlink()
    expect_skip(lambda **kw: data.load("chest_xray", "test", **kw), "person0_bacteria_0.jpeg", 3)


def chest_truncated_jpeg(root):
    d = make_chest(root)
    p = d / "test" / "NORMAL" / "IM-0000-0001.jpeg"
    p.write_bytes(p.read_bytes()[:200])
    expect_item_skip(lambda **kw: data.load("chest_xray", "test", **kw), 0, "IM-0000-0001.jpeg")


def npz_missing_keys(root):
    make_npz(root, drop=("val_labels", "test_images"))
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "val_labels", "test_images")


def npz_wrong_image_shape(root):
    make_npz(root, train_images=np.zeros((546, 28), np.uint8))
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "train_images has shape (546, 28)")


def npz_wrong_size(root):
    make_npz(root, test_images=np.zeros((156, 64, 64), np.uint8))
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "size=")


def npz_count_mismatch(root):
    make_npz(root, val_labels=np.zeros((3, 1), np.uint8))
    expect_error(lambda: data.load("breastmnist", "val"), "breastmnist.npz", "78 images but val_labels has 3")


def npz_float_images(root):
    make_npz(root, train_images=np.zeros((546, 28, 28), np.float32))
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "dtype float32")


def npz_labels_out_of_range(root):
    labels = np.zeros((546, 1), np.uint8)
    labels[4] = 9
    make_npz(root, train_labels=labels)
    expect_skip(lambda **kw: data.load("breastmnist", "train", **kw), "label [9] out of range", 545)


def npz_garbage(root):
    (root / "medmnist").mkdir()
    (root / "medmnist" / "breastmnist.npz").write_bytes(b"PK\x03\x04" + b"garbage" * 50)
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "not a readable npz")


def npz_zero_bytes(root):
    (root / "medmnist").mkdir()
    (root / "medmnist" / "breastmnist.npz").write_bytes(b"")
    expect_error(lambda: data.load("breastmnist"), "breastmnist.npz", "0 bytes")


def fsdd_truncated_wav(root):
    d = make_fsdd(root)
    wav = audio(fmt="WAV")
    (d / "0_george_5.flac").unlink()
    (d / "0_george_5.wav").write_bytes(wav[: len(wav) // 2])
    expect_item_skip(lambda **kw: data.load("fsdd", "train", **kw), 0, "truncated")


def fsdd_truncated_flac(root):
    d = make_fsdd(root)
    p = d / "1_george_6.flac"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    expect_item_skip(lambda **kw: data.load("fsdd", "train", **kw), 3, "1_george_6.flac")


def fsdd_zero_byte(root):
    d = make_fsdd(root)
    (d / "1_george_5.flac").write_bytes(b"")
    expect_skip(lambda **kw: data.load("fsdd", "train", **kw), "1_george_5.flac", 3)


def fsdd_garbage_audio(root):
    d = make_fsdd(root)
    (d / "0_george_6.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    expect_item_skip(lambda **kw: data.load("fsdd", "train", **kw), 1, "0_george_6.flac")


def fsdd_no_samples(root):
    d = make_fsdd(root)
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 1), np.float32), 8000, format="WAV", subtype="PCM_16")
    (d / "0_george_5.flac").unlink()
    (d / "0_george_5.wav").write_bytes(buf.getvalue())
    expect_item_skip(lambda **kw: data.load("fsdd", "train", **kw), 0, "no samples")


def fsdd_bad_name(root):
    d = make_fsdd(root)
    (d / "hello world.flac").write_bytes(audio())
    expect_skip(lambda **kw: data.load("fsdd", "train", **kw), "hello world.flac", 4)


def fsdd_digit_out_of_range(root):
    d = make_fsdd(root)
    (d / "12_george_7.flac").write_bytes(audio())
    expect_skip(lambda **kw: data.load("fsdd", "train", **kw), "digit label 12 out of range", 4)


def fsdd_wrong_rate_and_stereo(root, monkeypatch=None):
    d = make_fsdd(root)
    (d / "0_george_5.flac").write_bytes(audio(sr=44100, seconds=0.2, channels=2))
    files._NOTES_SEEN.clear()
    with pytest.warns(DataWarning) as rec:
        s = data.load("fsdd", "train", cache=False)[0]
    msgs = " ".join(str(w.message) for w in rec)
    assert "downmixed to mono" in msgs and "resampled from 44100 Hz to 8000 Hz" in msgs
    assert s["audio"].ndim == 1 and abs(s["audio"].shape[0] - 1600) <= 1


def esc_meta_missing(root):
    d = make_esc(root)
    (d / "meta" / "esc10.csv").unlink()
    (d / "meta").rmdir()
    expect_error(lambda: data.load("esc10"), "esc10.csv", "not found")


def esc_fold_out_of_range(root):
    d = make_esc(root)
    text = (d / "meta" / "esc10.csv").read_text().replace(",3,0,dog", ",7,0,dog")
    (d / "meta" / "esc10.csv").write_text(text)
    expect_skip(lambda **kw: data.load("esc10", "all", **kw), "fold 7 out of range", 4)


def esc_target_out_of_range(root):
    d = make_esc(root)
    text = (d / "meta" / "esc10.csv").read_text().replace(",2,0,dog", ",2,77,dog")
    (d / "meta" / "esc10.csv").write_text(text)
    expect_skip(lambda **kw: data.load("esc10", "all", **kw), "target 77 out of range", 4)


def esc_listed_audio_missing(root):
    d = make_esc(root)
    (d / "audio" / "4-1004-A-0.flac").unlink()
    expect_skip(lambda **kw: data.load("esc10", "all", **kw), "4-1004-A-0.flac", 4)


def esc_truncated_flac(root):
    d = make_esc(root)
    p = d / "audio" / "1-1001-A-0.flac"
    p.write_bytes(p.read_bytes()[:120])
    expect_item_skip(lambda **kw: data.load("esc10", "all", **kw), 0, "1-1001-A-0.flac")


def root_does_not_exist(root):
    expect_error(lambda: data.load("fsdd", root=root / "no-such-folder"), "no-such-folder", "not found")


def data_dir_typo(root, monkeypatch=None):
    make_flickr(root).rename(root / "flicker8k")
    err = expect_error(lambda: data.load("flickr8k", fallback="error"), "flicker8k", "typo")
    assert "rename it to 'flickr8k'" in str(err)


def env_dir_missing(root):
    import os

    os.environ["MMCOURSE_DATA_DIR"] = str(root.parent / "datsets")
    (root.parent / "datasets").mkdir(exist_ok=True)
    expect_error(lambda: data.load("esc10", fallback="error"), "does not exist", "datasets")


CORPUS = [flickr_token_missing, flickr_token_empty, flickr_split_missing, flickr_split_typo, flickr_split_not_utf8,
          flickr_no_image_folder, flickr_corrupt_jpeg, flickr_truncated_jpeg, flickr_zero_byte_jpeg,
          flickr_image_missing, flickr_caption_line_no_tab, flickr_caption_empty, flickr_caption_not_utf8,
          flickr_split_lists_uncaptioned, chest_csv_missing_column, chest_csv_ragged_row, chest_label_out_of_range,
          chest_unknown_label, chest_listed_file_missing, chest_truncated_jpeg, npz_missing_keys,
          npz_wrong_image_shape, npz_wrong_size, npz_count_mismatch, npz_float_images, npz_labels_out_of_range,
          npz_garbage, npz_zero_bytes, fsdd_truncated_wav, fsdd_truncated_flac, fsdd_zero_byte, fsdd_garbage_audio,
          fsdd_no_samples, fsdd_bad_name, fsdd_digit_out_of_range, fsdd_wrong_rate_and_stereo, esc_meta_missing,
          esc_fold_out_of_range, esc_target_out_of_range, esc_listed_audio_missing, esc_truncated_flac,
          root_does_not_exist, data_dir_typo, env_dir_missing]


@pytest.mark.parametrize("case", CORPUS, ids=[c.__name__ for c in CORPUS])
def test_malformed_input(case, no_data, monkeypatch):
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(no_data))  # restored after env_dir_missing
    case(no_data)


def test_readers_never_leak_library_errors(tmp_path):
    """The low-level readers themselves: each bad file → DataError naming it."""
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01\x02" * 10)
    for fn in (lambda: files.read_image(bad, 32, use_cache=False), lambda: files.read_audio(bad),
               lambda: files.npz_shapes(bad), lambda: files.read_logmel(bad, 8000, use_cache=False)):
        expect_error(fn, "bad.bin")
    expect_error(lambda: files.read_bytes(tmp_path / "nope.jpg"), "nope.jpg", "not found")
    expect_error(lambda: files.read_bytes(tmp_path), "folder")
