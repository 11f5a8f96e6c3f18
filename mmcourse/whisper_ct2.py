"""Whisper from CTranslate2 to transformers (pretrained models section of 00_welcome; notebook 03_audio_encoders).

Some tools ship OpenAI Whisper as a CTranslate2 (``ct2``) folder: ``model.bin``, ``config.json``,
``tokenizer.json``, ``vocabulary.txt``. :func:`convert` turns such a folder into one that
``WhisperForConditionalGeneration.from_pretrained`` and ``WhisperProcessor.from_pretrained`` load
offline. Written and checked for ``tiny.en``: sizes are read from the file, but the tokenizer and
generation settings assume an English-only (``*.en``) float16/float32 checkpoint.

``model.bin`` layout (little-endian): ``uint32`` format version; the spec name as a string
(``uint16`` byte count including a trailing NUL, then the bytes); ``uint32`` spec revision;
``uint32`` number of variables, each stored as name (string), ``uint8`` rank, rank x ``uint32``
dims, ``uint8`` dtype (see ``CT2_DTYPES``), ``uint32`` byte count, raw data; then ``uint32``
number of aliases and that many (alias, target) string pairs. Scalars such as
``encoder/num_heads`` are rank-0 variables.

What the conversion does (and what it does not need to do):

* q/k/v are fused in ct2 (``self_attention/linear_0`` rows ``[q; k; v]``, cross-attention
  ``attention/linear_1`` rows ``[k; v]``); they are split, and the all-zero key bias dropped.
* conv weights are already in PyTorch's ``(out, in, kernel)`` layout, and the float16 weights
  are stored unscaled (ct2 applies the ``1/sqrt(head_dim)`` query scaling at run time, as
  transformers does), so both are copied as they are.
* ``decoder/projection/weight`` is an alias of the token embedding: ``proj_out`` stays tied.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from mmcourse.fileio import replace_dir

CT2_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
SUPPORTED_VERSIONS = (6,)  # the layout CTranslate2 3.x/4.x writes (checked against ctranslate2 4.8)
GELU = 3  # ct2 ActivationType::GELU

SELF_ATTN = {"linear_1": "self_attn.out_proj", "layer_norm": "self_attn_layer_norm"}
CROSS_ATTN = {"linear_0": "encoder_attn.q_proj", "linear_2": "encoder_attn.out_proj",
              "layer_norm": "encoder_attn_layer_norm"}
FFN = {"linear_0": "fc1", "linear_1": "fc2", "layer_norm": "final_layer_norm"}
PARAM = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}


# --------------------------------------------------------------------------- reading model.bin

def _take(buf: bytes, pos: int, size: int, path: Path, what: str) -> tuple[bytes, int]:
    """Return ``size`` bytes at ``pos`` and the next position; ValueError if the file ends early."""
    if pos + size > len(buf):
        raise ValueError(f"{path}: truncated CTranslate2 file while reading {what} "
                         f"(needs {pos + size} bytes, has {len(buf)})")
    return buf[pos:pos + size], pos + size


def _uint(buf: bytes, pos: int, fmt: str, path: Path, what: str) -> tuple[int, int]:
    raw, pos = _take(buf, pos, struct.calcsize(fmt), path, what)
    return struct.unpack("<" + fmt, raw)[0], pos


def _string(buf: bytes, pos: int, path: Path, what: str) -> tuple[str, int]:
    size, pos = _uint(buf, pos, "H", path, what)
    raw, pos = _take(buf, pos, size, path, what)
    return raw.rstrip(b"\0").decode("utf-8"), pos


def _array(raw: bytes, dtype_id: int, dims: list[int], path: Path, name: str) -> np.ndarray:
    """Decode one variable; bfloat16 (which numpy lacks) comes back as float32."""
    if dtype_id not in CT2_DTYPES:
        raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
    kind = CT2_DTYPES[dtype_id]
    np_dtype = np.dtype("<u2" if kind == "bfloat16" else kind).newbyteorder("<")
    if len(raw) != int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize:
        raise ValueError(f"{path}: variable {name!r} has {len(raw)} bytes, dims {dims} need "
                         f"{int(np.prod(dims, dtype=np.int64)) * np_dtype.itemsize} ({kind})")
    arr = np.frombuffer(raw, dtype=np_dtype).reshape(dims)
    if kind == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin -> (spec name, {variable name: array}), aliases resolved.

    Arrays may be read-only views of the file's bytes (copy before editing); bfloat16 comes back
    as float32. Raises ValueError naming the file when it is truncated, has trailing bytes or uses
    an unsupported format version.
    """
    path = Path(path)
    buf = path.read_bytes()
    version, pos = _uint(buf, 0, "I", path, "format version")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 format version {version} not supported "
                         f"(supported: {list(SUPPORTED_VERSIONS)})")
    spec, pos = _string(buf, pos, path, "spec name")
    _, pos = _uint(buf, pos, "I", path, "spec revision")
    count, pos = _uint(buf, pos, "I", path, "variable count")
    variables: dict[str, np.ndarray] = {}
    for i in range(count):
        name, pos = _string(buf, pos, path, f"name of variable {i}")
        rank, pos = _uint(buf, pos, "B", path, f"rank of {name!r}")
        dims = []
        for _ in range(rank):
            dim, pos = _uint(buf, pos, "I", path, f"dims of {name!r}")
            dims.append(dim)
        dtype_id, pos = _uint(buf, pos, "B", path, f"dtype of {name!r}")
        nbytes, pos = _uint(buf, pos, "I", path, f"byte count of {name!r}")
        raw, pos = _take(buf, pos, nbytes, path, f"data of {name!r}")
        variables[name] = _array(raw, dtype_id, dims, path, name)
    n_alias, pos = _uint(buf, pos, "I", path, "alias count")
    for _ in range(n_alias):
        alias, pos = _string(buf, pos, path, "alias name")
        target, pos = _string(buf, pos, path, f"target of alias {alias!r}")
        if target not in variables:
            raise ValueError(f"{path}: alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} unexpected bytes after the aliases")
    return spec, variables


