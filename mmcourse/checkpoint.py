"""Checkpoint files for ``fit``: write, verify, find the newest good one (notebook 07_finetuning_recipe).

What a checkpoint holds, and why resume is exact, is told in :mod:`mmcourse.train`
(notebook 07, §Checkpoint and resume); this module only does the file I/O and the RNG states.

Files on disk, per checkpoint ``step-00000040``: ``.safetensors`` (model weights),
``.pt`` (the rest; loadable with ``torch.load(..., weights_only=True)``), ``.best.safetensors``
(best weights, when early stopping tracks a metric) and ``.json``, a manifest with the sha256 of
each file. Every file is written to a temporary name, fsynced and renamed
(:func:`mmcourse.fileio.atomic_path`), the manifest last, so a crash never leaves a checkpoint
that looks complete but is not; a file damaged later fails its sha256 check and
:func:`load_latest_checkpoint` falls back to the previous checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from mmcourse.fileio import atomic_path, sha256_file

CKPT_FORMAT = "mmcourse-checkpoint-1"


class CheckpointWarning(UserWarning):
    """A checkpoint on disk failed verification and was skipped."""


# --------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) RNG states as ``weights_only``-loadable plain types."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(py_state), gauss],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- training state

def training_state(history: dict[str, Any], optimizer: Any, scheduler: Any, scaler: Any,
                   seed: int | None) -> dict[str, Any]:
    """The ``.pt`` part of a checkpoint: history (a dict), optimizer / scheduler / scaler state, RNGs, seed."""
    return {"history": history, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "seed": seed}


def restore_training_state(ckpt: dict[str, Any], model: torch.nn.Module, optimizer: Any, scheduler: Any,
                           scaler: Any) -> dict[str, Any]:
    """Load a :func:`verify_checkpoint` result into the objects; returns its ``.pt`` state.

    The RNG states are *not* restored here: ``fit`` does that once the data loader is back at
    the saved position (see :mod:`mmcourse.train`).
    """
    state = ckpt["state"]
    load_model(model, str(ckpt["model_path"]))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return state


# --------------------------------------------------------------------------- files

def _atomic_write(path: Path, write: Callable[[Path], None]) -> dict[str, Any]:
    """``write(tmp)``, fsync, rename onto ``path``; returns the manifest entry for the file."""
    with atomic_path(path, fsync=True) as tmp:
        write(tmp)
        entry = {"name": path.name, "sha256": sha256_file(tmp), "bytes": tmp.stat().st_size}
    return entry


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Manifests in ``checkpoint_dir``, newest (highest step) first."""
    return sorted(Path(checkpoint_dir).glob("step-*.json"), reverse=True)


def save_checkpoint(checkpoint_dir: str | os.PathLike, model: torch.nn.Module, state: dict[str, Any],
                    best_state: dict[str, torch.Tensor] | None = None, keep_last: int = 3) -> Path:
    """Write one checkpoint atomically (weights, ``state`` as .pt, best weights, manifest last).

    ``state`` must hold ``history`` (a :class:`mmcourse.train.History` as dict) plus anything
    ``torch.load(weights_only=True)`` accepts. Keeps the newest ``keep_last`` checkpoints.
    Returns the manifest path (notebook 07, §Checkpoint and resume).
    """
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    hist = state["history"]
    stem = f"step-{hist['step']:08d}"
    manifest = directory / f"{stem}.json"
    manifest.unlink(missing_ok=True)  # an older checkpoint of the same step is now invalid
    # force_contiguous: weights stored channels_last (fit(..., channels_last=True)) are written in NCHW order
    files = {"model": _atomic_write(directory / f"{stem}.safetensors",
                                    lambda p: save_model(model, str(p), force_contiguous=True)),
             "state": _atomic_write(directory / f"{stem}.pt", lambda p: torch.save(state, p))}
    if best_state is not None:
        best = {k: v.contiguous() for k, v in best_state.items()}
        files["best"] = _atomic_write(directory / f"{stem}.best.safetensors", lambda p: save_file(best, str(p)))
    info = {"format": CKPT_FORMAT, "step": hist["step"], "epoch": hist["epoch"], "batch": hist["batch"],
            "files": files}
    _atomic_write(manifest, lambda p: p.write_text(json.dumps(info, indent=1)))
    for old in list_checkpoints(directory)[max(1, keep_last):]:
        _remove_checkpoint(old)
    return manifest


def _remove_checkpoint(manifest: Path) -> None:
    manifest.unlink(missing_ok=True)
    stem = manifest.name[: -len(".json")]
    for suffix in (".safetensors", ".pt", ".best.safetensors"):
        (manifest.parent / f"{stem}{suffix}").unlink(missing_ok=True)


def verify_checkpoint(manifest: str | os.PathLike) -> dict[str, Any]:
    """Check sha256 of every file and load the .pt with ``weights_only=True``.

    Returns ``{"manifest", "model_path", "state", "best_state"}``; raises ``ValueError`` (or a
    load error) when anything is missing, damaged or truncated.
    """
    manifest = Path(manifest)
    info = json.loads(manifest.read_text())
    if info.get("format") != CKPT_FORMAT:
        raise ValueError(f"unknown checkpoint format {info.get('format')!r}")
    paths = {}
    for role, entry in info["files"].items():
        path = manifest.parent / entry["name"]
        if not path.is_file():
            raise ValueError(f"{entry['name']} is missing")
        if sha256_file(path) != entry["sha256"]:
            raise ValueError(f"sha256 mismatch for {entry['name']} (damaged or truncated)")
        paths[role] = path
    state = torch.load(paths["state"], map_location="cpu", weights_only=True)
    best = load_file(str(paths["best"])) if "best" in paths else None
    return {"manifest": info, "model_path": paths["model"], "state": state, "best_state": best}


def load_latest_checkpoint(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The newest checkpoint that verifies, warning about each damaged one skipped; None if none."""
    manifests = list_checkpoints(checkpoint_dir) if Path(checkpoint_dir).is_dir() else []
    for manifest in manifests:
        try:
            return verify_checkpoint(manifest)
        except Exception as err:  # damaged manifest, sha mismatch, unreadable .pt ...
            warnings.warn(f"checkpoint {manifest.name} is unusable ({err}); trying the previous one",
                          CheckpointWarning, stacklevel=2)
    if manifests:
        warnings.warn(f"no usable checkpoint in {checkpoint_dir}; starting from scratch",
                      CheckpointWarning, stacklevel=2)
    return None
