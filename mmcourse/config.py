"""Profiles and paths (explained in notebook 00_welcome, section "Profiles").

A *profile* picks how much work a notebook does: ``smoke`` runs on a laptop CPU in about a
minute, ``full`` reaches the published numbers on one GPU. Who decides, most explicit first:

* ``mmcourse run --profile X`` (``make course PROFILE=X``): the argument wins over everything;
  the runner gives the kernel ``MMCOURSE_PROFILE=X`` and the parameter ``PROFILE = "X"``
  (:func:`resolve_profile`, which also says where the choice came from);
* inside a notebook, ``config.profile(PROFILE)``: the environment variable ``MMCOURSE_PROFILE``
  overrides the ``parameters`` cell, and a line says so when the two differ (:func:`profile`).
"""
from __future__ import annotations

import os
from pathlib import Path

PROFILES: dict[str, str] = {
    "smoke": "a few minutes on a laptop CPU: small subsets, few steps",
    "full": "the real experiment, for one GPU (runs on CPU too, slowly)",
}
PROFILE_ENV = "MMCOURSE_PROFILE"
DEFAULT_PROFILE = "smoke"


def _checked(name: str, where: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} ({where})")
    return name


def profile_from_env() -> str:
    """``MMCOURSE_PROFILE`` as set (stripped), ``""`` when unset."""
    return os.environ.get(PROFILE_ENV, "").strip()


def profile(default: str | None = None) -> str:
    """Return the active profile inside a notebook: ``MMCOURSE_PROFILE`` if set, else ``default``.

    ``default`` is the notebook's ``PROFILE`` (its parameters cell), ``smoke`` when omitted. When
    both are given and differ, one line says which profile is used and why.
    """
    env = profile_from_env()
    name = env or default or DEFAULT_PROFILE
    _checked(name, f"set in {PROFILE_ENV}" if env else "set in the notebook's parameters cell")
    if env and default and default != env:
        print(f"profile {env!r}: {PROFILE_ENV}={env} wins over PROFILE = {default!r} "
              "from the parameters cell")
    return name


def resolve_profile(explicit: str | None = None) -> tuple[str, str]:
    """The profile for ``mmcourse run`` and where it came from: ``(name, source)``.

    An explicit argument (``--profile``) wins over ``MMCOURSE_PROFILE``, which wins over the
    default ``smoke``; ``source`` is ``"argument"``, ``"environment"`` or ``"default"``.
    """
    if explicit:
        return _checked(explicit.strip(), "--profile"), "argument"
    env = profile_from_env()
    if env:
        return _checked(env, f"set in {PROFILE_ENV}"), "environment"
    return DEFAULT_PROFILE, "default"


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