# --------------------------------------------------------------------------- weights and config

def _scalar(ct2: dict[str, np.ndarray], name: str) -> int:
    return int(ct2[name].reshape(()))


def _layers(ct2: dict[str, np.ndarray], side: str) -> int:
    return len({m.group(1) for k in ct2 if (m := re.match(rf"{side}/layer_(\d+)/", k))})


def _map_block(ct2: dict, src: str, dst: str, table: dict[str, str], hf: dict) -> None:
    """Copy ``src/{linear_i,layer_norm}/{weight,bias,gamma,beta}`` to ``dst.{table[...]}.{...}``."""
    for key, arr in ct2.items():
        parts = key[len(src) + 1:].split("/") if key.startswith(src + "/") else []
        if len(parts) == 2 and parts[0] in table and parts[1] in PARAM:
            hf[f"{dst}.{table[parts[0]]}.{PARAM[parts[1]]}"] = arr


def _fused(ct2: dict, src: str, dst: str, names: list[str], hf: dict) -> None:
    """Split a fused projection (rows ``[q; k; v]`` or ``[k; v]``) into ``dst.{name}.{weight,bias}``.

    Whisper's key projection has no bias: ct2 stores zeros there, which are checked and dropped.
    """
    weights, biases = np.split(ct2[src + "/weight"], len(names)), np.split(ct2[src + "/bias"], len(names))
    for name, weight, bias in zip(names, weights, biases):
        hf[f"{dst}.{name}.weight"] = weight
        if name != "k_proj":
            hf[f"{dst}.{name}.bias"] = bias
        elif np.any(bias != 0):
            raise ValueError(f"{src}/bias: the key part is not zero, but transformers' Whisper has no key bias")


def hf_state_dict(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename and split ct2 Whisper variables into transformers names (without ``proj_out``, tied)."""
    hf: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            hf[f"model.encoder.{conv}.{p}"] = ct2[f"encoder/{conv}/{p}"]
    for side in ("encoder", "decoder"):
        hf[f"model.{side}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        hf[f"model.{side}.layer_norm.weight"] = ct2[f"{side}/layer_norm/gamma"]
        hf[f"model.{side}.layer_norm.bias"] = ct2[f"{side}/layer_norm/beta"]
        for i in range(_layers(ct2, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            _fused(ct2, f"{src}/self_attention/linear_0", f"{dst}.self_attn", ["q_proj", "k_proj", "v_proj"], hf)
            _map_block(ct2, f"{src}/self_attention", dst, SELF_ATTN, hf)
            _map_block(ct2, f"{src}/ffn", dst, FFN, hf)
            if side == "decoder":
                _fused(ct2, f"{src}/attention/linear_1", f"{dst}.encoder_attn", ["k_proj", "v_proj"], hf)
                _map_block(ct2, f"{src}/attention", dst, CROSS_ATTN, hf)
    hf["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    return hf


def whisper_config(ct2: dict[str, np.ndarray], ids: dict[str, int]):
    """A ``WhisperConfig`` whose sizes are read from the ct2 variables."""
    from transformers import WhisperConfig

    if "decoder/activation" in ct2 and _scalar(ct2, "decoder/activation") != GELU:
        raise ValueError("only GELU Whisper checkpoints are supported")
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    return WhisperConfig(
        vocab_size=int(vocab), d_model=int(d_model), num_mel_bins=int(ct2["encoder/conv1/weight"].shape[1]),
        encoder_layers=_layers(ct2, "encoder"), decoder_layers=_layers(ct2, "decoder"),
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=int(ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(ct2["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(ct2["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", tie_word_embeddings=True,
        bos_token_id=ids["eot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"],
        decoder_start_token_id=ids["sot"],
    )


def generation_config(config, ids: dict[str, int], ct2_config: dict):
    """The generation config transformers expects for an English-only Whisper (as on the Hub)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=ids["sot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"],
        pad_token_id=ids["eot"], max_length=config.max_target_positions,
        no_timestamps_token_id=ids["notimestamps"], prev_sot_token_id=ids["startofprev"],
        is_multilingual=False, return_timestamps=False, max_initial_timestamp_index=50,
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [ids["eot"]]),
        alignment_heads=ct2_config.get("alignment_heads"),
    )


