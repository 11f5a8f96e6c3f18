"""Profiles and paths (explained in notebook 00_welcome, section "Profiles").

A *profile* picks how much work a notebook does: ``smoke`` runs on a laptop CPU in about a
minute, ``full`` reaches the published numbers on one GPU. Notebooks set ``PROFILE`` in their
papermill ``parameters`` cell; the environment variable ``MMCOURSE_PROFILE`` overrides it.
"""
from __future__ import annotations

import os
from pathlib import Path

PROFILES: dict[str, str] = {
    "smoke": "a few minutes on a laptop CPU: small subsets, few steps",
    "full": "the real experiment, for one GPU (runs on CPU too, slowly)",
}


def profile(default: str = "smoke") -> str:
    """Return the active profile: ``MMCOURSE_PROFILE`` if set, else ``default``."""
    name = os.environ.get("MMCOURSE_PROFILE", "").strip() or default
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} "
                         "(set in the notebook's parameters cell or MMCOURSE_PROFILE)")
    return name


def pick(smoke, full, profile_name: str | None = None):
    """Return ``smoke`` or ``full`` depending on the active profile (notebook 00)."""
    return full if (profile_name or profile()) == "full" else smoke


def _env_path(var: str, default: Path | None) -> Path | None:
    value = os.environ.get(var, "").strip()
    if value:
        return Path(value).expanduser().resolve()
    return default


def cache_dir() -> Path:
    """``MMCOURSE_CACHE_DIR``, default ``~/.cache/mmcourse``."""
    return _env_path("MMCOURSE_CACHE_DIR", Path.home() / ".cache" / "mmcourse")


def model_dir() -> Path:
    """Where pretrained-model artifacts live: ``MMCOURSE_MODEL_DIR``, default ``<cache>/models``."""
    return _env_path("MMCOURSE_MODEL_DIR", cache_dir() / "models")


def data_dir() -> Path:
    """Where real datasets live: ``MMCOURSE_DATA_DIR``, default ``<cache>/data``.

    The folder layout is the one ``data_scripts/`` produces (see the README, "Data").
    """
    return _env_path("MMCOURSE_DATA_DIR", cache_dir() / "data")


def describe() -> dict[str, str]:
    """The active profile and paths, for ``mmcourse doctor`` and notebook 00."""
    return {
        "profile": profile(),
        "cache_dir": str(cache_dir()),
        "model_dir": str(model_dir()),
        "data_dir": str(data_dir()),
    }
