"""mmcourse.config and mmcourse.runtime."""
from pathlib import Path

import pytest
import torch

from mmcourse import config, runtime


def test_profile_default_and_override(monkeypatch):
    monkeypatch.delenv("MMCOURSE_PROFILE", raising=False)
    assert config.profile() == "smoke"
    assert config.profile("full") == "full"
    monkeypatch.setenv("MMCOURSE_PROFILE", "full")
    assert config.profile("smoke") == "full"  # the environment wins over the notebook
    assert config.pick(1, 2) == 2


def test_bad_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MMCOURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="unknown profile 'fast'.*smoke"):
        config.profile()


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MMCOURSE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.delenv("MMCOURSE_MODEL_DIR", raising=False)
    monkeypatch.delenv("MMCOURSE_DATA_DIR", raising=False)
    assert config.cache_dir() == tmp_path / "c"
    assert config.model_dir() == tmp_path / "c" / "models"
    assert config.data_dir() == tmp_path / "c" / "data"
    monkeypatch.setenv("MMCOURSE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MMCOURSE_MODEL_DIR", "~/m")
    assert config.data_dir() == tmp_path / "d"
    assert config.model_dir() == Path("~/m").expanduser()


def test_default_cache_is_under_home(monkeypatch):
    monkeypatch.delenv("MMCOURSE_CACHE_DIR", raising=False)
    assert config.cache_dir() == Path.home() / ".cache" / "mmcourse"


def test_device_selection(monkeypatch):
    monkeypatch.delenv("MMCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    dev = runtime.device()
    if expected:
        assert dev.type == expected
    assert runtime.device("cpu").type == "cpu"
    monkeypatch.setenv("MMCOURSE_DEVICE", "cpu")
    assert runtime.device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.device("cuda")


def test_seed_everything_repeats_python_numpy_torch():
    import random

    import numpy as np

    def draw():
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    runtime.seed_everything(123)
    first = draw()
    runtime.seed_everything(123)
    assert draw() == first
    runtime.seed_everything(124)
    assert draw() != first


def test_autocast_dtype():
    assert runtime.autocast_dtype("cpu") is None
    if torch.cuda.is_available():
        assert runtime.autocast_dtype("cuda") in (torch.bfloat16, torch.float16)


def test_memory_report_grows_with_allocation():
    before = runtime.memory_report("cpu")["peak_rss_mb"]
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    block += 1
    after = runtime.memory_report("cpu")["peak_rss_mb"]
    assert after >= before and after > 64
    assert set(runtime.describe()) >= {"python", "torch", "device", "autocast_dtype"}