# --------------------------------------------------------------------------- tokenizer

def build_tokenizer(src_dir: Path):
    """A ``WhisperTokenizer`` from the ct2 ``tokenizer.json`` plus ``vocabulary.txt``.

    The ct2 ``tokenizer.json`` ends at ``<|notimestamps|>`` (50362); the 1,501 timestamp tokens
    ``<|0.00|>`` ... ``<|30.00|>`` exist only in ``vocabulary.txt`` and are added here as ordinary
    (non-special) tokens, as on the Hub. The ``<|...|>`` tokens after ``<|endoftext|>`` are
    registered as extra special tokens so that ``all_special_ids[-1]`` is ``<|notimestamps|>``,
    which transformers uses to find the first timestamp id.
    """
    from transformers import AddedToken, WhisperTokenizer

    src_dir = Path(src_dir)
    added = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    eot = "<|endoftext|>"
    extra = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t["special"] and t["content"] != eot]
    tok = WhisperTokenizer(tokenizer_file=str(src_dir / "tokenizer.json"), extra_special_tokens=extra,
                           pad_token=eot, model_max_length=448)
    vocab_file = src_dir / "vocabulary.txt"
    if vocab_file.exists():
        vocab = vocab_file.read_text(encoding="utf-8").splitlines()
        mismatch = [i for i in range(min(len(tok), len(vocab))) if tok.convert_ids_to_tokens(i) != vocab[i]]
        if mismatch:
            raise ValueError(f"{vocab_file} disagrees with tokenizer.json at ids {mismatch[:5]}")
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in vocab[len(tok):]])
    return tok


def _token_ids(tok) -> dict[str, int]:
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>",
             "notimestamps": "<|notimestamps|>", "startofprev": "<|startofprev|>"}
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in names.items()}
    missing = [names[k] for k, v in ids.items() if v is None or v == tok.unk_token_id and k != "eot"]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids


# --------------------------------------------------------------------------- conversion

def _load_weights(model, hf: dict[str, np.ndarray]) -> None:
    """Copy ``hf`` into ``model``; fail listing every missing or unexpected parameter name."""
    expected = set(model.state_dict()) - {"proj_out.weight"}
    missing, unexpected = sorted(expected - set(hf)), sorted(set(hf) - expected)
    if missing or unexpected:
        raise ValueError(f"ct2 -> transformers mapping incomplete: missing {missing}, unexpected {unexpected}")
    state = model.state_dict()
    bad = [k for k, v in hf.items() if tuple(v.shape) != tuple(state[k].shape)]
    if bad:
        raise ValueError("shape mismatch: " + ", ".join(f"{k} {hf[k].shape} vs {tuple(state[k].shape)}" for k in bad))
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in hf.items()}
    model.load_state_dict(tensors, strict=False)
    model.tie_weights()


def convert(src_dir: Path, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Read model.bin/config.json/tokenizer.json from src_dir and write to out_dir a folder that
    WhisperForConditionalGeneration.from_pretrained(out_dir) and WhisperProcessor.from_pretrained(out_dir)
    load offline: config.json, model.safetensors, generation_config.json, tokenizer files,
    preprocessor_config.json. Returns out_dir. Write atomically: build in a temp sibling dir, then rename.

    An existing ``out_dir`` is replaced. Explained in the pretrained models section of 00_welcome.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    spec, ct2 = read_ct2(src_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{src_dir / 'model.bin'}: spec {spec!r} is not WhisperSpec")
    bad_dtypes = sorted({str(v.dtype) for v in ct2.values() if v.ndim >= 2 and v.dtype.kind != "f"})
    if bad_dtypes:
        raise ValueError(f"{src_dir / 'model.bin'}: quantized weights ({bad_dtypes}) are not supported; "
                         "convert a float16/float32 checkpoint")
    cfg_file = src_dir / "config.json"
    ct2_config = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    tok = build_tokenizer(src_dir)
    ids = _token_ids(tok)
    config = whisper_config(ct2, ids)
    if len(tok) != config.vocab_size:
        raise ValueError(f"tokenizer has {len(tok)} tokens, the model {config.vocab_size}")
    model = WhisperForConditionalGeneration(config).eval()
    _load_weights(model, hf_state_dict(ct2))
    model.generation_config = generation_config(config, ids, ct2_config)
    model.to(dtype)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tok)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        processor.feature_extractor.save_pretrained(tmp)  # preprocessor_config.json, for AutoFeatureExtractor
        for f in tmp.iterdir():
            f.chmod(0o644)  # safetensors are written 0600; the folder may be a shared cache
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
