"""Device, seeding, precision and memory (notebook 00_welcome, "Your machine").

Notebooks never call ``.cuda()``: they ask :func:`device` and move tensors there, so the same
code runs on a laptop CPU, an Apple GPU or an NVIDIA GPU.
"""
from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
from collections.abc import Iterator

import numpy as np
import torch


def device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or ``MMCOURSE_DEVICE``) forces one, e.g. ``"cpu"`` to debug.
    """
    choice = prefer or os.environ.get("MMCOURSE_DEVICE", "").strip()
    if choice:
        dev = torch.device(choice)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} requested but CUDA is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0, deterministic: bool = False) -> int:
    """Seed Python, NumPy and torch (all devices) in one call.

    Seeding changes no global mode. ``deterministic=True`` additionally switches on
    deterministic kernels for the rest of the process (:func:`set_deterministic`), which a
    notebook kernel may want; code that needs them only for a while uses :func:`deterministic`.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        set_deterministic(True)
    return seed


def deterministic_state() -> dict[str, object]:
    """The settings :func:`set_deterministic` changes, to compare or restore them."""
    return {"algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def set_deterministic(enabled: bool = True) -> dict[str, object]:
    """Ask for deterministic kernels (bitwise-repeatable runs; slower on GPU) or stop asking.

    Process-wide: it returns the previous :func:`deterministic_state`, so a caller can put it
    back with :func:`restore_deterministic`. Ops without a deterministic version only warn.
    """
    before = deterministic_state()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else before["cudnn_benchmark"]
    return before


def restore_deterministic(state: dict[str, object]) -> None:
    """Put back settings saved by :func:`deterministic_state` / :func:`set_deterministic`."""
    torch.use_deterministic_algorithms(state["algorithms"], warn_only=state["warn_only"])
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    if state["CUBLAS_WORKSPACE_CONFIG"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = state["CUBLAS_WORKSPACE_CONFIG"]


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels inside the ``with`` block only; the previous settings come back after it."""
    before = set_deterministic(enabled)
    try:
        yield
    finally:
        restore_deterministic(before)


def autocast_dtype(dev: torch.device | str | None = None) -> torch.dtype | None:
    """The mixed-precision dtype for ``torch.autocast`` on ``dev``.

    bf16 where the GPU supports it, fp16 on other GPUs (needs a grad scaler), ``None`` on CPU
    and MPS (train in float32 there).
    """
    dev = torch.device(dev) if dev is not None else device()
    if dev.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def memory_report(dev: torch.device | str | None = None) -> dict[str, float]:
    """Memory now: process peak RSS, and allocated/peak/total GPU memory on CUDA (MiB)."""
    dev = torch.device(dev) if dev is not None else device()
    report = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if dev.type == "cuda":
        report["cuda_allocated_mb"] = round(torch.cuda.memory_allocated(dev) / 2**20, 1)
        report["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        report["cuda_total_mb"] = round(torch.cuda.get_device_properties(dev).total_memory / 2**20, 1)
    return report


def describe() -> dict[str, str]:
    """Python, torch, CUDA and device facts for ``mmcourse doctor``."""
    dev = device()
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_build": str(torch.version.cuda),
        "cuda_available": str(torch.cuda.is_available()),
        "device": str(dev),
        "autocast_dtype": str(autocast_dtype(dev)),
        "threads": str(torch.get_num_threads()),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info
